"""A trivial arm for testing the shared machinery (loaded through ``plugins: [tests.toy_arm]``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shared.arm import Arm, ArmContext, Batch, register_arm


@dataclass
class ToyConfig:
    width: int = 8
    nan_after: int = 0  # > 0: the loss turns NaN after this many forward passes (tests divergence handling)


@register_arm("toy", ToyConfig)
class ToyArm(Arm):
    """Mean-pooled visual tokens -> linear map; regresses a hash of the target caption."""

    seen_ids: list = []  # every batch's clip ids, to check the data order from outside

    def __init__(self, ctx: ArmContext):
        super().__init__(ctx)
        self.proj = nn.Linear(ctx.visual_dim, self.arm_cfg.width, device=ctx.device)
        self.calls = 0

    def _target(self, captions: list[str]) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(sum(map(ord, c)) % 9973) for c in captions]
        return torch.stack([torch.randn(self.arm_cfg.width, generator=g) for g in gens])

    def loss(self, batch: Batch) -> torch.Tensor:
        ToyArm.seen_ids.append(list(batch.ids))
        pred = self.proj(batch.visual.mean(1))
        self.calls += 1
        if self.arm_cfg.nan_after and self.calls > self.arm_cfg.nan_after:
            pred = pred * float("nan")
        return ((pred - self._target(batch.captions).to(pred.device)) ** 2).mean()
