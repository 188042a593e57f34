"""What every converter shares: the record it yields, finding media, splits, writing the manifest.

A converter reads one dataset's own files and yields ``Record``s; ``write_manifest`` maps their
splits (kept from the source, or assigned by a seeded rule), checks every line with the manifest
reader's own checks, writes the JSONL atomically and lists media files that do not exist in a
``validate``-style report (``invalid.jsonl`` + ``validate.json``), so ``data.manifest.exclude=<that
folder>`` skips them as it skips what ``validate`` finds unreadable.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from shared.data.manifest import SPLITS, ManifestError, build_index, parse_clip
from shared.files import atomic_path, write_json_atomic, write_text_atomic
from shared.progress import progress_bar

log = logging.getLogger(__name__)

# how the public datasets name their splits -> the manifest's names ("skip" drops the records)
SPLIT_NAMES = {"train": "train", "training": "train", "restval": "train", "val": "val", "valid": "val",
               "validation": "val", "validate": "val", "dev": "val", "test": "test", "testing": "test"}
# files that sit beside media in dataset folders and are never the media a record means
NOT_MEDIA = {".json", ".jsonl", ".csv", ".tsv", ".txt", ".md", ".npy", ".npz", ".pkl", ".part", ".ytdl", ".parquet",
             ".arrow"}


class ConvertError(ManifestError):
    """A source annotation that cannot be converted; the message names its file and place."""


@dataclass
class Record:
    """One clip as a converter reads it from the source annotations."""

    id: str
    media: Path  # resolved path (may not exist: reported, not refused)
    captions: list[str]
    where: str  # "<source file>: <place>", named in every message about this record
    label: str | None = None
    split: str | None = None  # the source's own split name; None = assigned by the seeded rule
    start: float | None = None  # seconds: a segment of a longer video
    end: float | None = None
    group: str | None = None  # records of one group always share a split (default: their media file)


@dataclass
class SplitRule:
    """Source splits mapped to train/val/test, or a seeded hash of each record's group when the source
    has none (or ``assign``): the same group always lands in the same split, whatever the order."""

    seed: int = 0
    val_frac: float = 0.05
    test_frac: float = 0.05
    assign: bool = False  # ignore the source's splits
    names: dict[str, str] = field(default_factory=lambda: dict(SPLIT_NAMES))

    def __post_init__(self) -> None:
        if not (0 <= self.val_frac and 0 <= self.test_frac and self.val_frac + self.test_frac < 1):
            raise ConvertError(f"--val-frac {self.val_frac} and --test-frac {self.test_frac}: each >= 0, together < 1")
        bad = {k: v for k, v in self.names.items() if v not in (*SPLITS, "skip")}
        if bad:
            raise ConvertError(f"--split-map: targets must be one of {[*SPLITS, 'skip']}, got {bad}")

    def of(self, rec: Record) -> str:
        if rec.split is not None and not self.assign:
            name = self.names.get(rec.split.strip().lower())
            if name is None:
                raise ConvertError(f"{rec.where}: unknown split {rec.split!r}; map it with --split-map "
                                   f"{rec.split}=train|val|test|skip, or --splits assign")
            return name
        key = rec.group if rec.group is not None else str(rec.media)
        u = int.from_bytes(hashlib.blake2b(f"{self.seed}|{key}".encode(), digest_size=8).digest(), "big") / 2 ** 64
        return "test" if u < self.test_frac else "val" if u < self.test_frac + self.val_frac else "train"


def parse_split_map(text: str | None) -> dict[str, str]:
    """``"validation=test,testing=skip"`` on top of the usual names."""
    names = dict(SPLIT_NAMES)
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise ConvertError(f"--split-map: expected SOURCE=TARGET pairs, got {item!r}")
        k, v = item.split("=", 1)
        names[k.strip().lower()] = v.strip()
    return names


class MediaFinder:
    """Media by name under a root folder: a relative path as given, else a file whose stem is the name
    (``video0`` -> ``videos/all/video0.mp4``), found through one walk of the folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        if not self.root.is_dir():
            raise ConvertError(f"--media-root: no such folder: {self.root}")
        self._stems: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._stems is None:
            self._stems = {}
            for folder, dirs, files in os.walk(self.root):
                dirs.sort()
                for name in sorted(files):
                    p = Path(folder) / name
                    if p.suffix.lower() not in NOT_MEDIA and not name.startswith("."):
                        self._stems.setdefault(p.stem, []).append(p)
        return self._stems

    def find(self, name: str, default_suffix: str = "") -> Path:
        direct = self.root / name
        if direct.exists():
            return direct
        found = self._index().get(Path(name).stem if Path(name).suffix else name)
        if found:
            return found[0]
        return self.root / (name + default_suffix if not Path(name).suffix else name)


def _line(rec: Record, split: str, out_dir: Path) -> dict:
    # relative to the manifest when the media sit below it (the folder can move), else absolute
    media = Path(os.path.normpath(rec.media.absolute()))
    media = media.relative_to(out_dir) if media.is_relative_to(out_dir) else media
    obj = {"id": rec.id, "media": str(media), "captions": rec.captions}
    if rec.label is not None:
        obj["label"] = rec.label
    obj["split"] = split
    if rec.start is not None:
        obj["start"] = rec.start
    if rec.end is not None:
        obj["end"] = rec.end
    try:  # the reader's own checks, named at the source
        parse_clip(obj, out_dir, rec.where)
    except ManifestError as e:
        raise ConvertError(str(e)) from None
    return obj


def write_manifest(records: Iterable[Record], out: Path, rule: SplitRule, report: Path | None = None,
                   drop_missing: bool = False) -> dict:
    """Write the records as a manifest at ``out`` (atomically, checked as training will read it) and a
    report of missing media; returns the summary (also ``report/make_manifest.json``)."""
    out = Path(out).absolute()
    report = Path(report) if report is not None else out.with_suffix(".check")
    splits, labels, missing, dropped = Counter(), set(), [], 0
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f, progress_bar(desc="make-manifest", unit="clip") as bar:
            n = 0
            for rec in records:
                split = rule.of(rec)
                if split == "skip":
                    dropped += 1
                    continue
                if not rec.media.exists():
                    row = {"id": rec.id, "media": str(rec.media), "problem": f"{rec.media}: file not found"}
                    if drop_missing:
                        missing.append({**row, "source": rec.where})
                        continue
                    missing.append({"line": n + 1, **row})
                f.write(json.dumps(_line(rec, split, out.parent)) + "\n")
                n += 1
                splits[split] += 1
                labels.add(rec.label)
                bar.update(1)
        if n == 0:
            raise ConvertError(f"{out}: no clip to write ({dropped} skipped by --split-map, {len(missing)} without media)")
        try:
            index = build_index(tmp)  # duplicate ids and every field, as training will index it
        except ManifestError as e:
            raise ConvertError(str(e).replace(str(tmp), str(out))) from None
    return _write_report(report, out, index.digest, n, splits, labels, missing, dropped, drop_missing)


def _write_report(report: Path, out: Path, digest: str, n: int, splits: Counter, labels: set, missing: list[dict],
                  dropped: int, drop_missing: bool) -> dict:
    report.mkdir(parents=True, exist_ok=True)
    listed = [] if drop_missing else missing  # lines of the written manifest, as validate lists them
    write_text_atomic(report / "invalid.jsonl", "".join(json.dumps(m) + "\n" for m in listed))
    write_json_atomic(report / "validate.json", {
        "manifest": str(out), "digest": digest, "clips": n, "invalid": len(listed),
        "problems": {"file not found": len(listed)} if listed else {},
        "check": "make-manifest: media files exist (not decoded); run `validate` to decode each"})
    summary = {"manifest": str(out), "clips": n, "splits": {s: splits.get(s, 0) for s in SPLITS},
               "labels": len(labels - {None}), "missing_media": len(missing),
               "missing_media_dropped": drop_missing, "skipped_by_split_map": dropped, "report": str(report)}
    if drop_missing:
        write_text_atomic(report / "missing.jsonl", "".join(json.dumps(m) + "\n" for m in missing))
    write_json_atomic(report / "make_manifest.json", summary)
    return summary


def read_label_file(path: str | Path) -> dict[str, str]:
    """Class names by id from a two-column file (``id,name`` or ``name<TAB>id``, in either order: the
    integer column is the id), as MSR-VTT's category.txt and YouCook2's label_foodtype.csv are."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"--label-file: no such file: {path}")
    names = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split(",", 1))]
        ids = [p for p in parts if p.isdigit()]
        if len(parts) != 2 or len(ids) != 1:
            raise ConvertError(f"{path}:{n}: expected an integer id and a name, got {line!r}")
        names[ids[0]] = next(p for p in parts if p != ids[0])
    return names


def load_json(path: str | Path) -> object:
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def need(obj: dict, key: str, where: str) -> object:
    """``obj[key]``, or an error naming the source place and the keys it has."""
    if not isinstance(obj, dict) or key not in obj:
        keys = sorted(obj)[:12] if isinstance(obj, dict) else type(obj).__name__
        raise ConvertError(f"{where}: missing key {key!r} (has: {keys})")
    return obj[key]
