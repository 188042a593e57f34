"""Which floating-point precision runs where: decided here, once, from the hardware.

``train.mixed_precision: auto`` (the default) resolves to

- ``bf16`` on a CUDA GPU that supports bf16;
- ``bf16`` on a CPU with native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 matrix
  products run ~4x faster than fp32;
- ``no`` (fp32) on every other CPU: without those instructions bf16 is emulated and runs ~100x
  slower than fp32 (measured on an AVX2-only EPYC: 0.9 vs 104 GFLOP/s).

Explicit ``no``/``bf16``/``fp16`` are kept as given; ``encoder.dtype: auto`` follows the same
decision. This module is the only one that reads ``train.mixed_precision``: a command resolves it
once (:func:`resolve_runtime`, one hardware probe) into a frozen :class:`Runtime` that the pipeline,
the loop, the evaluators, the arms and the benchmarks receive. Every autocast of the suite comes
from :func:`autocast`, which takes the resolved precision and never probes.

Capping oneDNN below bf16 (``ONEDNN_MAX_CPU_ISA=AVX2``, oneDNN's own switch) makes torch's bf16
matrix products emulated again; the probe honours it, which also lets one machine reproduce an
AVX2-only CPU's behaviour.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
from dataclasses import dataclass

import torch

from shared import processes
from shared.config import ConfigError
from shared.training import determinism

log = logging.getLogger(__name__)

AUTO = "auto"
DTYPE_OF = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that exclude its native bf16 kernels
ONEDNN_NO_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@dataclass(frozen=True)
class Hardware:
    """What the precision decision looks at."""

    device: str  # "cpu" or "cuda"
    cpu: str  # model name
    avx512_bf16: bool
    amx: bool
    onednn_isa_cap: str | None  # ONEDNN_MAX_CPU_ISA, when set
    cuda_name: str | None = None
    cuda_bf16: bool = False

    @property
    def cpu_native_bf16(self) -> bool:
        capped = (self.onednn_isa_cap or "").upper() in ONEDNN_NO_BF16
        return (self.avx512_bf16 or self.amx) and not capped


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe(device: str | torch.device | None = None) -> Hardware:
    """The capability flags of this process's device (CUDA if available, else the CPU)."""
    dev = torch.device(device) if device is not None else default_device()
    cuda_name, cuda_bf16 = None, False
    if dev.type == "cuda":
        cuda_name = torch.cuda.get_device_name(dev)
        cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    return Hardware(device=dev.type, cpu=cpu_name(), avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()),
                    amx=bool(torch.cpu._is_amx_tile_supported()), onednn_isa_cap=os.environ.get("ONEDNN_MAX_CPU_ISA"),
                    cuda_name=cuda_name, cuda_bf16=cuda_bf16)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def decide(requested: str, hw: Hardware) -> tuple[str, str]:
    """(resolved precision, why) for ``requested`` in auto/no/bf16/fp16 on ``hw``."""
    if requested != AUTO:
        if requested == "fp16" and hw.device != "cuda":
            raise ConfigError("train.mixed_precision=fp16 needs a CUDA device; on a CPU use auto, no or bf16")
        return requested, "set explicitly"
    if hw.device == "cuda":
        if hw.cuda_bf16:
            return "bf16", f"CUDA device {hw.cuda_name} supports bf16"
        return "no", f"CUDA device {hw.cuda_name} has no bf16"
    flags = f"AVX512-BF16 {'yes' if hw.avx512_bf16 else 'no'}, AMX {'yes' if hw.amx else 'no'}"
    if hw.cpu_native_bf16:
        return "bf16", f"CPU with native bf16 ({flags})"
    if hw.avx512_bf16 or hw.amx:
        return "no", f"CPU bf16 disabled by ONEDNN_MAX_CPU_ISA={hw.onednn_isa_cap} ({flags})"
    return "no", f"CPU without native bf16 ({flags}): bf16 would be emulated, ~100x slower than fp32"


@dataclass(frozen=True)
class Precision:
    """The training precision as decided for one device: what every autocast, the encoder's dtype,
    the Y-decoder's fits and the run's records use. Built once per command by :func:`resolve`."""

    requested: str  # train.mixed_precision as configured: auto, no, bf16 or fp16
    resolved: str  # what runs: no (fp32), bf16 or fp16
    reason: str
    encoder_dtype: torch.dtype  # encoder.dtype resolved (auto = the training precision's dtype)
    device_type: str  # the device it was decided for: "cpu" or "cuda"
    hardware: Hardware

    @property
    def dtype(self) -> torch.dtype:
        return DTYPE_OF[self.resolved]

    def autocast(self):
        return autocast(self.resolved, self.device_type)

    def matches(self, cfg) -> bool:
        """Does ``cfg`` ask for this decision (as configured, or already resolved to it)?"""
        return (cfg.train.mixed_precision in (self.requested, self.resolved)
                and cfg.encoder.dtype in (AUTO, dtype_name(self.encoder_dtype)))

    def for_config(self, cfg) -> "Precision":
        """This decision, or, for a config asking for another precision (a test, an ablation built
        from one pipeline), the decision for it on the same hardware: the flags probed once, no new probe."""
        return self if self.matches(cfg) else _decide(cfg, self.hardware, self.device_type)

    def apply(self, cfg):
        """``cfg`` with ``train.mixed_precision`` and ``encoder.dtype`` as they run here: what a run
        records in its config.yaml, what the control audit compares and what a resume checks."""
        p = self.for_config(cfg)
        enc = dtype_name(p.encoder_dtype)
        if cfg.train.mixed_precision == p.resolved and cfg.encoder.dtype == enc:
            return cfg
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mixed_precision=p.resolved),
                                   encoder=dataclasses.replace(cfg.encoder, dtype=enc))

    def record(self) -> dict:
        """What was asked, what runs and why, with the flags behind it (precision.json, summary.json)."""
        return {"requested": self.requested, "resolved": self.resolved, "reason": self.reason,
                "encoder_dtype": dtype_name(self.encoder_dtype),
                "hardware": dataclasses.asdict(self.hardware) | {"cpu_native_bf16": self.hardware.cpu_native_bf16}}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def resolve(cfg, device: str | torch.device | None = None) -> Precision:
    """The precision of ``cfg`` on ``device`` (default: CUDA if available, else the CPU): one hardware probe."""
    dev = torch.device(device) if device is not None else default_device()
    return _decide(cfg, probe(dev), dev.type)


def _decide(cfg, hw: Hardware, device_type: str) -> Precision:
    """The one reading of ``train.mixed_precision`` and ``encoder.dtype``."""
    resolved, why = decide(cfg.train.mixed_precision, hw)
    enc = DTYPE_OF[resolved] if cfg.encoder.dtype == AUTO else DTYPE_NAMES[cfg.encoder.dtype]
    return Precision(cfg.train.mixed_precision, resolved, why, enc, device_type, hw)


def autocast(resolved: str, device_type: str):
    """The autocast context for a resolved precision (``no``, ``bf16``, ``fp16``); never probes. fp32
    disables autocast explicitly, so it also holds inside an outer bf16 region."""
    if resolved not in DTYPE_OF:
        raise ValueError(f"autocast({resolved!r}): takes a resolved precision ({', '.join(DTYPE_OF)}); "
                         "resolve train.mixed_precision first (shared/precision.py: resolve_runtime)")
    if resolved == "no":
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=DTYPE_OF[resolved])


@dataclass(frozen=True)
class Runtime:
    """Where and how a command runs, decided once at its start and handed to whatever computes: the
    device and process layout of this process and the precision decided for that device. The
    pipeline, the training loop, the evaluators, the arms (their Y-decoder fits), the benchmarks
    and latency read it; none of them probes or re-decides."""

    device: torch.device
    rank: int
    world: int  # number of processes
    precision: Precision

    def autocast(self):
        return self.precision.autocast()

    def for_config(self, cfg) -> "Runtime":
        """This runtime with the precision ``cfg`` asks for (``Precision.for_config``: no new probe)."""
        p = self.precision.for_config(cfg)
        return self if p is self.precision else dataclasses.replace(self, precision=p)


def resolve_runtime(cfg, device: str | torch.device | None = None) -> Runtime:
    """The command's runtime: this process's place among the processes (shared/processes.py, with the
    config's process-group timeout) and the precision for its device, logged once."""
    processes.configure(cfg)
    determinism.prepare_environment(cfg.train.deterministic)  # before anything touches CUDA
    dev = torch.device(device) if device is not None else processes.device()
    rank, world = processes.layout()
    p = resolve(cfg, dev)
    log.info("precision: %s (train.mixed_precision=%s: %s); encoder %s", p.resolved, p.requested, p.reason,
             dtype_name(p.encoder_dtype))
    return Runtime(dev, rank, world, p)


def describe(record: dict) -> str:
    """One line for a report: what ran, what was asked and why (from a ``Precision.record()``)."""
    return f"{record['resolved']} (train.mixed_precision={record['requested']}: {record['reason']})"


def recorded(cfg: dict) -> str:
    """The precision a run's resolved config (its config.yaml, as a dict) trained under."""
    return cfg["train"]["mixed_precision"]


def check_recorded(path, old: dict, new: dict, diff: list[str], evaluating: bool, why: str) -> list[str]:
    """The precision's part of the check that a run folder's config (``old``, a training view) is this
    one's (``new``): evaluating may read checkpoints under another precision (warned); resuming under
    another one is refused, saying what to set. Returns the differences left to the caller."""
    key = "train.mixed_precision"
    if key not in diff:
        return diff
    if evaluating:
        log.warning("%s: trained under %s=%s, evaluated here under %s", path, key, old.get(key), new.get(key))
        return [k for k in diff if k not in (key, "encoder.dtype")]
    # the usual cause: auto resolves differently on this machine
    raise ConfigError(f"{path}: this run trained under {key}={old.get(key)} but would resume under "
                      f"{new.get(key)} (resolved on this machine: {why or 'set explicitly'}); resume with "
                      f"{key}={old.get(key)} or use a new --out directory")
