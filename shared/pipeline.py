"""From a config to everything an arm needs: clips, tokenizer, cached visual tokens, context."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from shared.arm import ArmContext
from shared.config import Config
from shared.data import Dataset, build_dataset
from shared.encoder import FrozenEncoder
from shared.feature_cache import CacheStats, FeatureCache
from shared.lm import load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    cfg: Config
    dataset: Dataset
    tokenizer: object
    visual_dim: int
    visual_tokens: int
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # split -> [N, L, D]
    cache_stats: dict[str, CacheStats] = field(default_factory=dict)

    def context(self, device: torch.device | str = "cpu") -> ArmContext:
        return ArmContext(
            cfg=self.cfg,
            tokenizer=self.tokenizer,
            visual_dim=self.visual_dim,
            visual_tokens=self.visual_tokens,
            device=torch.device(device),
            train_captions=[c for r in self.dataset.split("train") for c in r.captions],
        )


def tokenizer_corpus(cfg: Config, dataset: Dataset) -> list[str]:
    """Texts the captions tokenizer is trained on: training captions, label texts, the prompt."""
    return [c for r in dataset.split("train") for c in r.captions] + list(dataset.label_texts) + [cfg.data.query]


def prepare(cfg: Config, splits: tuple[str, ...] = ("train", "val", "test")) -> Prepared:
    dataset = build_dataset(cfg)
    tokenizer = load_tokenizer(cfg, tokenizer_corpus(cfg, dataset))
    encoder = FrozenEncoder.from_config(cfg)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    cache = FeatureCache(cfg.cache_path, encoder, cfg.data.frames)
    prepared = Prepared(cfg, dataset, tokenizer, encoder.dim, encoder.tokens_per_clip(cfg.data.frames))
    for split in splits:
        records = dataset.split(split)
        if records:
            prepared.features[split], prepared.cache_stats[split] = cache.features(records, desc=f"encode {split}")
    log.info("data %s: %s clips; %d visual tokens x %d dims per clip", dataset.name,
             {s: len(dataset.split(s)) for s in splits}, prepared.visual_tokens, prepared.visual_dim)
    return prepared
