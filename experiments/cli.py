"""``python -m experiments <command>``: one entry point for every experiment of the suite."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from shared.timings import mark_command_start

# command -> one line for the overview. A command's module (experiments/<command>.py, '-' -> '_') is
# imported only when that command runs, so `--help` and each command load only what they use.
COMMANDS = {
    "describe": "resolved config and per-arm parameter counts (no weights needed); --hardware",
    "arms": "registered arms and variants: description, config keys, capabilities",
    "train": "train one arm with the shared loop, checkpoints at sample milestones",
    "sample-efficiency": "the main job: train all arms on identical data, evaluate every milestone, report",
    "latency": "per-stage inference latency, streaming cost, training throughput and MFU",
    "selective-decoding": "decode long streams only where the embedding changes (paper 4.5)",
    "make-manifest": "convert a dataset's annotations (a table, COCO, MSR-VTT, YouCook2, CrossTask, HF datasets) to a manifest",
    "validate": "check every clip's media file of a manifest (parallel, resumable)",
    "data-bench": "data pipeline at scale: RSS vs manifest size, loader clips/s, cache vs online step, seek vs scan decoding; --real-video: clips/s per worker vs a GPU's need",
    "export": "a milestone checkpoint as Hugging Face folders (from_pretrained) with a model card",
    "report": "redraw the figures and report of a sample-efficiency or selective-decoding run",
    "compare-runs": "do two output folders hold the same results? (metrics, predictions, weights, audit; timings left out)",
}

EPILOG = """\
overrides: any config key as dotted key=value after the options, in YAML syntax, e.g.
  train.lr=1e-4  seeds=0,1,2  data.synthetic.paraphrase=4  jepa.loss=cosine
Presets live in experiments/configs/: smoke.yaml (seconds, for tests), default.yaml (the embedded
CPU comparison, minutes) and paper.yaml (the paper's section 4.4 with real model ids; GPUs). -c takes
a file or, from any folder, a preset's name (-c smoke).
Re-running a command on the same --out directory resumes it."""


def setup_logging(out_dir: Path | None = None, verbose: bool = False) -> None:
    """INFO lines to stderr and ``out_dir/run.log``, from rank 0 only: every rank runs the same code,
    so the others would repeat each line (8-16 times a node) and write the shared run.log at once.
    The other ranks print their warnings and errors, prefixed with their rank."""
    rank = int(os.environ.get("RANK", "0"))  # the launcher's (torchrun, accelerate launch): no process group needed
    stderr = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [stderr]
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0 and out_dir is not None:
        handlers.append(logging.FileHandler(out_dir / "run.log"))
    elif rank != 0:
        stderr.setLevel(logging.WARNING)
        fmt = f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers, force=True,
                        format=fmt, datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "matplotlib", "PIL", "fontTools", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_config_args(p: argparse.ArgumentParser, out: bool = True, config_required: bool = True) -> None:
    p.add_argument("--config", "-c", required=config_required, help="YAML preset: a file, or the name of one that ships with the suite "
                                                                        "(smoke, default, one_gpu, paper, ...), e.g. -c default")
    if out:
        p.add_argument("--out", "-o", required=True, type=Path, help="run directory (created; resumed if it exists)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s options loaded (the others listed by name and help only)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Embedding prediction (VL-JEPA) vs token prediction (VLM): a controlled comparison.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, help in COMMANDS.items():
        if name == command:
            importlib.import_module(f"experiments.{name.replace('-', '_')}").add_parser(sub, help)
        else:
            sub.add_parser(name, help=help, add_help=False)
    return parser


def leave_process_group() -> None:
    """After a multi-process command (torchrun, accelerate launch): wait for the others, then end the
    process group. Left to interpreter exit, gloo's threads can be torn down while still running and
    abort a process (SIGABRT) whose work is already done. A command that never imported torch has
    no group, so torch is looked up rather than imported (``--help`` stays light)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def chosen_command(argv: list[str]) -> str | None:
    return next((w for w in argv if not w.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    mark_command_start()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(chosen_command(argv))
    # overrides may stand anywhere, also after options: collect the key=value words argparse left over
    args, extra = parser.parse_known_args(argv)
    unknown = [w for w in extra if w.startswith("-") or "=" not in w]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*getattr(args, "overrides", []), *extra]
    setup_logging(getattr(args, "out", None), getattr(args, "verbose", False))
    try:
        code = args.run(args) or 0
        leave_process_group()
        return code
    except Exception as e:  # the suite's own errors carry an exit code: message only, no traceback
        code = 2 if isinstance(e, FileNotFoundError) else getattr(e, "exit_code", None)
        if code is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
