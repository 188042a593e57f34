"""``validate``: open every media file of a manifest once, in parallel; list the unreadable ones."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from shared.data.media_check import validate

log = logging.getLogger(__name__)


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("validate", help=help,
                       description="Index a clip manifest (every line's fields checked), then open each clip's "
                                   "media with its decoder and read one frame, in parallel worker processes. "
                                   "Writes OUT/validate.json (summary), OUT/invalid.jsonl (line, id, media, "
                                   "problem for each unreadable clip) and OUT/slow.jsonl (readable clips whose "
                                   "video cannot be read by seeking: decoded from the start at every read); "
                                   "re-running on the same OUT resumes. "
                                   "The summary counts unreadable files by kind (not found, cannot decode, too short ...), "
                                   "with a few examples each. Training with data.manifest.exclude=OUT skips the listed clips.")
    p.add_argument("--manifest", "-m", required=True, type=Path, help="clip manifest (JSONL)")
    p.add_argument("--out", "-o", required=True, type=Path, help="report folder (created; resumed if it exists)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--cache-dir", default="~/.cache/jepa-vs-vlm", help="where the manifest index is cached")
    p.add_argument("--media-root", type=Path,
                   help="folder the relative media are read from (as data.manifest.media_root: a moved dataset)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    s = validate(args.manifest, args.out, args.workers, args.cache_dir, args.media_root)
    log.info("%s: %d clips, %d unreadable, %d readable but slow (no seeking); report in %s", s["manifest"],
             s["clips"], s["invalid"], s["slow"], args.out)
    for line in summary_lines(s["problems"]):
        log.warning(line)
    if s["invalid"]:
        log.info("train with data.manifest.exclude=%s to skip the %d unreadable clips", args.out, s["invalid"])
    return 0


def summary_lines(problems: dict[str, dict]) -> list[str]:
    """One line per problem kind: how many files, a few of them."""
    return [f"  {kind}: {k['files']} file{'s' * (k['files'] != 1)}, e.g. {', '.join(k['examples'])}"
            for kind, k in problems.items()]
