"""``train.deterministic`` sets torch's switches both ways and is recorded; ``compare-runs`` states what
it promises for the device the runs were made on, and compares with the tolerance that follows."""
import json
import shutil

import pytest
import torch

from experiments.cli import main
from experiments.compare_runs import NONDETERMINISTIC_ATOL, promise
from shared.config import load_config, training_view, to_dict
from shared.training import determinism
from tests.test_compare_runs import make_output


@pytest.fixture
def restore_torch_switches(monkeypatch):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    monkeypatch.delenv(determinism.CUBLAS_ENV, raising=False)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
     torch.backends.cudnn.benchmark) = saved[:4]
    torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def test_deterministic_turns_tf32_off_and_deterministic_kernels_on_and_back(restore_torch_switches):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as new_accelerator sets it
    state = determinism.apply(True, "cuda")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert state["cublas_workspace_config"] == determinism.CUBLAS_DETERMINISTIC
    assert state["deterministic"] and "bit-identical" in state["promise"]
    state = determinism.apply(False, "cuda")  # a second run in the same process gets the default back
    assert torch.backends.cuda.matmul.allow_tf32 and not torch.are_deterministic_algorithms_enabled()
    assert not state["deterministic"] and "differ" in state["promise"]
    assert "bit-identical" in determinism.apply(False, "cpu")["promise"]


def test_a_launch_environments_cublas_setting_is_kept(restore_torch_switches, monkeypatch):
    monkeypatch.setenv(determinism.CUBLAS_ENV, ":16:8")
    assert determinism.apply(True)["cublas_workspace_config"] == ":16:8"


def test_the_key_is_typed_and_not_part_of_what_an_arm_trains():
    cfg = load_config("experiments/configs/smoke.yaml", ["train.deterministic=true"])
    assert cfg.train.deterministic is True and load_config("experiments/configs/smoke.yaml").train.deterministic is False
    assert "train.deterministic" not in training_view(to_dict(cfg), "jepa")  # a resume may switch it, as the layout


def _record(root, device, name, deterministic):
    for path in root.rglob("seed0"):
        hw = {"device": device, "cpu": "AMD EPYC" if device == "cpu" else "x", "cuda_name": name}
        (path / "precision.json").write_text(json.dumps({"hardware": hw, "determinism": {"deterministic": deterministic}}))


def _pair(tmp_path, device, name, deterministic, gap):
    a = make_output(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    rows = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    (b / "metrics.jsonl").write_text("".join(json.dumps(dict(r, top5=r["top5"] + gap)) + "\n" for r in rows))
    for root in (a, b):
        _record(root, device, name, deterministic)
    return a, b


@pytest.mark.parametrize("device,name,deterministic,expected", [
    ("cpu", None, False, "CPU (AMD EPYC): bit-identical expected"),
    ("cuda", "NVIDIA H100 80GB HBM3", True, "CUDA (NVIDIA H100 80GB HBM3) with train.deterministic=true: bit-identical"),
])
def test_where_reruns_are_bit_identical_any_difference_fails(tmp_path, capsys, device, name, deterministic, expected):
    a, b = _pair(tmp_path, device, name, deterministic, gap=1e-6)
    assert promise(a, b) == (promise(a, b)[0], 0.0) and promise(a, b)[0].startswith(expected)
    assert main(["compare-runs", str(a), str(b)]) == 1
    assert f"device: {expected}" in capsys.readouterr().out


def test_cuda_without_determinism_compares_within_the_stated_tolerance(tmp_path, capsys):
    a, b = _pair(tmp_path, "cuda", "NVIDIA H100 80GB HBM3", False, gap=NONDETERMINISTIC_ATOL / 2)
    assert main(["compare-runs", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "train.deterministic=false: small differences expected" in out and f"tolerance {NONDETERMINISTIC_ATOL:g}" in out
    assert main(["compare-runs", str(a), str(b), "--atol", "0"]) == 1  # an explicit tolerance wins
    a, b = _pair(tmp_path / "far", "cuda", "NVIDIA H100 80GB HBM3", False, gap=2 * NONDETERMINISTIC_ATOL)
    assert main(["compare-runs", str(a), str(b)]) == 1


def test_runs_on_two_devices_promise_no_identity(tmp_path):
    a, b = _pair(tmp_path, "cpu", None, False, gap=0.0)
    _record(b, "cuda", "NVIDIA H200", True)
    text, atol = promise(a, b)
    assert text.startswith("runs on different devices (cpu AMD EPYC vs cuda NVIDIA H200)") and atol == NONDETERMINISTIC_ATOL


def test_a_run_records_what_it_applied_and_two_cpu_reruns_compare_identical(smoke_prepared, tmp_path, capsys,
                                                                            restore_torch_switches):
    import dataclasses

    from shared.training.loop import train_arm
    from tests.conftest import SMOKE

    cfg = load_config(SMOKE, [f"cache_dir={smoke_prepared.cfg.cache_dir}", "plugins=[tests.toy_arm]",
                              "train.mixed_precision=no", "train.deterministic=true"])
    for run in ("a", "b"):
        train_arm(dataclasses.replace(smoke_prepared, cfg=cfg), "toy", tmp_path / run / "seed0", stop_at_samples=64,
                  progress=False)
    info = json.loads((tmp_path / "a" / "seed0" / "precision.json").read_text())
    assert info["determinism"]["deterministic"] and not info["determinism"]["tf32_matmul"]
    assert torch.are_deterministic_algorithms_enabled()  # in force while the run trained, until the next run sets it
    assert main(["compare-runs", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "device: CPU (" in capsys.readouterr().out
    assert [r["deterministic"] for r in info["layouts"]] == [True]

    # resumed without it (the key may change on resume): the run as a whole no longer promises it
    loose = load_config(SMOKE, [f"cache_dir={smoke_prepared.cfg.cache_dir}", "plugins=[tests.toy_arm]",
                                "train.mixed_precision=no", "train.deterministic=false"])
    train_arm(dataclasses.replace(smoke_prepared, cfg=loose), "toy", tmp_path / "b" / "seed0", stop_at_samples=128,
              progress=False)
    info = json.loads((tmp_path / "b" / "seed0" / "precision.json").read_text())
    assert [(r["deterministic"], r["from_step"] > 0) for r in info["layouts"]] == [(True, False), (False, True)]
    assert not info["determinism"]["deterministic"] and info["determinism"]["from_step"] == info["layouts"][1]["from_step"]
