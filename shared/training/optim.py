"""The optimizer and learning-rate schedule, built in one place for every step loop (training,
throughput benchmarks), so a benchmark times the optimizer that training runs."""
from __future__ import annotations

import math

import torch


def build_optimizer(arm, cfg) -> torch.optim.Optimizer:
    """AdamW over the arm's parameter groups (its own lr multipliers), with the shared betas and decay."""
    t = cfg.train
    return torch.optim.AdamW(arm.param_groups(t.lr, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2))


def lr_factor(step: int, total: int, cfg) -> float:
    """Warmup then cosine/linear decay to ``min_lr_ratio`` over the whole run (shared by all arms)."""
    t = cfg.train
    warmup = max(1, round(t.warmup_frac * total))
    if step < warmup:
        return (step + 1) / warmup
    if t.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if t.schedule == "cosine" else 1 - progress
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
