"""String-keyed rows of same-shape tensors in append-only safetensors shards.

Used for encoder features and text embeddings. Each ``add`` writes one shard under a temporary
name and renames it, so a crash never leaves a half-written shard and nothing added before it is
lost; the keys of a shard's rows live in its metadata.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from shared.files import atomic_path


class ShardStore:
    def __init__(self, folder: str | Path, dtype: torch.dtype = torch.float32):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self._index: dict[str, tuple[Path, int]] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                for row, key in enumerate(json.loads(f.metadata()["keys"])):
                    self._index[key] = (shard, row)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: list[str], rows: torch.Tensor) -> None:
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        name = f"shard-{time.time_ns():020d}-{os.getpid()}.safetensors"
        with atomic_path(self.dir / name) as tmp:
            save_file({"rows": rows.detach().to(self.dtype).contiguous().cpu()}, str(tmp), metadata={"keys": json.dumps(keys)})
        for row, key in enumerate(keys):
            self._index[key] = (self.dir / name, row)

    def get(self, keys: list[str]) -> torch.Tensor:
        """Rows for ``keys`` in order, as float32; every key must be present."""
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise KeyError(f"{self.dir}: {len(missing)} keys not stored, e.g. {missing[0]!r}")
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            shard, row = self._index[k]
            by_shard.setdefault(shard, []).append((i, row))
        out = None
        for shard, pairs in by_shard.items():
            dst, src = zip(*pairs)
            with safe_open(str(shard), framework="pt") as f:
                rows = f.get_slice("rows")
                if len(src) * 8 < rows.get_shape()[0]:  # a few rows (a training batch): read just those
                    data = torch.cat([rows[r:r + 1] for r in src])
                    src = range(len(src))
                else:
                    data = f.get_tensor("rows")
            if out is None:
                out = torch.empty(len(keys), *data.shape[1:], dtype=torch.float32)
            out[list(dst)] = data[list(src)].float()
        return out if out is not None else torch.empty(0)
