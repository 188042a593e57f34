"""JSONL manifests of real data: one clip (or one long stream) per line.

Clip line:   {"id": str, "media": path, "captions": [str, ...], "label": str (optional),
              "split": "train" | "val" | "test"}
Stream line: {"id": str, "media": path, "events": [{"t": seconds, "caption": str}, ...]}

``media`` is a video file, an image (repeated to fill the frames) or a folder of frames; relative
paths are resolved against the manifest's folder. Every problem is reported as
``<manifest>:<line>: <what is wrong>``; nothing is read past a bad line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.media import MediaError, media_kind

SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class ManifestClip:
    id: str
    media: Path
    captions: tuple[str, ...]
    label: str | None
    split: str
    where: str  # "<manifest>:<line>", for error messages downstream


@dataclass(frozen=True)
class ManifestStream:
    id: str
    media: Path
    events: tuple[tuple[float, str], ...]
    where: str


def _lines(path: Path):
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                where = f"{path}:{n}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{where}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise ManifestError(f"{where}: expected a JSON object")
                yield where, obj


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


def _media(obj: dict[str, Any], root: Path, where: str) -> Path:
    raw = _text(_field(obj, "media", str, where), "media", where)
    path = Path(raw) if Path(raw).is_absolute() else root / raw
    if not path.exists():
        raise ManifestError(f"{where}: media file not found: {path}")
    try:
        media_kind(path)
    except MediaError as e:
        raise ManifestError(f"{where}: {e}") from None
    return path


def read_clips(path: str | Path) -> list[ManifestClip]:
    path = Path(path)
    clips, seen = [], {}
    for where, obj in _lines(path):
        cid = _text(_field(obj, "id", str, where), "id", where)
        if cid in seen:
            raise ManifestError(f"{where}: duplicate id {cid!r} (first at {seen[cid]})")
        seen[cid] = where
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
        clips.append(ManifestClip(cid, _media(obj, path.parent, where), captions, label, split, where))
    if not clips:
        raise ManifestError(f"{path}: manifest holds no clips")
    return clips


def read_streams(path: str | Path) -> list[ManifestStream]:
    path = Path(path)
    streams = []
    for where, obj in _lines(path):
        sid = _text(_field(obj, "id", str, where), "id", where)
        events = []
        for i, ev in enumerate(_field(obj, "events", list, where)):
            if not isinstance(ev, dict) or not isinstance(ev.get("t"), (int, float)) or isinstance(ev.get("t"), bool):
                raise ManifestError(f"{where}: event {i} needs a numeric 't' (seconds)")
            events.append((float(ev["t"]), _text(ev.get("caption"), f"event {i} caption", where)))
        if not events:
            raise ManifestError(f"{where}: 'events' is empty")
        streams.append(ManifestStream(sid, _media(obj, path.parent, where), tuple(sorted(events)), where))
    return streams
