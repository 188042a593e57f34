"""``train``: one arm, one seed, checkpoints at the config's milestones (resumable)."""
from __future__ import annotations

import argparse
import logging

from experiments.cli import add_config_args
from shared.config import ConfigError, load_config
from shared.contract import check_arms
from shared.pipeline import prepare
from shared.precision import resolve_runtime
from shared.training.loop import train_arm

log = logging.getLogger(__name__)


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("train", help=help,
                       description="Train one arm on the shared data order. Checkpoints are written at every "
                                   "train.milestones entry (samples seen); re-running the same command on the same "
                                   "--out resumes from the last resume point.")
    add_config_args(p)
    p.add_argument("--arm", required=True, help="arm name (e.g. jepa, vlm)")
    p.add_argument("--stop-after", type=int, default=None, metavar="SAMPLES",
                   help="stop (resumably) once this many samples are seen; re-run to continue")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.arm not in cfg.arm:
        raise ConfigError(f"--arm: unknown arm {args.arm!r}; registered: {sorted(cfg.arm)}")
    prepared = prepare(cfg, resolve_runtime(cfg), splits=("train",))
    check_arms(prepared, [args.arm], evaluation=False)  # a broken arm is named here, before any training
    result = train_arm(prepared, args.arm, args.out, stop_at_samples=args.stop_after)
    for c in result.checkpoints:
        log.info("checkpoint %s: %d samples seen, step %d", c["path"], c["samples_seen"], c["step"])
    state = "finished" if result.completed else "stopped (re-run to resume)"
    log.info("%s %s: %.1fs training, %.0f samples/s, %d trainable parameters", args.arm, state, result.wall_s,
             result.samples_per_s, result.trainable_params)
    return 0
