"""The optimizer, built in one place for every step loop (training, throughput benchmarks), so a
benchmark times the optimizer that training runs. The learning-rate schedule: schedule.py."""
from __future__ import annotations

import torch


def build_optimizer(arm, cfg) -> torch.optim.Optimizer:
    """AdamW over the arm's parameter groups (its own lr multipliers), with the shared betas and decay."""
    t = cfg.train
    return torch.optim.AdamW(arm.param_groups(t.lr, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2))

