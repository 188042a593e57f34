"""A folder of videos or images and a table of captions and labels (CSV, TSV, JSON or JSONL).

One row per clip, or several rows of one clip (one caption each: merged by id). Columns are found
by their usual names (``--*-column`` names others); a caption cell may hold one text or a JSON list.
Media paths are relative to ``--media-root`` (or bare names, matched by file stem under it). Ids:
the id column's value, else the media path without its extension, plus ``_<start>-<end>`` for a
segment, through ``clip_id`` (``sub/clip.mp4`` at 1-3 s -> ``sub__clip_1-3``). CSV/TSV are read as
``utf-8-sig``: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from shared.data.convert.common import ConvertError, MediaFinder, Record, clip_id, load_json, merge_rows, span_segment

COLUMNS = {
    "id": ("id", "clip_id", "video_id", "image_id", "key", "name"),
    "media": ("media", "video", "video_path", "image", "image_path", "path", "file", "file_name", "filename"),
    "caption": ("captions", "caption", "text", "sentence", "sentences", "description"),
    "label": ("label", "class", "category", "label_name"),
    "split": ("split", "subset"),
    "start": ("start", "start_time", "start_s"),
    "end": ("end", "end_time", "end_s"),
}
REQUIRED = ("media", "caption")


def add_arguments(p) -> None:
    p.add_argument("--table", required=True, type=Path, help="captions table: .csv, .tsv, .json (a list of objects) or .jsonl")
    p.add_argument("--media-root", type=Path, help="folder the media paths are relative to (default: the table's folder)")
    p.set_defaults(default_media_root=lambda args: args.table.parent)
    for role, names in COLUMNS.items():
        p.add_argument(f"--{role}-column", help=f"column of the {role} (default: the first of {', '.join(names)})")


def read_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) for each row of a CSV/TSV/JSON/JSONL table."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ConvertError(f"--table: no such file: {path}")
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8-sig") as f:
            for n, row in enumerate(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","), start=2):
                yield f"{path}:{n}", row
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield f"{path}:{n}", json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ConvertError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    elif suffix == ".json":
        rows = load_json(path)
        if isinstance(rows, dict):  # {"annotations": [...]} or {id: row}
            rows = next((v for v in rows.values() if isinstance(v, list)), None) or \
                [{"id": k, **v} for k, v in rows.items() if isinstance(v, dict)]
        for i, row in enumerate(rows):
            yield f"{path}: row {i}", row
    else:
        raise ConvertError(f"--table: {path}: expected .csv, .tsv, .json or .jsonl")


def _columns(args, header: list[str], where: str) -> dict[str, str | None]:
    chosen = {}
    for role, names in COLUMNS.items():
        given = getattr(args, f"{role}_column", None)
        if given is not None and given not in header:
            raise ConvertError(f"{where}: --{role}-column {given!r} is not a column; columns: {header}")
        chosen[role] = given or next((c for c in names if c in header), None)
        if role in REQUIRED and chosen[role] is None:
            raise ConvertError(f"{where}: no {role} column (looked for {', '.join(names)}; columns: {header}); "
                               f"name it with --{role}-column")
    return chosen


def _captions(value, where: str) -> list[str]:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    values = ["" if v is None else v for v in (value if isinstance(value, list) else [value])]  # blank: counted
    if not all(isinstance(v, str) for v in values):
        raise ConvertError(f"{where}: captions must be text, got {value!r}")
    return list(values)  # stripped, and empty ones counted, by write_manifest's caption policy


def _cell(row: dict, column: str | None) -> str | None:
    value = row.get(column) if column else None
    return None if value is None or not str(value).strip() else str(value).strip()


def _seconds(value, where: str, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConvertError(f"{where}: {what} must be a number of seconds, got {value!r}") from None


def records(args) -> Iterator[Record]:
    yield from merge_rows(_rows(args))  # rows of one id merge into one clip


def _rows(args) -> Iterator[Record]:
    finder = MediaFinder(args.media_root or args.table.parent)
    cols = None
    for where, row in read_rows(args.table):
        if not isinstance(row, dict):
            raise ConvertError(f"{where}: expected an object with named fields, got {type(row).__name__}")
        cols = cols or _columns(args, list(row), where)
        media = str(row.get(cols["media"]) or "").strip()
        if not media:
            raise ConvertError(f"{where}: empty {cols['media']!r}")
        start, end = (_seconds(row.get(cols[k]) if cols[k] else None, where, k) for k in ("start", "end"))
        own = _cell(row, cols["id"])
        cid = clip_id(own) if own else clip_id(Path(media).with_suffix("").as_posix(), span_segment(start, end))
        yield Record(cid, finder.find(media), _captions(row.get(cols["caption"]), where), where,
                     label=_cell(row, cols["label"]), split=_cell(row, cols["split"]), start=start, end=end)
