"""Where a batch's visual tokens come from: the feature cache or the encoder on the device.

``encoder.features: cache`` (the embedded default): each split's features are computed once into
a ``FeatureStore`` (work split across processes by shard) and the loader workers read a batch's
rows from memory maps. ``online`` (paper scale): the loader workers decode frames and the frozen
encoder runs on the training device inside the step, under ``no_grad``, in the resolved precision.
Both give the same ``Batch.visual`` (up to the cache dtype's rounding; tested).
"""
from __future__ import annotations

import functools
import logging
import time

import torch

from shared import processes
from shared.arm import Batch
from shared.data.loader import ClipBatches, ClipReader, EvalPlan, batches, make_loader
from shared.data.sources import ClipSource
from shared.features.encoder import FrozenEncoder
from shared.features.store import (
    SHARD_CLIPS,
    CacheStats,
    FeatureStore,
    store_folder,
    write_meta,
)
from shared.precision import DTYPE_NAMES
from shared.progress import progress_bar

log = logging.getLogger(__name__)
SAMPLING_VERSION = "uniform-centres-v2"  # v2: video frames read by seeking to the nearest frame


class VisualFeatures:
    def __init__(self, cfg, encoder: FrozenEncoder):
        self.cfg, self.encoder, self.mode = cfg, encoder, cfg.encoder.features
        self.frames, self.size = cfg.data.frames, cfg.encoder.image_size
        self.stores: dict[str, FeatureStore] = {}
        self.stats: dict[str, CacheStats] = {}

    @functools.cached_property
    def key(self) -> str:
        """The features' identity (the cache's folder): hashes the encoder's weights, so it is computed
        when a cache is first used, never in online mode (nor on fake or meta tensors, which hold no values)."""
        return f"{self.encoder.fingerprint()}-f{self.frames}-{SAMPLING_VERSION}"

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def store(self, source: ClipSource) -> FeatureStore:
        if source.content_key not in self.stores:
            folder = store_folder(self.cfg.cache_path, self.key, source.content_key)
            self.stores[source.content_key] = FeatureStore(
                folder, len(source), self.encoder.tokens_per_clip(self.frames), self.encoder.dim,
                DTYPE_NAMES[self.cfg.encoder.cache_dtype])
        return self.stores[source.content_key]

    def reader(self, source: ClipSource) -> ClipReader:
        if self.mode == "cache":
            return ClipReader(store=self.store(source))
        return ClipReader(frames=self.frames, size=self.size)

    def ready(self, batch: Batch, device: torch.device | str) -> Batch:
        """The batch with ``visual`` on ``device`` (encoded there from ``frames`` in online mode)."""
        device = torch.device(device)
        if batch.visual is None:
            batch.visual = self.encoder.encode_clips(batch.frames.to(self.device, non_blocking=True)).to(device)
            batch.frames = None
        else:
            batch.visual = batch.visual.to(device, non_blocking=True)
        return batch

    # ---- the cache: encode what is missing, once ------------------------------------------
    def prepare(self, source: ClipSource, desc: str) -> CacheStats:
        """Cache mode: make every shard of ``source`` exist (this process encodes its share)."""
        stats = CacheStats(clips=len(source))
        if self.mode != "cache" or not len(source):
            return stats
        store = self.store(source)
        write_meta(store.folder, {"source": source.name, "clips": len(source), "encoder": self.key,
                                  "tokens": store.shape[0], "dim": store.shape[1], "dtype": self.cfg.encoder.cache_dtype})
        rank, world = processes.layout()
        todo = [k for k in store.missing() if k % world == rank]
        if todo:
            t0 = time.perf_counter()
            stats.encoded = sum(store.rows(k) for k in todo)
            self._encode_shards(source, store, todo, desc)
            stats.encode_s = time.perf_counter() - t0
            log.info("%s: encoded %d of %d clips in %.1fs", desc, stats.encoded, len(source), stats.encode_s)
        if world > 1:
            store.wait_complete()
        self.stats[desc] = stats
        return stats

    def _encode_shards(self, source: ClipSource, store: FeatureStore, shards: list[int], desc: str) -> None:
        per_batch = max(1, self.cfg.encoder.batch_frames // self.frames)
        reader = ClipReader(frames=self.frames, size=self.size)
        with progress_bar(total=sum(store.rows(k) for k in shards), desc=desc, unit="clip", leave=False) as bar:
            for k in shards:
                first = k * SHARD_CLIPS
                plan = EvalPlan(first, first + store.rows(k), per_batch)
                loader = make_loader(ClipBatches(source, plan, reader, self.cfg.data.query), 0, len(plan),
                                     self.cfg.data.workers, self.cfg.data.prefetch)
                parts = []
                for batch in batches(loader):
                    parts.append(self.encoder.encode_clips(batch.frames.to(self.device)).cpu())
                    bar.update(len(batch))
                store.write(k, torch.cat(parts))
