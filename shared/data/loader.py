"""DataLoaders over positions: training micro-batches and evaluation batches.

Item ``k`` of a loader is a pure function of ``k`` (the plan says which clips and captions), so a
resumed run restarts the sampler at its step and sees exactly the batches an uninterrupted run
would, whatever the number of worker processes. Workers read everything a batch needs: captions
from the source, and either the cached visual tokens (``encoder.features: cache``) or the decoded,
resized frames (``online``; the encoder then runs on the device in the training process).
A worker never raises on bad media: it returns the error, which the consumer raises as a clean
``MediaError``/``ManifestError`` naming the manifest line (no worker traceback in the message).
Workers hand batches over through shared memory (``/dev/shm``): a loader with workers checks at its
start that the batches in flight fit there (:func:`check_shared_memory`) and warns with what to do.
Workers start from a fork server (:func:`shared.data.workers.worker_context`), never as forks of the reading process.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from shared.arm import Batch
from shared.data.manifest import ManifestError
from shared.data.media import MediaError
from shared.data.order import TrainOrder, micro_batch_start
from shared.data.sources import ClipSource
from shared.data.workers import worker_context

log = logging.getLogger(__name__)
SHM = "/dev/shm"
_warned: set[tuple] = set()


@dataclass(frozen=True)
class TrainPlan:
    """Micro-batch ``k`` of process ``rank`` = micro-step ``k % accum`` of optimizer step ``k // accum``."""

    order: TrainOrder
    rank: int
    effective_batch: int
    micro_batch: int
    accum: int

    def clips(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        step, micro = divmod(k, self.accum)
        start = micro_batch_start(step, micro, self.rank, self.effective_batch, self.micro_batch, self.accum)
        return self.order.take(start, self.micro_batch)


@dataclass(frozen=True)
class EvalPlan:
    """Batch ``k`` = clips ``[first + k * size, ...)`` of a contiguous range (one process's share)."""

    first: int
    stop: int
    size: int

    def __len__(self) -> int:
        return -(-(self.stop - self.first) // self.size)

    def clips(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        start = self.first + k * self.size
        idx = np.arange(start, min(self.stop, start + self.size))
        return idx, np.zeros(len(idx), dtype=np.int64)


@dataclass(frozen=True)
class LoadFailure:
    kind: str
    message: str


class ClipReader:
    """Worker side of a feature mode: cached rows from a store, or frames for the online encoder."""

    def __init__(self, store=None, frames: int = 0, size: int = 0):
        self.store, self.frames, self.size = store, frames, size

    def __call__(self, source: ClipSource, clips: np.ndarray) -> dict[str, torch.Tensor]:
        if self.store is not None:
            return {"visual": self.store.read(clips)}
        return {"frames": torch.from_numpy(np.stack([source.frames(int(i), self.frames, self.size) for i in clips]))}

    def clip_bytes(self) -> int:
        """Bytes of one clip's tensor in a batch: its cached rows, or its uint8 frames."""
        if self.store is not None:
            return int(np.prod(self.store.shape)) * 4  # FeatureStore.read gives float32 whatever the cache holds
        return self.frames * self.size * self.size * 3


class ClipBatches(TorchDataset):
    def __init__(self, source: ClipSource, plan, reader: ClipReader, query: str, references: bool = False):
        self.source, self.plan, self.reader, self.query, self.references = source, plan, reader, query, references

    def __len__(self) -> int:
        return len(self.plan) if hasattr(self.plan, "__len__") else 0

    def batch_bytes(self) -> int:
        """Bytes of a batch's largest tensor (frames or visual rows), what a worker puts in shared memory."""
        clips = getattr(self.plan, "micro_batch", None) or getattr(self.plan, "size", 1)
        return clips * self.reader.clip_bytes()

    def __getitem__(self, k: int) -> Batch | LoadFailure:
        try:
            clips, caps = self.plan.clips(k)
            info = [self.source.clip(int(i)) for i in clips]
            return Batch(ids=[c.id for c in info], queries=[self.query] * len(info),
                         captions=[c.captions[int(j)] for c, j in zip(info, caps)],
                         labels=torch.tensor([c.label for c in info], dtype=torch.long),
                         references=[c.captions for c in info] if self.references else None,
                         **self.reader(self.source, clips))
        except (MediaError, ManifestError) as e:
            return LoadFailure(type(e).__name__, str(e))


def _as_is(item):
    return item


def make_loader(dataset: ClipBatches, start: int, stop: int, workers: int, prefetch: int, pin: bool = False,
                persistent: bool = False) -> DataLoader:
    """Items ``start .. stop-1`` of ``dataset`` in order, read by ``workers`` processes."""
    if workers > 0:
        check_shared_memory(workers, prefetch, dataset.batch_bytes())
    return DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
                      collate_fn=_as_is, pin_memory=pin, persistent_workers=persistent and workers > 0,
                      prefetch_factor=prefetch if workers > 0 else None,
                      multiprocessing_context=worker_context() if workers > 0 else None)


def batches(loader):
    """The loader's batches, with a worker's read error raised here as the clean error it was."""
    for item in loader:
        if isinstance(item, LoadFailure):
            raise (MediaError if item.kind == "MediaError" else ManifestError)(item.message)
        yield item


def check_shared_memory(workers: int, prefetch: int, batch_bytes: int, path: str = SHM) -> bool:
    """Warn (once per setting) when ``workers`` x ``prefetch`` batches of ``batch_bytes``, for every training
    process of this node (``LOCAL_WORLD_SIZE``), do not fit ``path``'s free space: workers then die with a
    bus error. Returns whether they fit (True when ``path`` cannot be read)."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return True
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    need = local * workers * prefetch * batch_bytes
    if need <= free:
        return True
    key = (path, workers, prefetch, batch_bytes, local)
    if key not in _warned:
        _warned.add(key)
        gb = 1024 ** 3
        log.warning("shared memory: %d process(es) x data.workers=%d x data.prefetch=%d x %.2f GB a batch = %.1f GB "
                    "in flight, but %s has %.1f GB free: loader workers will fail with a bus error. Give the "
                    "container more (docker run --shm-size=%dg, or --ipc=host; Kubernetes: an emptyDir with medium: "
                    "Memory at /dev/shm) or lower data.workers / data.prefetch", local, workers, prefetch,
                    batch_bytes / gb, need / gb, path, free / gb, -(-need * 5 // 4 // gb))
    return False
