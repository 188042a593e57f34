"""The layout set-up of one run: an arm built, laid out over the processes (DDP or FSDP2,
shared/training/parallel.py), with its optimizer and schedule; the loop only steps it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from shared.pipeline import Pipeline
from shared.training.optim import build_optimizer
from shared.training.schedule import MilestonePlan, Schedule, build_scheduler
from shared.training.step import runs_gradcache


@dataclass
class Trainee:
    """An arm ready to train: laid out by its layout (DDP or FSDP2), with its optimizer and schedule."""

    model: torch.nn.Module  # the arm, laid out (DDP-wrapped or FSDP2-sharded)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    trainable_names: list[str]
    trainable_params: int
    layout: object  # shared/training/parallel.py: Ddp or Fsdp2

    def save(self, accelerator, folder: Path) -> None:
        self.layout.save(accelerator, folder, self.model, self.optimizer, self.scheduler)

    def load(self, accelerator, folder: Path) -> None:
        self.layout.load(accelerator, folder, self.model, self.optimizer, self.scheduler, self.trainable_names)

    def couples(self, accelerator, accum: int) -> bool:
        """Is the loss taken over the effective batch (GradCache)? (shared/training/step.py: runs_gradcache)"""
        return runs_gradcache(accelerator.unwrap_model(self.model).couples_batch(), accum, accelerator.num_processes)


def build_trainee(prepared: Pipeline, arm_name: str, accelerator, layout, schedule: Schedule | None = None) -> Trainee:
    """The arm of ``prepared``'s config laid out, with its optimizer and its schedule (default: the
    config's, from its first step)."""
    cfg, t = prepared.cfg, prepared.cfg.train
    schedule = schedule or Schedule(t, MilestonePlan.of(t))
    # each node's first process reads the weights first (into the node's page cache, or its hub cache
    # when downloading), then its other processes: a node reads them once, not once per GPU
    with accelerator.local_main_process_first():
        arm = prepared.seeded_arm(arm_name, accelerator.device)
    arm.prepare_training()
    if t.activation_checkpointing:
        arm.enable_activation_checkpointing()
    if t.compile:
        arm.compile_layers()
    names = [n for n, p in arm.named_parameters() if p.requires_grad]
    count = arm.parameter_counts()["trainable_params"]
    # the optimizer is built over the laid-out (under FSDP2: sharded) parameters
    model, optimizer = layout.prepare(accelerator, arm, lambda m: build_optimizer(m, cfg))
    scheduler = build_scheduler(optimizer, schedule)  # stepped once per optimizer step
    layout.register(accelerator, scheduler)
    return Trainee(model, optimizer, scheduler, names, count, layout)
