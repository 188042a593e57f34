"""Which floating-point precision runs where: decided here, once, from the hardware.

``train.mixed_precision: auto`` (the default) resolves to

- ``bf16`` on a CUDA GPU that supports bf16;
- ``bf16`` on a CPU with native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 matrix
  products run ~4x faster than fp32;
- ``no`` (fp32) on every other CPU: without those instructions bf16 is emulated and runs ~100x
  slower than fp32 (measured on an AVX2-only EPYC: 0.9 vs 104 GFLOP/s).

Explicit ``no``/``bf16``/``fp16`` are kept as given. Every autocast of the suite (training loop,
evaluation, latency, selective decoding, benchmarks, the Y-decoder's fit) comes from
:func:`autocast`, and ``encoder.dtype: auto`` follows the same decision.

Capping oneDNN below bf16 (``ONEDNN_MAX_CPU_ISA=AVX2``, oneDNN's own switch) makes torch's bf16
matrix products emulated again; the probe honours it, which also lets one machine reproduce an
AVX2-only CPU's behaviour.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from dataclasses import dataclass

import torch

from shared.config import ConfigError

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


def resolve(requested: str, device: str | torch.device | None = None) -> str:
    return decide(requested, probe(device))[0]


def compute_dtype(precision: str) -> torch.dtype:
    return DTYPE_OF[resolve(precision)]


def encoder_dtype(name: str, precision: str) -> torch.dtype:
    """``encoder.dtype``: an explicit dtype name, or ``auto`` = the training precision's dtype."""
    return compute_dtype(precision) if name == AUTO else DTYPE_NAMES[name]


def autocast(precision: str, device_type: str | None = None):
    """The autocast context for ``precision`` (``auto`` resolved here). fp32 disables autocast
    explicitly, so it also holds inside an outer bf16 region."""
    device_type = device_type or default_device().type
    resolved = resolve(precision, device_type)
    if resolved == "no":
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=DTYPE_OF[resolved])


def autocast_for(cfg):
    """The autocast a config's training precision asks for (training, evaluation and benchmarks alike)."""
    return autocast(cfg.train.mixed_precision)


def resolve_config(cfg, device: str | torch.device | None = None):
    """``cfg`` with ``train.mixed_precision`` and ``encoder.dtype`` resolved for ``device``: what a
    training run records in its config.yaml, what the control audit compares and what a resume checks."""
    resolved = resolve(cfg.train.mixed_precision, device)
    enc = cfg.encoder.dtype
    if enc == AUTO:
        enc = {v: k for k, v in DTYPE_NAMES.items()}[DTYPE_OF[resolved]]
    if resolved == cfg.train.mixed_precision and enc == cfg.encoder.dtype:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mixed_precision=resolved),
                               encoder=dataclasses.replace(cfg.encoder, dtype=enc))


def decision(cfg, device: str | torch.device | None = None) -> dict:
    """What was asked, what runs and why, with the flags behind it (saved beside every run)."""
    hw = probe(device)
    resolved, why = decide(cfg.train.mixed_precision, hw)
    return {"requested": cfg.train.mixed_precision, "resolved": resolved, "reason": why,
            "encoder_dtype": str(encoder_dtype(cfg.encoder.dtype, resolved)).replace("torch.", ""),
            "hardware": dataclasses.asdict(hw) | {"cpu_native_bf16": hw.cpu_native_bf16}}


def announce(cfg) -> dict:
    """Log the precision decision once, at the start of a command; returns it for the run's records."""
    d = decision(cfg)
    log.info("precision: %s (train.mixed_precision=%s: %s); encoder %s", d["resolved"], d["requested"], d["reason"],
             d["encoder_dtype"])
    return d


def matmul_gflops(dtype: torch.dtype, device: str | torch.device | None = None, max_n: int = 2048,
                  seconds: float = 1.0) -> float:
    """Measured dense matmul throughput (FLOP/s) for ``dtype``. The size grows from 256 while one
    product takes under 20 ms, so a dtype that is emulated (0.9 GFLOP/s) costs seconds, not minutes."""
    dev = torch.device(device) if device is not None else default_device()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    n = 256
    while True:
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)
        a @ b  # warm-up (kernel selection, allocation)
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        once = time.perf_counter() - t0
        if once > 0.02 or n >= max_n:
            break
        n *= 2
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        sync()
        if time.perf_counter() - start >= seconds:
            break
    return 2 * n**3 * count / (time.perf_counter() - start)
