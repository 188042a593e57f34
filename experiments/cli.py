"""``python -m experiments <command>``: one entry point for every experiment of the suite."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

COMMANDS = ("describe", "arms", "train", "sample_efficiency", "latency", "selective_decoding", "validate", "data_bench", "report")

EPILOG = """\
overrides: any config key as dotted key=value after the options, in YAML syntax, e.g.
  train.lr=1e-4  seeds=0,1,2  data.synthetic.paraphrase=4  jepa.loss=cosine
Presets live in experiments/configs/: smoke.yaml (seconds, for tests), default.yaml (the embedded
CPU comparison, minutes) and paper.yaml (the paper's section 4.4 with real model ids; GPUs).
Re-running a command on the same --out directory resumes it."""


def setup_logging(out_dir: Path | None = None, verbose: bool = False) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out_dir / "run.log"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "matplotlib", "PIL", "fontTools", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_config_args(p: argparse.ArgumentParser, out: bool = True, config_required: bool = True) -> None:
    p.add_argument("--config", "-c", required=config_required, help="YAML preset, e.g. experiments/configs/default.yaml")
    if out:
        p.add_argument("--out", "-o", required=True, type=Path, help="run directory (created; resumed if it exists)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Embedding prediction (VL-JEPA) vs token prediction (VLM): a controlled comparison.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMANDS:
        importlib.import_module(f"experiments.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    # overrides may stand anywhere, also after options: collect the key=value words argparse left over
    args, extra = parser.parse_known_args(argv)
    unknown = [w for w in extra if w.startswith("-") or "=" not in w]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*getattr(args, "overrides", []), *extra]
    setup_logging(getattr(args, "out", None), getattr(args, "verbose", False))
    from shared.config import ConfigError
    from shared.data.manifest import ManifestError
    from shared.data.media import MediaError
    from shared.training.loop import Diverged

    try:
        return args.run(args) or 0
    except (ConfigError, ManifestError, MediaError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:  # the last good checkpoint is intact: a resume with another setting can start there
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
