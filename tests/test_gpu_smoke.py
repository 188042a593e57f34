"""The 2-GPU smoke (experiments/gpu_smoke.sh) run as the owner runs it, with the device kind `cpu`:
the same accelerate launches on 2 gloo processes, FSDP2, a kill and a resume, one evaluation, and
the script's own checks (docs/paper_scale.md has its expected output on GPUs)."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_gpu_smoke_passes_on_two_cpu_processes(tmp_path, cache_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_smoke.sh"), "cpu", str(tmp_path / "smoke"),
                           f"cache_dir={cache_dir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "killed; left in" in out and "FAIL" not in out
    assert out.count("\nok   ") == 6 and "compared: " in out and " 2 weights" in out
    assert out.rstrip().splitlines()[-1].startswith("PASS")


def test_the_gpu_smoke_refuses_an_unknown_device_kind():
    done = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_smoke.sh"), "tpu"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: experiments/gpu_smoke.sh gpu|cpu" in done.stderr
