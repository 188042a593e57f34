"""Gradient accumulation under FSDP2, run by each process of a 2-process gloo launch (``torchrun
--nproc_per_node 2 -m tests.accum_driver OUT CACHE_DIR``, or as 2 nodes of 1; tests/test_accumulation.py): the first
step of each arm with 2 micro-steps per process, once as the loop runs it (gradients reduced on the
last micro-step only) and once as it ran before (``accelerator.no_sync``, a no-op on the suite's own
FSDP2 modules), counting the reduce-scatters each makes."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from shared import processes
from shared.pipeline import prepare
from shared.precision import resolve_runtime
from shared.training import step as step_module
from tests import dist_driver
from tests.dist_driver import first_step, smoke

# 32 samples over 2 processes in micro-batches of 8: 2 micro-steps per process and step
ACCUM_2 = ["train.parallel=fsdp2", "train.effective_batch=32", "train.micro_batch=8"]


def _before(accelerator, model, i: int, n: int):
    """The step's sync rule before FSDP2 modules were told apart (what the comparison is against)."""
    return contextlib.nullcontext() if i == n - 1 else accelerator.no_sync(model)


@contextlib.contextmanager
def counting(calls: list, units: list):
    """Count FSDP2's reduce-scatters (``dist.reduce_scatter_single``, which it calls by module
    attribute) and note the number of FSDP2 units of the trainee built meanwhile."""
    reduce_scatter, build = dist.reduce_scatter_single, dist_driver.build_trainee

    def counted(*args, **kwargs):
        calls.append(1)
        return reduce_scatter(*args, **kwargs)

    def build_and_count(*args, **kwargs):
        trainee = build(*args, **kwargs)
        units.append(sum(isinstance(m, FSDPModule) for m in trainee.model.modules()))
        return trainee

    dist.reduce_scatter_single, dist_driver.build_trainee = counted, build_and_count
    try:
        yield
    finally:
        dist.reduce_scatter_single, dist_driver.build_trainee = reduce_scatter, build


def run(out: Path, cache_dir: str) -> None:
    rank, _ = processes.layout()
    cfg = smoke(cache_dir, *ACCUM_2)
    prepared = prepare(cfg, resolve_runtime(cfg), splits=("train",))
    results = {}
    for arm in ("jepa", "vlm"):  # GradCache's coupled step and the independent one
        for rule in ("last", "before"):
            calls, units = [], []
            sync = step_module._sync_last if rule == "last" else _before
            saved, step_module._sync_last = step_module._sync_last, sync
            try:
                with counting(calls, units):
                    result = first_step(prepared, arm, "fsdp2", out / "scratch")
            finally:
                step_module._sync_last = saved
            results[(arm, rule)] = {**result, "reduce_scatters": len(calls), "units": units[0]}
    if rank == 0:
        torch.save(results, out / "accumulation.pt")


if __name__ == "__main__":
    out, cache = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    run(out, cache)
