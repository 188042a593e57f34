"""The guides' code blocks run as written: docs/adding_an_arm.md, in order, from a scratch folder."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BLOCK = re.compile(r"^```(python|bash)( file=(\S+))?\n(.*?)^```$", re.S | re.M)


def blocks(path):
    return [(m.group(1), m.group(3), m.group(4)) for m in BLOCK.finditer(path.read_text())]


def test_the_guide_has_code_to_run():
    kinds = [(kind, bool(name)) for kind, name, _ in blocks(ROOT / "docs" / "adding_an_arm.md")]
    assert ("python", True) in kinds and ("bash", False) in kinds and ("python", False) in kinds


def test_the_guides_code_names_no_path_inside_the_repository():
    """Its commands run from a researcher's own folder: presets by name, arms by their own files."""
    code = "\n".join(c for _, _, c in blocks(ROOT / "docs" / "adding_an_arm.md"))
    for inside in ("experiments/", "examples/", "shared/", "tests/"):
        assert inside not in code, f"the guide's code names {inside}, a path inside the repository"
    assert "class RegressArm(EmbeddingArm)" in code and "resolve_with" not in code


@pytest.mark.slow
@pytest.mark.timeout(900)  # two comparisons (four arms, then a variant) and two arms' unit checks
def test_adding_an_arm_guide_runs(tmp_path, monkeypatch):
    # a folder outside the repository, nothing of it linked in: the guide's presets are named, not paths
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    monkeypatch.setenv("HOME", str(tmp_path))  # the default cache_dir (~/.cache) stays in the scratch folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python` started in that folder has it
    namespace: dict = {}
    for i, (kind, name, code) in enumerate(blocks(ROOT / "docs" / "adding_an_arm.md")):
        where = f"docs/adding_an_arm.md block {i + 1} ({kind}{' ' + name if name else ''})"
        if name:
            (tmp_path / name).write_text(code)
        elif kind == "bash":
            done = subprocess.run(["bash", "-ec", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=240)
            assert done.returncode == 0, f"{where} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        else:
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the guide's own code
