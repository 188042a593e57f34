import json
import subprocess
import sys

import pytest

from experiments.cli import COMMANDS, main
from tests.conftest import ROOT, SMOKE


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "experiments", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("describe", "train", "sample-efficiency", "latency", "selective-decoding", "validate", "data-bench", "report"):
        assert cmd in out.stdout


def test_describe_json_contract(capsys, cache_dir):
    assert main(["describe", "--config", str(SMOKE), "--json", f"cache_dir={cache_dir}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["arms"]) == {"jepa", "vlm"}
    for counts in info["arms"].values():
        assert set(counts) >= {"total_params", "trainable_params"}
        assert 0 < counts["trainable_params"] <= counts["total_params"]
    assert info["config"]["train"]["effective_batch"] == 32


@pytest.mark.parametrize("args, message", [
    (["describe", "--config", str(SMOKE), "train.nope=1"], "unknown config key train.nope"),
    (["describe", "--config", "missing.yaml"], "config file not found"),
    (["train", "--config", str(SMOKE), "--arm", "nosuch", "--out", "x"], "unknown arm 'nosuch'"),
    (["train", "--config", str(SMOKE), "--arm", "jepa", "--out", "x", "data.source=manifest",
      "data.manifest.path=/nonexistent/m.jsonl"], "/nonexistent/m.jsonl: manifest not found"),
])
def test_bad_input_is_a_clear_error(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m experiments {command}") and len(out.splitlines()) > 5
