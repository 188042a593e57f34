"""This machine's dense matmul throughput: the peak that MFU divides by (``latency``, ``describe``)."""
from __future__ import annotations

import time

import torch

from shared.profiling.latency import synchronize


def matmul_gflops(dtype: torch.dtype, device: str | torch.device = "cpu", max_n: int = 2048,
                  seconds: float = 1.0, windows: int = 5) -> float:
    """Measured dense matmul throughput (FLOP/s) for ``dtype``: the best of ``windows`` windows that
    share ``seconds`` (a peak is a maximum; a window when another process held the cores would
    understate it, and an MFU divided by it could exceed 100%). The size grows from 256 while one
    product takes under 20 ms, so a dtype that is emulated (0.9 GFLOP/s) costs seconds, not minutes."""
    dev = torch.device(device)
    n = 256
    while True:
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)
        a @ b  # warm-up (kernel selection, allocation)
        synchronize(dev)
        t0 = time.perf_counter()
        a @ b
        synchronize(dev)
        once = time.perf_counter() - t0
        if once > 0.02 or n >= max_n:
            break
        n *= 2
    best = 0.0
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while True:
            a @ b
            count += 1
            synchronize(dev)
            if time.perf_counter() - start >= seconds / windows:
                break
        best = max(best, 2 * n**3 * count / (time.perf_counter() - start))
    return best
