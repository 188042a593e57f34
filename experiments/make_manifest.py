"""``make-manifest``: a dataset's own annotation files -> the suite's JSONL manifest, in one command."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shared.data.convert import FORMATS, SplitRule, parse_split_map, write_manifest

log = logging.getLogger(__name__)

EPILOG = """\
splits: the source's own splits are kept (training/validation/testing, validate, restval... mapped to
train/val/test; --split-map renames or skips, e.g. validation=test,testing=skip); records without one
(or all, with --splits assign) get a split from a seeded hash of their video, so segments of one video
never straddle two splits and re-running gives the same manifest.
ids: the source's own video id, plus _SEGMENT for a segment, as a safe file name ('/' -> '__').
captions: stripped, whitespace collapsed; empty ones dropped and counted. media: relative to
--media-root, recorded once as the manifest's first line (data.manifest.media_root= re-points it).
missing media: listed in REPORT/invalid.jsonl like `validate` lists unreadable files, so training with
data.manifest.exclude=REPORT skips them (--missing drop leaves them out instead). Then run
`python -m experiments validate -m MANIFEST -o REPORT` to decode one frame of every clip."""


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("make-manifest", help=help, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Convert a dataset's annotation files into the suite's clip manifest (one JSONL "
                                   "line per clip: id, media, captions, label, split, start/end), checked as "
                                   "training reads it. One sub-command per source format.")
    formats = p.add_subparsers(dest="format", required=True, metavar="format")
    for name, (summary, add_arguments, _) in FORMATS.items():
        f = formats.add_parser(name, help=summary, description=summary, epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(f)
        f.add_argument("--out", "-o", dest="manifest", required=True, type=Path, help="the manifest to write (.jsonl)")
        f.add_argument("--splits", choices=("keep", "assign"), default="keep",
                       help="keep the source's splits (default) or assign every record by the seeded rule")
        f.add_argument("--split-map", help="SOURCE=TARGET pairs, target train|val|test|skip (e.g. validation=test)")
        f.add_argument("--seed", type=int, default=0, help="seed of the split rule (default 0)")
        f.add_argument("--val-frac", type=float, default=0.05, help="share of groups the rule sends to val")
        f.add_argument("--test-frac", type=float, default=0.05, help="share of groups the rule sends to test")
        f.add_argument("--missing", choices=("keep", "drop"), default="keep",
                       help="records whose media file is missing: keep them, listed in the report (default), or drop them")
        f.add_argument("--report", type=Path, help="report folder (default: the manifest's path with .check)")
        f.set_defaults(run=run, records=FORMATS[name][2])


def run(args: argparse.Namespace) -> int:
    rule = SplitRule(args.seed, args.val_frac, args.test_frac, args.splits == "assign", parse_split_map(args.split_map))
    # media paths are written relative to --media-root, recorded once in the manifest (table: default
    # the table's folder; hf: default the manifest's own folder, where stored media are written)
    root = getattr(args, "media_root", None) or getattr(args, "default_media_root", lambda a: None)(args)
    s = write_manifest(args.records(args), args.manifest, rule, args.report, drop_missing=args.missing == "drop",
                       media_root=root)
    log.info("%s: %d clips (train %d, val %d, test %d), %d labels; %d with missing media%s; report in %s",
             s["manifest"], s["clips"], s["splits"]["train"], s["splits"]["val"], s["splits"]["test"], s["labels"],
             s["missing_media"], " (dropped)" if s["missing_media_dropped"] else "", s["report"])
    return 0
