"""Clips by position: one ``ClipSource`` per split, from the synthetic benchmark or a manifest index.

A source holds no per-clip objects: a clip's captions, label and frames are produced when its
position is asked for (rendered, or read from its manifest line and media file), so the same code
serves 6,000 synthetic clips and 15M manifest lines, in the main process or a DataLoader worker.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from shared.config import Config
from shared.data import synthetic
from shared.data.synthetic_reader import READER
from shared.data.manifest import ManifestError, ManifestIndex, load_index
from shared.data.media import MediaError, read_media, uniform_times
from shared.data.media_check import read_invalid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    id: str
    captions: tuple[str, ...]
    label: int  # index into Dataset.label_texts; -1 = none
    where: str  # origin, named in errors ("data.jsonl:12" or "synthetic:train/5")


def digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:20]


class ClipSource:
    """The clips of one split, addressed by position."""

    name: str
    content_key: str  # identity of the split's videos, position by position: names its feature-cache folder
    text_key: str  # identity of the split's captions (and labels), in order
    # reads a caption back into the meaning its label stands for (``read(text)``, ``truth(label)``,
    # ``caption(meaning)``, ``attributes``; shared/data/synthetic_reader.py): where a source has
    # one, evaluation scores meaning accuracy beside CIDEr. None: captions are free text.
    caption_reader = None

    def __len__(self) -> int:
        raise NotImplementedError

    def clip(self, i: int) -> Clip:
        raise NotImplementedError

    def frames(self, i: int, n_frames: int, size: int) -> np.ndarray:
        """uint8 [n_frames, size, size, 3], sampled uniformly over the clip."""
        raise NotImplementedError

    def caption_counts(self) -> np.ndarray:
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        raise NotImplementedError

    def captions(self, limit: int | None = None) -> Iterator[str]:
        """Every caption of the first ``limit`` clips (all by default), in order."""
        for i in range(len(self) if limit is None else min(limit, len(self))):
            yield from self.clip(i).captions


class SyntheticSource(ClipSource):
    """Clip i is the same whatever the split's length, so splits of any length share cached shards."""

    caption_reader = READER  # the captions come from a known grammar: they can be read back

    def __init__(self, cfg: Config, split: str, n: int):
        s = cfg.data.synthetic
        self.name, self.n = split, n
        self.seed, self.paraphrase, self.per_clip = s.seed, s.paraphrase, s.captions_per_clip
        self.content_key = digest(synthetic.GENERATOR_VERSION, s.seed, split)  # videos ignore the paraphrase level
        self.text_key = digest(synthetic.GENERATOR_VERSION, s.seed, split, n, s.paraphrase, s.captions_per_clip)

    def __len__(self) -> int:
        return self.n

    def _make(self, i: int) -> synthetic.SyntheticClip:
        if not 0 <= i < self.n:
            raise IndexError(f"{self.name}: clip {i} of {self.n}")
        return synthetic.make_clip(self.seed, self.name, i, self.paraphrase, self.per_clip)

    def clip(self, i: int) -> Clip:
        c = self._make(i)
        return Clip(f"{self.name}-{i:06d}", c.captions, c.scene.meaning.label, f"synthetic:{self.name}/{i}")

    def frames(self, i: int, n_frames: int, size: int) -> np.ndarray:
        return synthetic.render(self._make(i).scene, uniform_times(1.0, n_frames), size)

    def caption_counts(self) -> np.ndarray:
        return np.full(self.n, self.per_clip, dtype=np.int32)

    def labels(self) -> np.ndarray:
        return np.array([synthetic.scene_label(self.seed, self.name, i) for i in range(self.n)], dtype=np.int64)


class ManifestSource(ClipSource):
    def __init__(self, index: ManifestIndex, split: str, rows: np.ndarray, decode_threads: int = 1):
        self.index, self.name, self.rows = index, split, rows
        self.decode_threads = decode_threads  # FFmpeg's threads per reading process (data.decode_threads)
        self.content_key = digest(index.digest, split, hashlib.sha256(rows.tobytes()).hexdigest())
        self.text_key = self.content_key
        self._handle, self._pid = None, None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):  # DataLoader workers reopen the file themselves
        return {**self.__dict__, "_handle": None, "_pid": None}

    def _file(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open(self.index.path, "rb"), os.getpid()
        return self._handle

    def manifest_clip(self, i: int):
        return self.index.clip(int(self.rows[i]), self._file())

    def clip(self, i: int) -> Clip:
        c = self.manifest_clip(i)
        return Clip(c.id, c.captions, int(self.index.label[self.rows[i]]), c.where)

    def frames(self, i: int, n_frames: int, size: int) -> np.ndarray:
        c = self.manifest_clip(i)
        try:
            return read_media(c.media, n_frames, size, c.span, threads=self.decode_threads)
        except MediaError as e:
            raise MediaError(f"{c.where}: {e}; {fix_hint(self.index, e)}") from None

    def caption_counts(self) -> np.ndarray:
        return self.index.n_captions[self.rows]

    def labels(self) -> np.ndarray:
        return self.index.label[self.rows].astype(np.int64)


@dataclass
class Dataset:
    splits: dict[str, ClipSource]
    label_texts: list[str]  # candidate texts for classification, indexed by Clip.label
    name: str
    # k -> up to k phrasings of each label, canonical (the label text) first; None = the label text only
    phrase: Callable[[int], list[list[str]]] | None = None

    def split(self, name: str) -> ClipSource:
        if name not in self.splits:
            raise KeyError(f"no split {name!r} in {self.name}")
        return self.splits[name]

    def label_phrasings(self, k: int) -> list[list[str]]:
        if self.phrase is None or k <= 1:
            return [[t] for t in self.label_texts]
        return self.phrase(k)


def build_dataset(cfg: Config) -> Dataset:
    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        sizes = {"train": s.train_clips, "val": s.val_clips, "test": s.test_clips}
        return Dataset({k: SyntheticSource(cfg, k, n) for k, n in sizes.items()}, synthetic.class_texts(),
                       f"synthetic(seed={s.seed}, paraphrase={s.paraphrase})",
                       lambda k: [synthetic.phrasings(i, k, s.paraphrase) for i in range(synthetic.NUM_CLASSES)])
    return manifest_dataset(cfg.data.manifest.path, cfg, require_train=True)


def fix_hint(index: ManifestIndex, error: Exception) -> str:
    """What to run or set when training meets a clip it cannot read (the message ends with it)."""
    check = index.path.with_suffix(".check")
    hint = (f"to skip every unreadable clip, run `python -m experiments validate -m {index.path} -o {check}` "
            f"and train with data.manifest.exclude={check}")
    if "file not found" in str(error) and not index.media_root.is_dir():
        hint = (f"the media folder {index.media_root} does not exist: if the dataset moved, set "
                f"data.manifest.media_root=<its new folder>; else {hint}")
    return hint


def manifest_dataset(path: str, cfg: Config, require_train: bool = False) -> Dataset:
    m = cfg.data.manifest  # data.manifest.media_root re-points the training manifest (and it as an eval set)
    same = m.path is not None and Path(path).expanduser().absolute() == Path(m.path).expanduser().absolute()
    index = load_index(path, cfg.cache_path, m.media_root if same else None)
    excluded = excluded_rows(cfg, index)
    splits = {}
    for split in ("train", "val", "test"):
        rows = index.rows(split)
        splits[split] = ManifestSource(index, split, np.setdiff1d(rows, excluded) if len(excluded) else rows,
                                       cfg.data.decode_threads)
    if require_train and not len(splits["train"]):
        raise ManifestError(f"{path}: no clip has split 'train'")
    return Dataset(splits, index.labels, f"manifest({path})")


def excluded_rows(cfg: Config, index: ManifestIndex) -> np.ndarray:
    """Rows listed as unreadable by ``validate`` (``data.manifest.exclude``), counted in the log."""
    report = cfg.data.manifest.exclude
    if not report:
        return np.zeros(0, dtype=np.int64)

    lines = read_invalid(report, index)
    rows = np.flatnonzero(np.isin(index.lines, lines))
    log.info("data.manifest.exclude: skipping %d unreadable clips listed in %s", len(rows), report)
    return rows
