"""``describe``: the resolved config and each arm's parameter counts, built on the meta device."""
from __future__ import annotations

import argparse
import json

import torch
import yaml

from shared.arm import build_arm
from shared.config import load_config, to_dict


def add_parser(sub) -> None:
    p = sub.add_parser("describe", help="resolved config and per-arm parameter counts (no weights needed)",
                       description="Print the resolved config and, for every arm, its total and trainable "
                                   "parameters. Models are built on the meta device, so paper.yaml needs no "
                                   "weights, no hub and no GPU.")
    from experiments.cli import add_config_args

    add_config_args(p, out=False)
    p.add_argument("--json", action="store_true", help='machine-readable: {"arms": {...}, "config": {...}}')
    p.set_defaults(run=run)


def describe(cfg) -> dict:
    from shared.arm import ArmContext
    from shared.encoder import FrozenEncoder

    tokenizer = None
    if cfg.lm.vocab_size is None:  # the captions tokenizer's size depends on the data
        from shared.data import build_dataset
        from shared.lm import load_tokenizer
        from shared.pipeline import tokenizer_corpus

        tokenizer = load_tokenizer(cfg, tokenizer_corpus(cfg, build_dataset(cfg)))
    meta = torch.device("meta")
    encoder = FrozenEncoder(cfg.encoder, device=meta)
    ctx = ArmContext(cfg=cfg, tokenizer=tokenizer, visual_dim=encoder.dim,
                     visual_tokens=encoder.tokens_per_clip(cfg.data.frames), device=meta)
    arms = {}
    for name in cfg.arms:
        arms[name] = build_arm(name, ctx).parameter_counts()
    return {
        "arms": arms,
        "encoder": {"model": cfg.encoder.model, "total_params": sum(p.numel() for p in encoder.model.parameters()),
                    "trainable_params": 0, "tokens_per_clip": ctx.visual_tokens, "dim": encoder.dim},
        "config": to_dict(cfg),
    }


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    info = describe(cfg)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(yaml.safe_dump(info["config"], sort_keys=False))
    print(f"{'part':<10} {'total params':>16} {'trainable':>16}")
    for name, c in {**info["arms"], "x-encoder": info["encoder"]}.items():
        print(f"{name:<10} {c['total_params']:>16,} {c['trainable_params']:>16,}")
    if len(info["arms"]) >= 2:
        (a, ca), (b, cb) = list(info["arms"].items())[:2]
        print(f"trainable ratio {a}/{b}: {ca['trainable_params'] / max(1, cb['trainable_params']):.3f}")
    return 0
