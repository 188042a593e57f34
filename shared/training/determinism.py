"""How reproducible training is, set once per run (``train.deterministic``) and recorded with it.

On a CPU two runs of the same config on the same machine are already bit-identical: every kernel
the suite uses is deterministic there, whatever this setting. On CUDA they are not by default:

- TF32: the parts that run in fp32 (master weights, losses, norms outside autocast) use TF32 matrix
  products, with 10-bit mantissas; still deterministic, but not the fp32 a CPU computes;
- kernels with atomics (the embedding's and attention's backward, ``index_add``, ``scatter_add``)
  sum in an order that changes from run to run, so two runs part in the last bits at the first
  step and the gap grows with every step (over a long run, towards the spread between seeds).

``train.deterministic: true`` turns TF32 off (matmul and cuDNN), makes cuDNN choose fixed
algorithms (no benchmarking), sets ``CUBLAS_WORKSPACE_CONFIG`` (needed by cuBLAS for repeatable
results, and read when its first handle is made: :func:`prepare_environment` runs at the command's
start, before anything touches CUDA) and asks torch for its deterministic algorithms. Ops with no
deterministic kernel warn (``warn_only``) instead of ending the run: a paid GPU hour is not lost to
an op the check did not foresee; the warning names the op. Cost: fp32 parts at fp32 speed instead
of TF32 (up to ~8x slower matrix products there; most of a step runs in bf16 under autocast and is
not affected) and slower deterministic backward kernels: a few to ~15% of a step is the usual
figure, not measured here (no GPU); ``describe --gpu -c CONFIG train.deterministic=true`` next to the
default measures it on the card. Default off: paper-scale runs pay for throughput, and
``compare-runs`` states what it can promise for runs made either way (experiments/compare_runs.py).
"""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"  # one of the two values cuBLAS documents for reproducible results


def prepare_environment(deterministic: bool) -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` for a deterministic run, at the command's start: cuBLAS reads
    it when it creates a handle. A value set by the launch environment is kept."""
    if not deterministic or os.environ.get(CUBLAS_ENV):
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        log.warning("train.deterministic: CUDA was initialised before %s was set; export %s=%s in the launch "
                    "environment to be sure every cuBLAS handle uses it", CUBLAS_ENV, CUBLAS_ENV, CUBLAS_DETERMINISTIC)
    os.environ[CUBLAS_ENV] = CUBLAS_DETERMINISTIC


def apply(deterministic: bool, device: torch.device | str = "cpu") -> dict:
    """Set torch's process-wide switches for ``deterministic`` (both ways: several runs may share one
    process) and return what is in force, for the run's precision.json."""
    prepare_environment(deterministic)
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False  # benchmarking picks algorithms by timing: not repeatable
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    state = record(torch.device(device).type)
    log.info("train.deterministic=%s on %s: %s", deterministic, state["device"], state["promise"])
    return state


def record(device_type: str) -> dict:
    """The determinism switches as they are now, and what they promise on ``device_type``."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    return {"deterministic": deterministic, "device": device_type,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cublas_workspace_config": os.environ.get(CUBLAS_ENV),
            "promise": promise(device_type, deterministic)}


def promise(device_type: str, deterministic: bool) -> str:
    """What a rerun of the same config on the same kind of machine reproduces."""
    if device_type != "cuda":
        return "bit-identical reruns (CPU kernels are deterministic)"
    if deterministic:
        return "bit-identical reruns on the same GPU model and software (TF32 off, deterministic kernels)"
    return "reruns differ in the last bits from the first step on, growing with the steps (TF32, atomics)"
