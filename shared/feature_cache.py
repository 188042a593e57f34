"""On-disk cache of frozen X-encoder outputs, shared by every arm and run.

Layout: ``<cache_dir>/features/<encoder fingerprint>-f<frames>-<sampling>/shard-*.safetensors``.
The folder is named by the encoder (weights, size, pooling, dtype) and the frame sampling; a row's
key is the clip's id plus its content fingerprint. So changing any of them is a cache miss, and
clips encoded before a crash stay cached (shards are written atomically).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.data import ClipRecord
from shared.encoder import FrozenEncoder
from shared.precision import DTYPE_NAMES
from shared.progress import progress_bar
from shared.tensor_store import ShardStore

log = logging.getLogger(__name__)
SAMPLING_VERSION = "uniform-centres-v1"
SHARD_CLIPS = 1024  # clips per shard: bounds what a crash can lose


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    encode_s: float = 0.0


def clip_key(rec: ClipRecord) -> str:
    return f"{rec.id}@{rec.fingerprint}"


class FeatureCache:
    def __init__(self, root: Path, encoder: FrozenEncoder, frames: int):
        self.encoder = encoder
        self.frames = frames
        folder = Path(root) / "features" / f"{encoder.fingerprint()}-f{frames}-{SAMPLING_VERSION}"
        self.store = ShardStore(folder, DTYPE_NAMES[encoder.cfg.cache_dtype])

    def __contains__(self, rec: ClipRecord) -> bool:
        return clip_key(rec) in self.store

    def features(self, records: list[ClipRecord], desc: str = "encoding") -> tuple[torch.Tensor, CacheStats]:
        """Visual tokens [N, L, D] for ``records`` in order, encoding (and caching) only the misses."""
        missing = [r for r in records if r not in self]
        stats = CacheStats(hits=len(records) - len(missing), misses=len(missing))
        if missing:
            t0 = time.perf_counter()
            size = self.encoder.cfg.image_size
            per_batch = max(1, self.encoder.cfg.batch_frames // self.frames)
            with progress_bar(total=len(missing), desc=desc, unit="clip", leave=False) as bar:
                for start in range(0, len(missing), SHARD_CLIPS):
                    shard = missing[start:start + SHARD_CLIPS]
                    parts = []
                    for i in range(0, len(shard), per_batch):
                        frames = np.stack([r.frames(self.frames, size) for r in shard[i:i + per_batch]])
                        parts.append(self.encoder.encode_clips(frames))
                        bar.update(len(frames))
                    self.store.add([clip_key(r) for r in shard], torch.cat(parts))
            stats.encode_s = time.perf_counter() - t0
            log.info("%s: encoded %d clips in %.1fs (%d were cached)", desc, stats.misses, stats.encode_s, stats.hits)
        return self.store.get([clip_key(r) for r in records]), stats
