"""Timing harness: per-stage inference latency, training throughput and FLOPs (matmul peaks: shared/precision.py).

Clocks: ``time.perf_counter`` around each stage, with ``torch.cuda.synchronize`` before every
reading on CUDA so asynchronous kernels are not mistaken for fast ones. All numbers that are
compared are measured in the same process, one after another (two workloads at once on 2 cores
slow each other down ~10x).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=float)
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)),
            "p95_ms": float(np.percentile(a, 95)), "n": int(len(a))}


def time_stages(stages: list[tuple[str, Callable[[Any], Any]]], first_input: Any, repeats: int, warmup: int,
                device: torch.device) -> tuple[dict[str, list[float]], list[float]]:
    """Run the stages in order ``warmup + repeats`` times; per-stage and end-to-end times in ms."""
    per_stage: dict[str, list[float]] = {name: [] for name, _ in stages}
    totals: list[float] = []
    for i in range(warmup + repeats):
        x = first_input
        synchronize(device)
        start = time.perf_counter()
        times = {}
        for name, fn in stages:
            t0 = time.perf_counter()
            x = fn(x)
            synchronize(device)
            times[name] = (time.perf_counter() - t0) * 1000
        total = (time.perf_counter() - start) * 1000
        if i >= warmup:
            for name, ms in times.items():
                per_stage[name].append(ms)
            totals.append(total)
    return per_stage, totals


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call (matmuls and convolutions, forward and backward), by torch's counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
