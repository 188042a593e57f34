"""Files that a crash or a kill never leaves half-written.

Every output of the suite goes through these: a file is written beside its final name and renamed
onto it (``os.replace`` is atomic within a folder), a folder is built aside and swapped in whole,
and a JSONL log is append-only, read back up to a line a crash may have cut.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``final`` to write to; renamed onto ``final`` when the block succeeds,
    removed when it fails. ``suffix`` keeps an extension that writers insist on (``np.savez``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp{suffix}")  # per process: several may write at once
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def swap_in(tmp: Path, final: Path) -> None:
    """Replace the folder ``final`` by the complete folder ``tmp``: ``final`` is always whole or absent
    (a crash between the renames leaves ``final.old``, which readers fall back to)."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything before it is intact
    return rows


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
