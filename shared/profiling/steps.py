"""The step timer: training steps of one arm timed (and profiled) as the loop runs them.

Every benchmark of a training step (``latency``'s throughput and MFU, ``describe --hardware``'s
fp32-vs-bf16 check, ``data-bench``'s cache-vs-online comparison) goes through
:func:`time_train_steps`, which runs ``shared/training/step.py``'s ``one_batch_step``: the step that
training runs with one process and one micro-batch (autocast, loss, backward, clipping, AdamW).
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

from shared.arm import Arm, Batch
from shared.profiling.latency import synchronize
from shared.training.optim import build_optimizer
from shared.training.step import one_batch_step

# the operators that are matrix products (dense, batched, or through linear layers); a profile's share
# of self time spent in them says whether a step is compute-bound or elementwise and framework overhead
# (self time: a composite such as aten::linear counts only its own overhead, the product under it once)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def _stream(batch: Batch | Iterable[Batch]) -> Iterator[Batch]:
    if isinstance(batch, Batch):
        while True:
            yield batch
    yield from batch


class StepTimer:
    """One arm in training mode with its optimizer (kept across calls, as in a run), stepped on
    ``batch`` (the same one every step) or on the successive batches of an iterable (each taken
    inside the timed step, so a lazy pipeline's work is timed with it)."""

    def __init__(self, arm: Arm, precision: str | None = None):
        self.arm = arm.train()
        self.optimizer = build_optimizer(arm, arm.cfg)
        # explicit (fp32 against bf16 on one machine) or the run's, resolved once by the command
        self.precision = precision or arm.ctx.precision
        self.device = next(arm.parameters()).device

    def step(self, batch: Batch) -> torch.Tensor:
        return one_batch_step(self.arm, self.optimizer, batch, self.precision, self.arm.cfg.train.grad_clip)

    def time(self, batch: Batch | Iterable[Batch], n: int, warmup: int = 1) -> list[float]:
        """Seconds of each of ``n`` steps after ``warmup`` untimed ones (allocation, kernel selection)."""
        batches = _stream(batch)
        for _ in range(warmup):
            self.step(next(batches))
        times = []
        for _ in range(n):
            synchronize(self.device)
            t0 = time.perf_counter()
            self.step(next(batches))
            synchronize(self.device)
            times.append(time.perf_counter() - t0)
        return times

    def profile(self, batch: Batch, n: int = 2, top: int = 10) -> dict:
        """Where a step's time goes, by torch.profiler over ``n`` steps: the top operators by self time
        (CPU time; on CUDA the kernels' device time) and the share of it spent in matrix products."""
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(n):
                self.step(batch)
            synchronize(self.device)

        def self_us(e) -> float:
            return e.self_device_time_total if cuda else e.self_cpu_time_total

        events = sorted(prof.key_averages(), key=self_us, reverse=True)
        total = sum(map(self_us, events)) or 1
        matmul = sum(self_us(e) for e in events if e.key in MATMUL_OPS)
        return {"matmul_share": matmul / total, "clock": "device" if cuda else "cpu",
                "self_ms_per_step": total / 1000 / n,
                "top": [{"op": e.key, "self_ms_per_step": self_us(e) / 1000 / n, "share": self_us(e) / total}
                        for e in events[:top]]}


def time_train_steps(arm: Arm, batch: Batch | Iterable[Batch], n: int, precision: str | None = None,
                     warmup: int = 1) -> list[float]:
    """Seconds of each of ``n`` training steps of ``arm`` (after ``warmup`` untimed ones), on ``batch``
    or on the successive batches of an iterable; ``precision`` (resolved: no, bf16, fp16) overrides
    the run's."""
    return StepTimer(arm, precision).time(batch, n, warmup)
