"""On-disk store of frozen X-encoder outputs for one split, read lazily through memory maps.

Layout: ``<cache_dir>/features/<encoder key>/<split content key>/shard-<k>-n<rows>.npy``. Shard k
holds the clips at positions ``[k * SHARD_CLIPS, k * SHARD_CLIPS + rows)`` in the configured
cache dtype (bfloat16 as its raw 16 bits, which numpy lacks). The encoder key names the encoder's
weights, size, pooling, dtype and frame sampling; the split key names the clips' videos. A shard
is written once, under a temporary name then renamed, by one process: a crash loses at most the
shard being written, a cold cache on P processes encodes each shard once (shard k on process
k mod P), and nothing of a split is ever held in RAM: a batch reads its rows from the maps.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.files import atomic_path, write_json_atomic

log = logging.getLogger(__name__)
SHARD_CLIPS = 1024
OPEN_SHARDS = 16  # memory maps kept open per process


@dataclass
class CacheStats:
    clips: int = 0
    encoded: int = 0  # clips encoded by this process now (the rest were on disk or another process's)
    encode_s: float = 0.0


class FeatureStore:
    def __init__(self, folder: Path, n: int, tokens: int, dim: int, dtype: torch.dtype):
        self.folder, self.n, self.shape, self.dtype = Path(folder), n, (tokens, dim), dtype
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self):  # worker processes open their own maps
        return {**self.__dict__, "_maps": OrderedDict()}

    @property
    def shards(self) -> int:
        return -(-self.n // SHARD_CLIPS)

    def rows(self, k: int) -> int:
        return min(SHARD_CLIPS, self.n - k * SHARD_CLIPS)

    def path(self, k: int) -> Path:
        return self.folder / f"shard-{k:06d}-n{self.rows(k)}.npy"

    def missing(self) -> list[int]:
        return [k for k in range(self.shards) if not self.path(k).is_file()]

    def write(self, k: int, rows: torch.Tensor) -> None:
        if tuple(rows.shape) != (self.rows(k), *self.shape):
            raise ValueError(f"{self.path(k)}: expected {(self.rows(k), *self.shape)}, got {tuple(rows.shape)}")
        self.folder.mkdir(parents=True, exist_ok=True)
        data = rows.detach().to("cpu", self.dtype).contiguous()
        array = data.view(torch.int16).numpy() if self.dtype == torch.bfloat16 else data.numpy()
        with atomic_path(self.path(k)) as tmp, open(tmp, "wb") as f:
            np.save(f, array)

    def _map(self, k: int) -> np.ndarray:
        if k not in self._maps:
            if len(self._maps) >= OPEN_SHARDS:
                self._maps.popitem(last=False)
            self._maps[k] = np.load(self.path(k), mmap_mode="r")
        self._maps.move_to_end(k)
        return self._maps[k]

    def read(self, idx) -> torch.Tensor:
        """float32 [len(idx), tokens, dim] for clip positions ``idx``, read from the maps."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"{self.folder}: positions outside 0..{self.n - 1}")
        out = torch.empty(len(idx), *self.shape, dtype=torch.float32)
        shard, row = np.divmod(idx, SHARD_CLIPS)
        for k in np.unique(shard):
            sel = np.flatnonzero(shard == k)
            part = torch.from_numpy(np.ascontiguousarray(self._map(int(k))[row[sel]]))  # copies just these rows
            if self.dtype == torch.bfloat16:
                part = part.view(torch.bfloat16)
            out[torch.from_numpy(sel)] = part.float()
        return out

    def wait_complete(self, timeout_s: float = 24 * 3600) -> None:
        """Block until every shard exists (other processes write theirs)."""
        start = time.monotonic()
        while self.missing():
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"{self.folder}: shards {self.missing()[:5]} never appeared")
            time.sleep(2.0)


def store_folder(root: Path, encoder_key: str, content_key: str) -> Path:
    return Path(root) / "features" / encoder_key / content_key


def write_meta(folder: Path, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "meta.json").is_file():
        write_json_atomic(folder / "meta.json", meta)
