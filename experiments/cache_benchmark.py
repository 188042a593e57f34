"""``cache-benchmark``: training from the feature cache vs encoding every batch on the fly.

Both sides run the same optimizer steps on the same batches, one after the other in this process:
the cached side reads visual tokens from the on-disk cache (loaded once); the on-the-fly side
renders or decodes each batch's frames and runs the frozen X-encoder before the training step, as
a pipeline without the cache would. The ratio of their step times is the cache's speed-up.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from shared.config import load_config
from shared.precision import announce
from shared.runinfo import versions, write_json_atomic

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("cache-benchmark", help="training step time from the feature cache vs encoding on the fly",
                       description=__doc__.split("\n\n")[1])
    from experiments.cli import add_config_args

    add_config_args(p)
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps per side and arm")
    p.set_defaults(run=run)


def timed_steps(arm, opt, cfg, batches, visual_fn) -> float:
    from shared.precision import autocast_for

    start = time.perf_counter()
    for batch in batches:
        batch.visual = visual_fn(batch)
        with autocast_for(cfg):
            loss = arm(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / len(batches)


def run(args: argparse.Namespace) -> int:
    from shared.data import TrainOrder
    from shared.encoder import FrozenEncoder
    from shared.optim import build_optimizer
    from shared.pipeline import prepare
    from shared.train_loop import build_seeded_arm, make_batch

    cfg = load_config(args.config, args.overrides)
    announce(cfg)
    prepared = prepare(cfg, splits=("train",))
    encoder = FrozenEncoder.from_config(cfg)
    records = prepared.dataset.split("train")
    order = TrainOrder(cfg.seed, [len(r.captions) for r in records])
    mb = cfg.train.micro_batch

    def batches():
        return [make_batch(prepared, "train", *order.take(i * mb, mb)) for i in range(args.steps)]

    index = {r.id: r for r in records}

    def on_the_fly(batch):
        frames = np.stack([index[i].frames(cfg.data.frames, cfg.encoder.image_size) for i in batch.ids])
        return encoder.encode_clips(frames)

    result = {"micro_batch": mb, "steps": args.steps, "frames": cfg.data.frames, "encoder": cfg.encoder.model,
              "image_size": cfg.encoder.image_size, "threads": torch.get_num_threads(), "versions": versions(), "arms": {}}
    for name in cfg.arms:
        arm = build_seeded_arm(prepared, name)
        arm.prepare_training()
        arm.train()
        opt = build_optimizer(arm, cfg)  # the optimizer training runs, so the step times compare
        timed_steps(arm, opt, cfg, batches()[:2], lambda b: b.visual)  # warm-up
        cached = timed_steps(arm, opt, cfg, batches(), lambda b: b.visual)
        fly = timed_steps(arm, opt, cfg, batches(), on_the_fly)
        result["arms"][name] = {"cached_step_ms": 1000 * cached, "on_the_fly_step_ms": 1000 * fly, "speedup": fly / cached}
        log.info("%s: %.0f ms/step from cache, %.0f ms/step encoding on the fly: %.1fx faster with the cache",
                 name, 1000 * cached, 1000 * fly, fly / cached)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.out) / "cache_benchmark.json", result)
    return 0
