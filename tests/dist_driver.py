"""The distributed tests' scenarios, run by every process of one launch (``torchrun ... -m
tests.dist_driver OUT CACHE_DIR``; one process runs ``runs`` in the test's own process). Each launch
costs seconds of start-up on a 2-core machine, so one launch runs every scenario, all through the
suite's own code (the loop, the layouts, the comparison); tests/test_distributed.py reads what they write.

``runs``: the first step's loss and gradients of each arm under FSDP2, gathered whole; a smoke
comparison (JEPA) under FSDP2 (and, with several processes, under DDP); the VLM trained under FSDP2
with a cooldown branch per milestone.
With several processes, then: a run folder whose lock another process holds (refused on every rank);
two JEPA runs stopped after 160 samples (last resume point: step 4), one resumed at once, the other
(``cross_<P>``) left for the one-process run, which resumes it; each rank given another run folder
(the start-up check ends both with one clear error); last, a collective one rank joins late under a
short ``train.process_group_timeout_min``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from experiments.cli import setup_logging
from experiments.sample_efficiency import run_comparison
from shared import processes
from shared.config import ConfigError, load_config
from shared.data.loader import TrainPlan
from shared.data.order import TrainOrder
from shared.pipeline import prepare
from shared.precision import resolve_runtime
from shared.training.loop import build_trainee, new_accelerator, step_gradients, train_arm
from shared.training.parallel import layout_of, micro_layout
from tests.conftest import SMOKE

# fp32: layouts compared to the last bits; 512 samples: enough for CIDEr to be above 0 at smoke size
FP32 = ["train.mixed_precision=no", "train.milestones=[512]", "eval.max_clips=24"]


def smoke(cache_dir: str, *overrides: str):
    return load_config(SMOKE, [f"cache_dir={cache_dir}", *FP32, *overrides])


def first_step(prepared, arm_name: str, parallel: str, run_dir: Path) -> dict:
    """Loss and whole gradients (every process calls: gathering a shard is a collective) of step 1."""
    accelerator = new_accelerator(prepared.cfg, run_dir, prepared.runtime.precision.resolved)
    layout = layout_of(parallel)
    with layout.process_group(accelerator):
        return _first_step(prepared, arm_name, accelerator, layout)


def _first_step(prepared, arm_name: str, accelerator, layout) -> dict:
    cfg, t = prepared.cfg, prepared.cfg.train
    trainee = build_trainee(prepared, arm_name, accelerator, layout)
    micro, accum = micro_layout(t.effective_batch, t.micro_batch, accelerator.num_processes)
    train = prepared.dataset.split("train")
    plan = TrainPlan(TrainOrder(cfg.seed, train.caption_counts()), accelerator.process_index, t.effective_batch,
                     micro, accum)
    batches = [prepared.batch("train", *plan.clips(k), device=accelerator.device) for k in range(accum)]
    trainee.model.train()
    loss = step_gradients(accelerator, trainee, batches, trainee.couples(accelerator, accum))
    grads = {}
    for name, p in trainee.model.named_parameters():
        if p.grad is not None:
            g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
            grads[name.removeprefix("module.")] = g.detach().cpu().clone()
    return {"loss": accelerator.reduce(loss, reduction="mean").item(), "grads": grads}


def runs(out: Path, cache_dir: str) -> None:
    rank, world = processes.layout()
    cfg = smoke(cache_dir, "train.parallel=fsdp2")
    prepared = prepare(cfg, resolve_runtime(cfg), splits=("train",))
    for arm in ("jepa", "vlm"):
        step = first_step(prepared, arm, "fsdp2", out / f"scratch_{world}")
        if rank == 0:
            torch.save(step, out / f"grads_{arm}_{world}.pt")
    for parallel in ("fsdp2", "ddp") if world > 1 else ("fsdp2",):
        run_comparison(smoke(cache_dir, f"train.parallel={parallel}", "arms=[jepa]"), out / f"{parallel}_{world}")
    # the VLM with cooldown branches: a branch point saved and restored through the sharded state
    vlm = dataclasses.replace(prepared, cfg=smoke(cache_dir, "train.parallel=fsdp2", "train.milestones=[128,256]",
                                                  "train.milestone_cooldown=0.5"))
    train_arm(vlm, "vlm", out / f"vlm_{world}", progress=False)
    if world > 1:  # stopped after 160 samples: resumed here, and (cross) by a launch of one process
        refused_everywhere(prepared, out)
        for name in ("part", "cross"):
            train_arm(prepared, "jepa", out / f"{name}_{world}", stop_at_samples=160, progress=False)
        train_arm(prepared, "jepa", out / f"part_{world}", progress=False)
        failures(prepared, out)  # last: the timeout leaves the group unusable
    else:
        for folder in sorted(out.glob("cross_*")):
            train_arm(prepared, "jepa", folder, progress=False)


def refused_everywhere(prepared, out: Path) -> None:
    """A run folder another live process holds: rank 0 alone takes the lock, and its refusal must end
    every rank (the others would otherwise wait in the first collective)."""
    rank, _ = processes.layout()
    folder = out / "locked"
    if rank == 0:
        folder.mkdir(exist_ok=True)
        (folder / ".lock").write_text(f"{os.getppid()} {socket.gethostname()}")  # torchrun's agent: alive
    try:
        train_arm(prepared, "jepa", folder, progress=False)
        error = None
    except ConfigError as e:
        error = str(e)
    (out / f"locked_{rank}.json").write_text(json.dumps({"error": error}))


def failures(prepared, out: Path) -> None:
    """Each rank is given its own run folder (as two nodes with separate disks would see): the start-up
    check must end both with a clear error; then, on the same (still healthy) group, the timeout."""
    rank, _ = processes.layout()
    start = time.monotonic()
    try:
        train_arm(prepared, "jepa", out / f"node{rank}", progress=False)
        error = None
    except ConfigError as e:
        error = str(e)
    (out / f"folder_{rank}.json").write_text(json.dumps({"error": error, "waited_s": time.monotonic() - start}))
    timeout(out)


def timeout(out: Path) -> None:
    """Rank 1 joins the barrier 4 s late; the group (made before the config was read, as in the
    commands) must give up after the configured 0.03 min, not the 10-minute torch default."""
    rank, _ = processes.layout()
    processes.configure(load_config(SMOKE, ["train.process_group_timeout_min=0.03"]))
    start = time.monotonic()
    if rank == 1:
        time.sleep(4)
    try:
        dist.barrier()
        result = {"error": None}
    except RuntimeError as e:
        result = {"error": str(e)[:500]}
    result["waited_s"] = time.monotonic() - start
    (out / f"timeout_{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    out, cache = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    setup_logging()
    runs(out, cache)
    if dist.is_initialized():  # the group timed out on purpose: leave without tearing it down
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
