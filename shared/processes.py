"""This process's place among the processes of a run (torchrun / accelerate launch), without an Accelerator.

Accelerate's ``PartialState`` is created once per process; on a CPU it joins the process group only
when told ``cpu=True``, so every part of the suite asks through here. The process group is created
with ``train.process_group_timeout_min`` (``configure``; long by default: rank 0 alone fits, scores and
writes while the others wait in a collective). Decisions that depend on the filesystem are taken by
rank 0 and broadcast (``on_main``): with node-local disks or a lagging network-filesystem listing,
ranks deciding for themselves would load different resume points or wait in different collectives.
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from accelerate import PartialState

from shared.config import ConfigError, TrainConfig

T = TypeVar("T")
_timeout = timedelta(minutes=TrainConfig().process_group_timeout_min)  # until a command's config says


def configure(cfg) -> None:
    """Use ``cfg``'s process-group timeout: for the group created next, and for the group already
    running if there is one (so the value holds whichever part of the suite joined first)."""
    global _timeout
    _timeout = timedelta(minutes=cfg.train.process_group_timeout_min)
    if dist.is_available() and dist.is_initialized():
        dist.set_timeout(_timeout)


def state():
    return PartialState(cpu=not torch.cuda.is_available(), timeout=_timeout)


def layout() -> tuple[int, int]:
    """(rank, number of processes)."""
    s = state()
    return s.process_index, s.num_processes


def device() -> torch.device:
    return state().device


def on_main(decide: Callable[[], T]) -> T:
    """``decide()`` run by rank 0 alone, its result (or the error it raised) on every rank."""
    rank, world = layout()
    if world == 1:
        return decide()
    box: list = [None]
    if rank == 0:
        try:
            box[0] = ("ok", decide())
        except Exception as e:  # raised on every rank, not only here: the others would wait in a collective
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def check_shared_folder(folder: Path, wait_s: float = 5.0) -> None:
    """Every rank must see the folder rank 0 writes in: rank 0 writes a fresh token there, every rank
    reads it back (waiting up to ``wait_s`` for a network filesystem), and all raise the same clear
    error when one does not, instead of hanging later in a collective that expects its files."""
    rank, world = layout()
    if world == 1:
        return
    folder = Path(folder)

    def write_token() -> str:
        token = uuid.uuid4().hex
        (folder / ".ranks").mkdir(parents=True, exist_ok=True)
        for old in (folder / ".ranks").glob("token-*"):
            old.unlink(missing_ok=True)
        (folder / ".ranks" / f"token-{token}").write_text(token)  # a new name: no cached negative lookup
        return token

    token = on_main(write_token)
    path = folder / ".ranks" / f"token-{token}"
    deadline = time.monotonic() + wait_s
    while not (seen := _reads(path, token)) and time.monotonic() < deadline:
        time.sleep(0.25)
    everyone = [None] * world
    dist.all_gather_object(everyone, (seen, os.uname().nodename))
    blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(everyone) if not ok]
    if blind:
        raise ConfigError(f"{folder}: {', '.join(blind)} cannot read the token rank 0 wrote at {path} (waited "
                          f"{wait_s:g} s): every process must see the same --out folder; put it on a filesystem "
                          "all nodes share and pass the same path on every node")
    if rank == 0:  # every rank has read it (the gather above): the token has served
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()


def _reads(path: Path, token: str) -> bool:
    try:
        return path.read_text() == token
    except OSError:
        return False


@contextlib.contextmanager
def group_of_one(backend: str):
    """A process group of this process alone when none is running (FSDP2 at one process shards over a
    mesh of one, so one process runs the same code as many); ended on leaving if made here."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=_timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()
