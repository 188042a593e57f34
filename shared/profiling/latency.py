"""Timing harness: per-stage inference latency, summarized the way the field reports it, and FLOPs.

Clocks: ``time.perf_counter`` around each stage, with ``torch.cuda.synchronize`` before every
reading on CUDA so asynchronous kernels are not mistaken for fast ones. Warm-up runs are made and
not recorded; every timed repeat's time is kept (``times_ms``) and summarized by its mean, standard
deviation and 50th, 90th and 99th percentiles (numpy's linear interpolation: with few repeats the
high percentiles sit near the slowest one, which the raw times show). All numbers that are compared
are measured in the same process, one after another (two workloads at once on 2 cores slow each
other down ~10x).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

PERCENTILES = (50, 90, 99)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(ms: list[float]) -> dict:
    """Mean, std (sample), p50/p90/p99 and the raw times (ms) of one measurement's repeats."""
    a = np.asarray(ms, dtype=float)
    out = {"mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if len(a) > 1 else 0.0}
    out |= {f"p{q}_ms": float(np.percentile(a, q)) for q in PERCENTILES}
    return out | {"n": int(len(a)), "times_ms": [float(x) for x in a]}


def ratio_spread(numerator: list[float], denominator: list[float]) -> dict:
    """A cost ratio with its spread: the ratio of the medians, and the 10th-90th percentiles of the
    ratios of the repeats taken together (paired by repeat index)."""
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    per = num / np.maximum(den, 1e-9)
    return {"ratio": float(np.median(num) / max(float(np.median(den)), 1e-9)),
            "p10": float(np.percentile(per, 10)), "p90": float(np.percentile(per, 90)), "n": int(len(per))}


def time_stages(stages: list[tuple[str, Callable[[Any], Any]]], first_input: Any, repeats: int, warmup: int,
                device: torch.device) -> tuple[dict[str, list[float]], list[float]]:
    """Run the stages in order ``warmup + repeats`` times; per-stage and end-to-end times in ms of the
    timed repeats."""
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
