"""The contrastive baseline: how much does the JEPA arm's 0.5B predictor add?

It keeps the JEPA arm's whole text side (the Y-encoder's target space, InfoNCE over the effective
batch, the Y-decoder that turns an embedding into a caption, classification by cosine) and replaces
the predictor, layers of a language model that read the visual tokens and the query, with pooled
visual tokens (each frame's mean, frames in order) through a small MLP. The query is ignored: there
is no language model to read it.

By default its text side is copied from the ``jepa`` section when the config is built
(``target_from: jepa``), so the two arms differ only in the predictor, and the copied values are what
the run's config.yaml records and the control audit compares.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from jepa_arm.arm import JepaArm
from jepa_arm.config import TextSideConfig
from shared.arm import ArmContext, register_arm
from shared.config import ConfigError

TEXT_SIDE = tuple(f.name for f in dataclasses.fields(TextSideConfig))  # taken from `target_from`


@dataclass
class ContrastiveConfig(TextSideConfig):
    # "frames": each frame's tokens averaged, frames kept in order (motion survives); "all": one mean
    pool: Literal["frames", "all"] = "frames"
    hidden_size: int = 512  # the MLP's width
    depth: int = 2  # hidden layers of the MLP
    # the arm section whose text side (TEXT_SIDE) this arm uses; null = this section's own values
    target_from: str | None = "jepa"

    def resolve_with(self, cfg, name: str) -> None:
        """Copy the text side from ``target_from`` (called by the config loader once every section is built)."""
        if self.target_from is None:
            return
        source = cfg.arm.get(self.target_from)
        if not isinstance(source, TextSideConfig) or source is self:
            raise ConfigError(f"{name}.target_from: {self.target_from!r} is not another JEPA-like arm section")
        defaults = ContrastiveConfig()
        for key in TEXT_SIDE:
            mine, theirs = getattr(self, key), getattr(source, key)
            if mine != getattr(defaults, key) and mine != theirs:
                raise ConfigError(f"{name}.{key}: set here and taken from {self.target_from}.{key} "
                                  f"(target_from); set {name}.target_from=null to choose it apart")
            setattr(self, key, dataclasses.replace(theirs) if dataclasses.is_dataclass(theirs) else theirs)


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
class ContrastiveArm(JepaArm):
    """Pooled visual tokens (per frame, in order) -> MLP -> the Y-encoder's space (InfoNCE); no language model."""

    capabilities = JepaArm.capabilities - {"export"}  # its predictor is no Llama to save as one

    def build_predictor(self, ctx: ArmContext, out_dim: int) -> nn.Module:
        c = self.arm_cfg
        frames = ctx.cfg.data.frames if c.pool == "frames" else 1
        return PooledMLP(ctx.visual_dim, frames, c.hidden_size, c.depth, out_dim, device=ctx.device)

    def predict(self, visual: torch.Tensor, queries: list[str]) -> torch.Tensor:
        return self.predictor(visual)

    def inference_stages(self, queries: list[str], max_new_tokens: int):
        self.prepare_evaluation()
        return [("query_embedding", lambda visual: visual),  # nothing reads the query
                ("encoder_predictor", self.predictor),
                ("decoder", lambda pred: self._decode(pred, max_new_tokens, exact=True))]
