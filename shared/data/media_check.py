"""``validate``: check every media file of a manifest once, in parallel, resumably.

Training never stats or opens media up front (15M files would cost every process hours). This
pass does it once: each clip's media is opened by its decoder and one frame read. Results are
written per chunk of lines as they finish (``validate.partial.jsonl``), so a killed run resumes
where it stopped; at the end ``invalid.jsonl`` lists each unreadable clip (line, id, media,
problem), ``slow.jsonl`` each readable one that cannot be read by seeking (decoded from the start
at every read; same fields, the reason as problem) and ``validate.json`` sums up (unreadable files
counted by kind, with a few examples each: ``summarize``). ``data.manifest.exclude=<that folder>`` makes training
skip the listed clips, counted in the log.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from shared.data.manifest import (
    ManifestError,
    ManifestIndex,
    _json_object,
    load_index,
    parse_clip,
)
from shared.data.media import check_media
from shared.data.workers import worker_context
from shared.files import (
    append_jsonl,
    read_json,
    read_jsonl,
    write_json_atomic,
    write_text_atomic,
)
from shared.progress import progress_bar

CHUNK_LINES = 1000


# problem kinds, by the words the readers (shared/data/media.py) put in their messages; first match wins
KINDS = (("not found", "not found"), ("cannot decode", "cannot decode"), ("no decodable frames", "cannot decode"),
         ("no video stream", "no video stream"), ("after the video's end", "too short (starts after the video's end)"),
         ("needs a video", "start/end on a still image or frame folder"), ("holds no frames", "empty frame folder"))
EXAMPLES = 3


def problem_kind(problem: str) -> str:
    return next((kind for words, kind in KINDS if words in problem), "other")


def summarize(bad: list[dict]) -> dict[str, dict]:
    """{kind: {"files": n, "examples": [a few media paths]}}, the commonest kind first."""
    kinds: dict[str, dict] = {}
    for b in bad:
        k = kinds.setdefault(problem_kind(b["problem"]), {"files": 0, "examples": []})
        k["files"] += 1
        if len(k["examples"]) < EXAMPLES:
            k["examples"].append(b["media"])
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["files"]))


def check_lines(path: str, offsets: np.ndarray, lines: np.ndarray, root: str) -> tuple[list[dict], list[dict]]:
    """(unreadable clips, readable but slow clips) among the given lines (runs in a worker process)."""
    bad, slow = [], []
    root = Path(root)
    with open(path, "rb") as f:
        for offset, line in zip(offsets, lines):
            f.seek(int(offset))
            where = f"{path}:{int(line)}"
            clip = parse_clip(_json_object(f.readline(), where), root, where)
            check = check_media(clip.media, clip.span)
            row = {"line": int(line), "id": clip.id, "media": str(clip.media)}
            if check.problem is not None:
                bad.append({**row, "problem": check.problem})
            elif check.slow is not None:
                slow.append({**row, "problem": check.slow})
    return bad, slow


def validate(manifest: str | Path, out: Path, workers: int = 2, cache_root: str | Path | None = None,
             media_root: str | Path | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    index = load_index(manifest, cache_root, media_root)
    partial = out / "validate.partial.jsonl"
    root = str(index.media_root)  # a re-pointed root checks other files: nothing resumed from the old one
    done = {r["chunk"]: r for r in read_jsonl(partial) if r.get("digest") == index.digest and r.get("root") == root}
    chunks = range(-(-len(index) // CHUNK_LINES))
    todo = [c for c in chunks if c not in done]
    t0 = time.perf_counter()
    path = str(index.path)
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=worker_context()) as pool, \
            progress_bar(total=len(todo) * CHUNK_LINES, desc="validate", unit="clip") as bar:
        futures = {pool.submit(check_lines, path, index.offsets[c * CHUNK_LINES:(c + 1) * CHUNK_LINES],
                               index.lines[c * CHUNK_LINES:(c + 1) * CHUNK_LINES], root): c for c in todo}
        for future in futures:  # in submission order: the partial file stays in chunk order
            bad, slow = future.result()
            row = {"chunk": futures[future], "digest": index.digest, "root": root, "bad": bad, "slow": slow}
            append_jsonl(partial, row)
            done[row["chunk"]] = row
            bar.update(CHUNK_LINES)
    bad = sorted((b for r in done.values() for b in r["bad"]), key=lambda b: b["line"])
    slow = sorted((b for r in done.values() for b in r.get("slow", [])), key=lambda b: b["line"])
    write_text_atomic(out / "invalid.jsonl", "".join(json.dumps(b) + "\n" for b in bad))
    write_text_atomic(out / "slow.jsonl", "".join(json.dumps(b) + "\n" for b in slow))
    summary = {"manifest": str(index.path), "digest": index.digest, "clips": len(index), "invalid": len(bad),
               "problems": summarize(bad), "slow": len(slow), "workers": workers,
               "wall_s_this_invocation": round(time.perf_counter() - t0, 2), "chunks_resumed": len(chunks) - len(todo)}
    write_json_atomic(out / "validate.json", summary)
    return summary


def read_invalid(report: str | Path, index: ManifestIndex) -> np.ndarray:
    """Line numbers listed by a ``validate`` report (its folder or its invalid.jsonl) of this manifest."""
    report = Path(report)
    folder = report if report.is_dir() else report.parent
    if not (folder / "validate.json").is_file() or not (folder / "invalid.jsonl").is_file():
        raise ManifestError(f"data.manifest.exclude: {report} is not a validate report (run "
                            "'python -m experiments validate' first)")
    summary = read_json(folder / "validate.json")
    if summary["digest"] != index.digest:
        raise ManifestError(f"data.manifest.exclude: {folder} validated another version of {index.path}; "
                            "validate it again")
    return np.array([r["line"] for r in read_jsonl(folder / "invalid.jsonl")], dtype=np.int64)
