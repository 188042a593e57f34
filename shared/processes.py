"""This process's place among the processes of a run (torchrun / accelerate launch), without an Accelerator.

Accelerate's ``PartialState`` is created once per process; on a CPU it joins the process group only
when told ``cpu=True``, so every part of the suite asks through here.
"""
from __future__ import annotations

import torch
from accelerate import PartialState


def state():
    return PartialState(cpu=not torch.cuda.is_available())


def layout() -> tuple[int, int]:
    """(rank, number of processes)."""
    s = state()
    return s.process_index, s.num_processes


def device() -> torch.device:
    return state().device


def is_main() -> bool:
    return layout()[0] == 0
