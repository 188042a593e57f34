"""The JEPA arm's config section (``jepa:`` in a preset): the text side (shared/text_side/config.py,
whose classes are re-exported here) and the predictor's keys."""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.text_side.config import TextSideConfig, YDecoderConfig, YEncoderConfig  # noqa: F401


@dataclass
class JepaConfig(TextSideConfig):
    layers: list[int] = field(default_factory=lambda: [3, 6])  # [start, end) of the base LM's layers
    causal: bool = False  # True restores the causal mask (the paper's ablation)
    max_query_tokens: int = 512
