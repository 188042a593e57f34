"""The shared data pipeline: clips from the synthetic benchmark or a manifest, and the training order.

Both arms see exactly the same clips, in the same order, with the same target caption at each
position: the order is a pure function of (seed, epoch) computed here, never by an arm.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from shared import synthetic
from shared.config import Config
from shared.manifest import ManifestError, read_clips
from shared.media import MediaError, read_media, uniform_times


@dataclass(frozen=True)
class ClipRecord:
    id: str
    split: str
    captions: tuple[str, ...]
    label: int | None  # index into Dataset.label_texts
    where: str  # origin, named in errors ("data.jsonl:12" or "synthetic:train/5")
    fingerprint: str  # content identity: a change here invalidates cached features
    media: Path | None = None
    scene: synthetic.Scene | None = None

    def frames(self, n_frames: int, size: int) -> np.ndarray:
        """uint8 [n_frames, size, size, 3], sampled uniformly over the clip."""
        if self.scene is not None:
            return synthetic.render(self.scene, uniform_times(1.0, n_frames), size)
        try:
            return read_media(self.media, n_frames, size)
        except MediaError as e:
            raise MediaError(f"{self.where}: {e}") from None


@dataclass
class Dataset:
    splits: dict[str, list[ClipRecord]]
    label_texts: list[str]  # candidate texts for classification, indexed by ClipRecord.label
    name: str

    def split(self, name: str) -> list[ClipRecord]:
        return self.splits.get(name, [])


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:20]


def build_dataset(cfg: Config) -> Dataset:
    if cfg.data.source == "synthetic":
        return _synthetic_dataset(cfg)
    return _manifest_dataset(cfg)


def _synthetic_dataset(cfg: Config) -> Dataset:
    s = cfg.data.synthetic
    splits = {}
    for split, n in (("train", s.train_clips), ("val", s.val_clips), ("test", s.test_clips)):
        records = []
        for i in range(n):
            clip = synthetic.make_clip(s.seed, split, i, s.paraphrase, s.captions_per_clip)
            records.append(ClipRecord(
                id=f"{split}-{i:06d}",
                split=split,
                captions=clip.captions,
                label=clip.scene.meaning.label,
                where=f"synthetic:{split}/{i}",
                # the video depends on neither the paraphrase level nor the captions
                fingerprint=_digest(synthetic.GENERATOR_VERSION, s.seed, split, i),
                scene=clip.scene,
            ))
        splits[split] = records
    name = f"synthetic(seed={s.seed}, paraphrase={s.paraphrase})"
    return Dataset(splits, synthetic.class_texts(), name)


def manifest_records(path: str | Path) -> tuple[list[ClipRecord], list[str]]:
    """Every clip of a manifest as a ClipRecord, with the sorted label names its labels index."""
    clips = read_clips(path)
    labels = sorted({c.label for c in clips if c.label is not None})
    index = {name: i for i, name in enumerate(labels)}
    records = []
    for c in clips:
        st = c.media.stat()
        records.append(ClipRecord(
            id=c.id, split=c.split, captions=c.captions,
            label=index.get(c.label) if c.label is not None else None,
            where=c.where, media=c.media,
            fingerprint=_digest(os.path.abspath(c.media), st.st_size, st.st_mtime_ns),
        ))
    return records, labels


def _manifest_dataset(cfg: Config) -> Dataset:
    records, labels = manifest_records(cfg.data.manifest.path)
    splits: dict[str, list[ClipRecord]] = {"train": [], "val": [], "test": []}
    for r in records:
        splits[r.split].append(r)
    if not splits["train"]:
        raise ManifestError(f"{cfg.data.manifest.path}: no clip has split 'train'")
    return Dataset(splits, labels, f"manifest({cfg.data.manifest.path})")


# ---------------------------------------------------------------------------------------------
# Training order
# ---------------------------------------------------------------------------------------------
class TrainOrder:
    """Sample position -> (clip index, caption index), identical for every arm of a seed.

    Each epoch is a seeded permutation of the training clips; the caption used as the target
    at a position is drawn from the clip's references with the same seed, so a re-run or a
    resume sees exactly the same stream.
    """

    def __init__(self, seed: int, captions_per_clip: list[int]):
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
