"""The training order: sample position -> (clip, caption), the same for every arm of a seed.

Positions are global: optimizer step ``s`` covers positions ``[s * E, (s + 1) * E)`` for the
effective batch E; process ``r`` of ``P`` takes its ``E / P`` consecutive positions, split into
micro-batches. So what a micro-batch holds is a pure function of (seed, step, process, micro-step):
a resumed run, a DataLoader worker and another process count all see the same stream.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np


class TrainOrder:
    """Each epoch is a seeded permutation of the training clips; the target caption at a position is
    drawn from the clip's references with the same seed."""

    def __init__(self, seed: int, captions_per_clip: np.ndarray | list[int]):
        self.seed = seed
        self.counts = np.asarray(captions_per_clip)
        self.n = len(self.counts)
        if self.n == 0:
            raise ValueError("the training split is empty")

    @lru_cache(maxsize=4)
    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 0x7D0])
        perm = rng.permutation(self.n)
        caps = rng.integers(0, 2**31, size=self.n) % self.counts[perm]
        return perm, caps

    def take(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.arange(start, start + count)
        clips, caps = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64)
        for epoch in np.unique(pos // self.n):
            sel = pos // self.n == epoch
            perm, cap = self._epoch(int(epoch))
            clips[sel], caps[sel] = perm[pos[sel] % self.n], cap[pos[sel] % self.n]
        return clips, caps

    def digest(self, total: int) -> str:
        """A hash of the first ``total`` positions: equal digests mean equal data order."""
        h = hashlib.sha256()
        for start in range(0, total, 65536):
            clips, caps = self.take(start, min(65536, total - start))
            h.update(clips.tobytes())
            h.update(caps.tobytes())
        return h.hexdigest()


def micro_batch_start(step: int, micro: int, rank: int, effective_batch: int, micro_batch: int, accum: int) -> int:
    """First sample position of micro-step ``micro`` of optimizer step ``step`` on process ``rank``."""
    return step * effective_batch + rank * micro_batch * accum + micro * micro_batch
