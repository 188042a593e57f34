"""JSONL manifests of real data, indexed once so a process holds columns, not rows.

Clip line:   {"id": str, "media": path, "captions": [str, ...], "label": str (optional),
              "split": "train" | "val" | "test", "start": seconds, "end": seconds (both optional:
              a segment of a longer video, e.g. a YouCook2 or CrossTask step)}
Stream line: {"id": str, "media": path, "events": [{"t": seconds, "caption": str}, ...]}

``media`` is a video (anything FFmpeg decodes), an image or a folder of frames. Relative paths are
resolved against the media root: the manifest's folder, or the folder named once by a first line
``{"media_root": path}`` (a relative one counts from the manifest's folder), or
``data.manifest.media_root`` (a moved dataset re-pointed without rewriting its lines). Absolute
paths (manifests written before media roots) are read as they are. Every problem is reported as
``<manifest>:<line>: <what is wrong>``.

The index (``ManifestIndex``) is built in one streaming pass over the file and cached: per line
its byte offset, split, label number and caption count as numpy columns (about 17 bytes a line,
so 15M lines are ~250 MB, not tens of GB of objects), plus the sorted label names and a digest of
the file's bytes. A clip's captions and media are read from its line when needed. Media files are
not touched here: ``python -m experiments validate`` checks them, in parallel, once.
"""
from __future__ import annotations

import hashlib
import json
import logging
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.files import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
INDEX_VERSION = "manifest-index-v2"  # v2: the media_root header line


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message is ``<file>:<line>: <problem>``."""

    exit_code = 2


@dataclass(frozen=True)
class ManifestClip:
    id: str
    media: Path
    captions: tuple[str, ...]
    label: str | None
    split: str
    where: str  # "<manifest>:<line>", for error messages downstream
    span: tuple[float, float | None] | None = None  # (start, end or None = the video's end) seconds


@dataclass(frozen=True)
class ManifestStream:
    id: str
    media: Path
    events: tuple[tuple[float, str], ...]
    where: str


def _json_object(line: bytes | str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    return obj


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"{where}: missing field {key!r}")
    if not isinstance(obj[key], kind):
        raise ManifestError(f"{where}: field {key!r} must be a {kind.__name__}, got {type(obj[key]).__name__}")
    return obj[key]


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: {what} is empty or not a string: {value!r}")
    return value.strip()


def _span(obj: dict[str, Any], where: str) -> tuple[float, float | None] | None:
    start, end = obj.get("start"), obj.get("end")
    if start is None and end is None:
        return None
    for key, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ManifestError(f"{where}: field {key!r} must be a number of seconds >= 0, got {value!r}")
    start = float(start or 0.0)
    if end is not None and end <= start:
        raise ManifestError(f"{where}: 'end' ({end}) must be after 'start' ({start})")
    return start, None if end is None else float(end)


def media_path(raw: str, root: Path) -> Path:
    return Path(raw) if Path(raw).is_absolute() else root / raw


def header_root(obj: dict[str, Any], path: Path, where: str) -> Path | None:
    """The media root a manifest's first line names (``{"media_root": ...}``), or None for a clip line."""
    if "media_root" not in obj or "id" in obj:
        return None
    return media_path(_text(obj["media_root"], "media_root", where), path.parent)


def resolve_root(path: Path, header: Path | None, override: str | Path | None) -> Path:
    """Where relative media are: ``data.manifest.media_root`` if set, else the header's, else the manifest's folder."""
    if override:
        return media_path(str(Path(override).expanduser()), Path.cwd())
    return header if header is not None else path.parent


def parse_clip(obj: dict[str, Any], root: Path, where: str) -> ManifestClip:
    """Check one clip line's fields (not its media file) and return it."""
    cid = _text(_field(obj, "id", str, where), "id", where)
    captions = _field(obj, "captions", list, where)
    if not captions:
        raise ManifestError(f"{where}: 'captions' is empty; every clip needs at least one caption")
    captions = tuple(_text(c, f"caption {i}", where) for i, c in enumerate(captions))
    split = _field(obj, "split", str, where)
    if split not in SPLITS:
        raise ManifestError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
    label = obj.get("label")
    if label is not None:
        label = _text(label, "label", where)
    media = media_path(_text(_field(obj, "media", str, where), "media", where), root)
    return ManifestClip(cid, media, captions, label, split, where, _span(obj, where))


@dataclass
class ManifestIndex:
    path: Path
    offsets: np.ndarray  # int64 [N] byte offset of each clip line
    lines: np.ndarray  # int32 [N] 1-based line number (for messages)
    split: np.ndarray  # int8 [N] index into SPLITS
    label: np.ndarray  # int32 [N] index into labels, -1 = none
    n_captions: np.ndarray  # int32 [N]
    labels: list[str]  # sorted label names
    digest: str  # sha256 of the manifest's bytes: the content identity of its clips
    root: Path | None = None  # folder of relative media (None: the manifest's folder)

    def __len__(self) -> int:
        return len(self.offsets)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))

    def where(self, row: int) -> str:
        return f"{self.path}:{int(self.lines[row])}"

    def clip(self, row: int, handle) -> ManifestClip:
        """The clip at ``row``, read from ``handle`` (a binary file of the manifest)."""
        handle.seek(int(self.offsets[row]))
        where = self.where(row)
        return parse_clip(_json_object(handle.readline(), where), self.media_root, where)

    @property
    def media_root(self) -> Path:
        return self.root if self.root is not None else self.path.parent


def _cache_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{INDEX_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]


def build_index(path: str | Path, media_root: str | Path | None = None) -> ManifestIndex:
    """One pass over the file: every line checked (fields, duplicate ids), columns kept, rows dropped.
    ``media_root`` (``data.manifest.media_root``) overrides the root the manifest names."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    offsets, lines, splits, labels, ncap = array("q"), array("i"), array("b"), array("i"), array("i")
    id_hashes = array("Q")  # 8-byte hashes of the ids: duplicates found by sorting, not a set of strings
    label_ids: dict[str, int] = {}
    sha = hashlib.sha256()
    header, root = None, None
    with path.open("rb") as f:
        offset = 0
        for n, raw in enumerate(f, start=1):
            sha.update(raw)
            if raw.strip():
                where = f"{path}:{n}"
                obj = _json_object(raw, where)
                if root is None:  # the first line: a media_root header, or a clip
                    header = header_root(obj, path, where)
                    root = resolve_root(path, header, media_root)
                    if header is not None:
                        offset += len(raw)
                        continue
                elif "media_root" in obj and "id" not in obj:
                    raise ManifestError(f"{where}: a media_root line must be the manifest's first line")
                clip = parse_clip(obj, root, where)
                offsets.append(offset)
                lines.append(n)
                splits.append(SPLITS.index(clip.split))
                labels.append(-1 if clip.label is None else label_ids.setdefault(clip.label, len(label_ids)))
                ncap.append(len(clip.captions))
                id_hashes.append(int.from_bytes(hashlib.blake2b(clip.id.encode(), digest_size=8).digest(), "little"))
            offset += len(raw)
    if not offsets:
        raise ManifestError(f"{path}: manifest holds no clips")
    _check_unique_ids(path, np.frombuffer(id_hashes, dtype=np.uint64), np.frombuffer(offsets, dtype=np.int64),
                      np.frombuffer(lines, dtype=np.int32))
    names = sorted(label_ids)  # label numbers follow the sorted names
    remap = np.full(len(label_ids) + 1, -1, dtype=np.int32)
    for name, i in label_ids.items():
        remap[i] = names.index(name)
    label = np.frombuffer(labels, dtype=np.int32)
    # remap[-1] is the spare last entry, -1: lines without a label stay -1
    return ManifestIndex(path, np.frombuffer(offsets, dtype=np.int64).copy(), np.frombuffer(lines, dtype=np.int32).copy(),
                         np.frombuffer(splits, dtype=np.int8).copy(), remap[label], np.frombuffer(ncap, dtype=np.int32).copy(),
                         names, sha.hexdigest(), root)


def _check_unique_ids(path: Path, hashes: np.ndarray, offsets: np.ndarray, lines: np.ndarray) -> None:
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    if not len(same):
        return
    with path.open("rb") as f:  # a hash collision is not a duplicate: compare the ids themselves
        for k in same:
            a, b = sorted((order[k], order[k + 1]))
            ids = []
            for row in (a, b):
                f.seek(int(offsets[row]))
                ids.append(json.loads(f.readline())["id"].strip())
            if ids[0] == ids[1]:
                raise ManifestError(f"{path}:{lines[b]}: duplicate id {ids[1]!r} (first at {path}:{lines[a]})")


def load_index(path: str | Path, cache_root: str | Path | None = None,
               media_root: str | Path | None = None) -> ManifestIndex:
    """The manifest's index, from the cache when the file is unchanged (size and mtime); ``media_root``
    (``data.manifest.media_root``) overrides the folder relative media are read from."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    if cache_root is None:
        return build_index(path, media_root)
    folder = Path(cache_root).expanduser() / "manifests" / _cache_key(path)
    if (folder / "index.npz").is_file() and (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        header = meta.get("header_root")
        root = resolve_root(path, None if header is None else media_path(header, path.parent), media_root)
        with np.load(folder / "index.npz") as z:
            return ManifestIndex(path, z["offsets"], z["lines"], z["split"], z["label"], z["n_captions"],
                                 meta["labels"], meta["digest"], root)
    index = build_index(path)
    header = None if index.root == path.parent else str(index.root.absolute())  # the cache key is the resolved path
    index.root = resolve_root(path, index.root, media_root)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "index.npz", suffix=".npz") as tmp:
        np.savez(tmp, offsets=index.offsets, lines=index.lines, split=index.split, label=index.label,
                 n_captions=index.n_captions)
    write_json_atomic(folder / "meta.json", {"manifest": str(path.resolve()), "clips": len(index),
                                             "labels": index.labels, "digest": index.digest, "header_root": header})
    log.info("indexed %s: %d clips, %d labels", path, len(index), len(index.labels))
    return index


def read_streams(path: str | Path) -> list[ManifestStream]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    streams, root = [], None
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            obj = _json_object(line, where)
            if root is None:  # a media_root first line, as clip manifests may have
                header = header_root(obj, path, where)
                root = resolve_root(path, header, None)
                if header is not None:
                    continue
            sid = _text(_field(obj, "id", str, where), "id", where)
            events = []
            for i, ev in enumerate(_field(obj, "events", list, where)):
                if not isinstance(ev, dict) or not isinstance(ev.get("t"), (int, float)) or isinstance(ev.get("t"), bool):
                    raise ManifestError(f"{where}: event {i} needs a numeric 't' (seconds)")
                events.append((float(ev["t"]), _text(ev.get("caption"), f"event {i} caption", where)))
            if not events:
                raise ManifestError(f"{where}: 'events' is empty")
            media = media_path(_text(_field(obj, "media", str, where), "media", where), root)
            if not media.exists():
                raise ManifestError(f"{where}: media file not found: {media}")
            streams.append(ManifestStream(sid, media, tuple(sorted(events)), where))
    return streams
