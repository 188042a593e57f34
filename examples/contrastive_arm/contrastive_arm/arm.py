"""The contrastive baseline: how much does the JEPA arm's 0.5B predictor add?

An embedding arm (shared/embedding_arm.py): it keeps the whole text side of the base (the Y-encoder's
target space, InfoNCE over the effective batch, the Y-decoder that turns an embedding into a caption,
classification by cosine) and replaces the predictor, layers of a language model that read the
visual tokens and the query, with pooled visual tokens (each frame's mean, frames in order) through
a small MLP. The query is ignored: there is no language model to read it.

Its target space and Y-decoder come from the ``jepa`` section (``text_side_from``, the base's
default), so the two arms differ only in the predictor; config.yaml records the resolved values and
the control audit compares them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from shared.arm import ArmContext, register_arm
from shared.embedding_arm import EmbeddingArm, EmbeddingArmConfig


@dataclass
class ContrastiveConfig(EmbeddingArmConfig):
    # "frames": each frame's tokens averaged, frames kept in order (motion survives); "all": one mean
    pool: Literal["frames", "all"] = "frames"
    hidden_size: int = 512  # the MLP's width
    depth: int = 2  # hidden layers of the MLP


class PooledMLP(nn.Module):
    """Pooled visual tokens -> LayerNorm -> (Linear, GELU) x depth -> Linear into the target space.

    ``frames`` > 1 pools each frame's tokens and keeps the frames in order (concatenated), so motion,
    which many classes are made of, survives; ``frames`` = 1 averages every token of the clip."""

    def __init__(self, visual_dim: int, frames: int, hidden: int, depth: int, out_dim: int, device=None):
        super().__init__()
        self.frames = frames
        width = visual_dim * frames
        layers: list[nn.Module] = [nn.LayerNorm(width, device=device)]
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, device=device), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim, device=device))
        self.net = nn.Sequential(*layers)

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        b, tokens, dim = visual.shape
        return self.net(visual.reshape(b, self.frames, tokens // self.frames, dim).mean(dim=2).flatten(1))


@register_arm("contrastive", ContrastiveConfig)
class ContrastiveArm(EmbeddingArm):
    """Pooled visual tokens (per frame, in order) -> MLP -> the Y-encoder's space (InfoNCE); no language model."""

    def build_predictor(self, ctx: ArmContext, out_dim: int) -> nn.Module:
        c = self.arm_cfg
        frames = ctx.cfg.data.frames if c.pool == "frames" else 1
        return PooledMLP(ctx.visual_dim, frames, c.hidden_size, c.depth, out_dim, device=ctx.device)

    def predict(self, visual: torch.Tensor, queries: list[str]) -> torch.Tensor:
        return self.predictor(visual)  # nothing reads the query
