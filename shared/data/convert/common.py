"""What every converter shares: the record it yields, ids, finding media, splits, writing the manifest.

A converter reads one dataset's own files and yields ``Record``s; ``write_manifest`` applies one
policy to all of them: captions and labels stripped and whitespace-collapsed (empty captions
dropped, counted, with examples; a clip left without one is left out, counted), splits mapped
(kept from the source, or assigned by a seeded rule) and counted, media stored relative to the
media root (recorded once as the manifest's first line), every line checked with the manifest
reader's own checks, the JSONL written atomically, and media files that do not exist listed in a
``validate``-style report (``invalid.jsonl`` + ``validate.json``), so ``data.manifest.exclude=<that
folder>`` skips them as it skips what ``validate`` finds unreadable.

Ids have one form (``clip_id``): the source's own video (or image) id, plus ``_<segment>`` for a
segment of it, made a safe file name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

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


UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ID = 160  # bytes: a file name with any extension stays under the usual 255
EXAMPLES = 3  # source places shown for each thing counted
EVALUATED = ("val", "test")  # splits the suite scores on (eval.split; val also for text pretraining)


def clip_id(video: object, segment: object = None) -> str:
    """The manifest id of a clip: ``<video>`` or ``<video>_<segment>``, from the source's own ids.

    A safe file name, the same at every conversion: path separators become ``__``
    (``sub/clip`` -> ``sub__clip``), other characters outside ``A-Za-z0-9._-`` become ``-``, a leading
    dot ``-``; a float segment is written ``start-end`` with ``%g`` (``12.5-20``). An id longer than
    160 characters keeps its first 143 characters and a hash of the whole (still unique, still stable)."""
    def part(x: object) -> str:
        text = f"{x:g}" if isinstance(x, float) else str(x).strip()
        return "__".join(UNSAFE.sub("-", p) for p in re.split(r"[/\\]+", text) if p)

    cid = part(video) + ("" if segment is None else "_" + part(segment))
    cid = re.sub(r"^\.", "-", cid)  # an empty one is refused by the line check, named at its source
    if len(cid) > MAX_ID:
        cid = cid[:MAX_ID - 17] + "-" + hashlib.blake2b(cid.encode(), digest_size=8).hexdigest()
    return cid


def span_segment(start: float | None, end: float | None) -> str | None:
    """A segment named by its times, for sources without segment ids (``1.5-3``, ``0-end``)."""
    if start is None and end is None:
        return None
    return f"{start or 0:g}-{'end' if end is None else f'{end:g}'}"


def clean_text(text: object) -> str:
    """Stripped, runs of whitespace (newlines, tabs) made one space: how every caption and label is stored."""
    return " ".join(str(text).split())


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

    def find(self, name: str, default_suffix: str = "", expected: str | None = None) -> Path:
        """The file ``name`` means; when there is none, the path it would have in the source's official
        layout (``expected``, relative to the root: where a user looks for it), else ``root/name``."""
        direct = self.root / name
        if direct.exists():
            return direct
        found = self._index().get(Path(name).stem if Path(name).suffix else name)
        if found:
            return found[0]
        if expected is not None:
            return self.root / expected
        return self.root / (name + default_suffix if not Path(name).suffix else name)


def merge_rows(records: Iterable[Record]) -> Iterator[Record]:
    """Rows of one clip id (one caption each, as tables and HF datasets often hold them) as one clip;
    rows that disagree on anything but the caption are an error naming both places."""
    clips: dict[str, Record] = {}
    for rec in records:
        prev = clips.get(rec.id)
        if prev is None:
            clips[rec.id] = rec
            continue
        for attr in ("media", "label", "split", "start", "end"):
            if getattr(prev, attr) != getattr(rec, attr):
                raise ConvertError(f"{rec.where}: clip {rec.id!r} has {attr} {getattr(rec, attr)!r} here but "
                                   f"{getattr(prev, attr)!r} at {prev.where}")
        prev.captions += rec.captions
    yield from clips.values()


@dataclass
class Counted:
    """How many, and the first few (a conversion of millions of lines keeps a count, not a list)."""

    n: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.n += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def __str__(self) -> str:
        return "; ".join(self.examples) + (" ..." if self.n > len(self.examples) else "")


@dataclass
class Tally:
    """What the policy changed or left out, with a few source places to look at."""

    empty_captions: int = 0
    no_caption: Counted = field(default_factory=Counted)  # source places of clips left out
    outside_root: Counted = field(default_factory=Counted)  # media stored as absolute paths


def _clean(rec: Record, tally: Tally) -> Record | None:
    """The record under the caption policy, or None when no caption is left."""
    caps = [clean_text(c) for c in rec.captions]
    kept = [c for c in caps if c]
    tally.empty_captions += len(caps) - len(kept)
    if not kept:
        tally.no_caption.add(rec.where)
        return None
    rec.captions = kept
    if rec.label is not None:
        rec.label = clean_text(rec.label) or None
    return rec


def _line(rec: Record, split: str, root: Path, tally: Tally) -> dict:
    # relative to the media root (the folder can move, or be re-pointed with data.manifest.media_root)
    media = Path(os.path.normpath(rec.media.absolute()))
    if media.is_relative_to(root):
        media = media.relative_to(root)
    else:
        tally.outside_root.add(str(media))
    obj = {"id": rec.id, "media": media.as_posix(), "captions": rec.captions}
    if rec.label is not None:
        obj["label"] = rec.label
    obj["split"] = split
    if rec.start is not None:
        obj["start"] = rec.start
    if rec.end is not None:
        obj["end"] = rec.end
    try:  # the reader's own checks, named at the source
        parse_clip(obj, root, rec.where)
    except ManifestError as e:
        raise ConvertError(str(e)) from None
    return obj


def header(root: Path, folder: Path) -> dict | None:
    """The manifest's first line naming its media root: relative when the root is inside the manifest's
    folder (they move together), absolute otherwise (the manifest can move alone); None = that folder."""
    if root == folder:
        return None
    return {"media_root": root.relative_to(folder).as_posix() if root.is_relative_to(folder) else str(root)}


def write_manifest(records: Iterable[Record], out: Path, rule: SplitRule, report: Path | None = None,
                   drop_missing: bool = False, media_root: Path | None = None) -> dict:
    """Write the records as a manifest at ``out`` (atomically, checked as training will read it) and a
    report of missing media; returns the summary (also ``report/make_manifest.json``). Media are stored
    relative to ``media_root`` (default: the manifest's folder)."""
    out = Path(out).absolute()
    root = Path(os.path.normpath(Path(media_root).absolute())) if media_root is not None else out.parent
    report = Path(report) if report is not None else out.with_suffix(".check")
    splits, labels, missing, dropped, tally = Counter(), set(), [], 0, Tally()
    head = header(root, out.parent)
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f, progress_bar(desc="make-manifest", unit="clip") as bar:
            if head is not None:
                f.write(json.dumps(head) + "\n")
            n = 0
            for rec in records:
                split = rule.of(rec)
                if split == "skip":
                    dropped += 1
                    continue
                if _clean(rec, tally) is None:
                    continue
                if not rec.media.exists():
                    row = {"id": rec.id, "media": str(rec.media), "problem": f"{rec.media}: file not found"}
                    if drop_missing:
                        missing.append({**row, "source": rec.where})
                        continue
                    missing.append({"line": n + 1 + (head is not None), **row})
                f.write(json.dumps(_line(rec, split, root, tally)) + "\n")
                n += 1
                splits[split] += 1
                labels.add(rec.label)
                bar.update(1)
        if n == 0:
            raise ConvertError(f"{out}: no clip to write ({dropped} skipped by --split-map, {len(missing)} without media, "
                               f"{tally.no_caption.n} without a caption)")
        try:
            index = build_index(tmp)  # duplicate ids and every field, as training will index it
        except ManifestError as e:
            raise ConvertError(str(e).replace(str(tmp), str(out))) from None
    _warn(tally, splits, root)
    return _write_report(report, out, index.digest, n, splits, labels, missing, dropped, drop_missing, tally, root)


def _warn(tally: Tally, splits: Counter, root: Path) -> None:
    if tally.empty_captions:
        log.warning("%d empty captions dropped (blank after stripping whitespace)", tally.empty_captions)
    if tally.no_caption.n:
        log.warning("%d clips left out: no caption left after stripping, e.g. %s", tally.no_caption.n, tally.no_caption)
    if tally.outside_root.n:
        log.warning("%d media files outside the media root %s stored as absolute paths (they will not follow a "
                    "moved dataset; give the folder holding them all as --media-root), e.g. %s",
                    tally.outside_root.n, root, tally.outside_root)
    for split in EVALUATED:
        if not splits.get(split):
            log.warning("split %s is empty: the suite evaluates on val/test (eval.split); give the source's own "
                        "split file (e.g. crosstask --val-videos), map a split with --split-map, or let the seeded "
                        "rule draw one with --splits assign", split)


def _write_report(report: Path, out: Path, digest: str, n: int, splits: Counter, labels: set, missing: list[dict],
                  dropped: int, drop_missing: bool, tally: Tally, root: Path) -> dict:
    report.mkdir(parents=True, exist_ok=True)
    listed = [] if drop_missing else missing  # lines of the written manifest, as validate lists them
    write_text_atomic(report / "invalid.jsonl", "".join(json.dumps(m) + "\n" for m in listed))
    write_json_atomic(report / "validate.json", {
        "manifest": str(out), "digest": digest, "clips": n, "invalid": len(listed),
        "problems": {"not found": {"files": len(listed), "examples": [m["media"] for m in listed[:EXAMPLES]]}}
        if listed else {},
        "check": "make-manifest: media files exist (not decoded); run `validate` to decode each"})
    summary = {"manifest": str(out), "media_root": str(root), "clips": n,
               "splits": {s: splits.get(s, 0) for s in SPLITS}, "empty_splits": [s for s in EVALUATED if not splits.get(s)],
               "labels": len(labels - {None}), "missing_media": len(missing),
               "missing_media_dropped": drop_missing, "skipped_by_split_map": dropped,
               "empty_captions_dropped": tally.empty_captions, "clips_without_caption": tally.no_caption.n,
               "clips_without_caption_examples": tally.no_caption.examples,
               "media_outside_root": tally.outside_root.n, "report": str(report)}
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
