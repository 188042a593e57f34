"""``describe``: the resolved config and each arm's parameter counts, built on the meta device;
``--hardware``: what this machine computes fast, and the precision ``auto`` picks here
(experiments/describe/hardware.py); ``--memory``: memory per GPU and hours (experiments/describe/memory.py);
``--gpu``: the check to run first on a GPU (experiments/describe/gpu_check.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from experiments.cli import add_config_args
from experiments.describe import data_rate
from experiments.describe.gpu_check import GpuCheckFailed, gpu_check, gpu_check_text
from experiments.describe.hardware import hardware, hardware_text
from experiments.describe.memory import memory, memory_text
from experiments.report_differences import reference_arm
from shared.arm import ArmContext, build_arm
from shared.config import ConfigError, load_config, to_dict
from shared.data.sources import build_dataset
from shared.features.encoder import FrozenEncoder
from shared.lm import load_tokenizer
from shared.pipeline import base_lm_maker, tokenizer_corpus
from shared.precision import Runtime, describe as precision_line, resolve_runtime


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("describe", help=help,
                       description="Print the resolved config and, for every arm, its total and trainable "
                                   "parameters. Models are built on the meta device, so paper.yaml needs no "
                                   "weights, no hub and no GPU. --hardware (config optional) prints this machine's "
                                   "bf16 capability flags, measured fp32 and bf16 matmul GFLOP/s, and the precision "
                                   "train.mixed_precision=auto resolves to here; with --config also each arm's "
                                   "training step time under fp32 and under bf16, measured in the same process.")
    add_config_args(p, out=False, config_required=False)
    p.add_argument("--json", action="store_true", help='machine-readable: {"arms": {...}, "config": {...}}')
    p.add_argument("--hardware", action="store_true",
                   help="one screen on this machine: capability flags, measured matmul GFLOP/s, the precision chosen")
    p.add_argument("--memory", action="store_true",
                   help="peak training memory per GPU of each arm as launched on --gpus GPUs, under DDP (traced on the "
                        "meta device, states counted) and FSDP2 (the loop's sharding over a fake process group, tracked "
                        "by torch's FSDPMemTracker on fake tensors): nothing allocated, no GPU; also with and without "
                        "activation checkpointing, and the hours to each milestone")
    p.add_argument("--gpus", type=_counts, default=None, metavar="N[,N...]",
                   help="--memory: GPU counts (processes) to lay the arms out over (default 8,16: one and two nodes; "
                        "1 for one_gpu.yaml). With 1: what fits one GPU of 24, 48 and 80 GB (micro-batch, activation "
                        "checkpointing, features cached or online) and the hours it takes")
    p.add_argument("--caption-tokens", type=int, default=32, help="--memory, --gpu: target caption length in tokens")
    p.add_argument("--calibrate", action="store_true",
                   help="--memory: also measure the method's error against a real CPU step at a reduced size")
    p.add_argument("--gpu", action="store_true",
                   help="the check to run first on a GPU (experiments/describe/gpu_check.py): both arms with random weights and "
                        "the online encoder, a few training steps under DDP and FSDP2 (one process), torch.compile off "
                        "and on; prints peak memory against the --memory estimate, step time, samples/s and MFU; exits "
                        "4 on a crash or a peak over the estimate by more than 25%%. Without CUDA it runs on the CPU "
                        "(a dry run for small configs such as smoke.yaml)")
    p.add_argument("--decode-rates", metavar="FILE", default=None,
                   help="--memory, --gpu: a data-bench --real-video result (decode_rates.json) giving one loader worker's "
                        "clips/s, against which the clips/s each GPU needs is turned into workers and cores (default: "
                        "cache_dir/data_bench/decode_rates.json when data-bench ran here, else a stated assumed rate)")
    p.add_argument("--steps", type=int, default=3, help="--gpu: training steps per run, the first one untimed (default 3)")
    p.add_argument("--compile", choices=["both", "off", "on"], default="both", help="--gpu: torch.compile settings to run")
    p.set_defaults(run=run)


DEFAULT_GPUS = {"one_gpu.yaml": [1]}  # --memory's GPU counts by preset (others: 8 and 16)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU counts such as 8,16, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"GPU counts must be positive, got {text!r}")
    return counts


def describe(cfg, runtime: Runtime) -> dict:
    tokenizer = None
    if cfg.lm.vocab_size is None:  # the captions tokenizer's size depends on the data

        tokenizer = load_tokenizer(cfg, tokenizer_corpus(cfg, build_dataset(cfg)))
    meta = torch.device("meta")
    encoder = FrozenEncoder.from_config(cfg, device=meta)
    ctx = ArmContext(cfg=cfg, tokenizer=tokenizer, visual_dim=encoder.dim,
                     visual_tokens=encoder.tokens_per_clip(cfg.data.frames), device=meta,
                     make_base_lm=base_lm_maker(cfg, tokenizer), runtime=runtime)
    arms = {}
    for name in dict.fromkeys([*cfg.arms, *cfg.variants]):  # the compared arms, then variants not in `arms`
        arms[name] = build_arm(name, ctx).parameter_counts()
    return {
        "arms": arms,
        "encoder": {"model": cfg.encoder.model, "total_params": sum(p.numel() for p in encoder.model.parameters()),
                    "trainable_params": 0, "tokens_per_clip": ctx.visual_tokens, "dim": encoder.dim},
        "config": to_dict(cfg),
        "precision": runtime.precision.record(),
    }


def run(args: argparse.Namespace) -> int:
    if args.config is None and not args.hardware:
        raise ConfigError("describe: --config is required (only --hardware runs without one)")
    cfg = load_config(args.config, args.overrides)
    if args.gpu:
        modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile]
        r = gpu_check(args.config, args.overrides, steps=max(2, args.steps), compile_modes=modes,
                      caption_tokens=args.caption_tokens)
        r["data_rate"] = data_rate.for_gpu_check(r, cfg, args.decode_rates)
        print(json.dumps(r, indent=2) if args.json else "\n".join(
            [gpu_check_text(r), *data_rate.text(r["data_rate"], "its measured samples/s, fastest run per arm")]))
        if not r["ok"]:
            raise GpuCheckFailed("the GPU check failed (see the table above)")
        return 0
    if args.memory:
        gpus = args.gpus or DEFAULT_GPUS.get(Path(args.config).name, [8, 16])
        m = memory(cfg, gpus, args.caption_tokens, args.calibrate)
        m["data_rate"] = data_rate.for_memory(m, cfg, args.decode_rates)
        print(json.dumps(m, indent=2) if args.json else "\n".join(
            [memory_text(m), *data_rate.text(m["data_rate"], f"the hours above: {100 * m['utilisation']:.0f}% of the peak on the FLOPs a step executes")]))
        return 0
    runtime = resolve_runtime(cfg)
    if args.hardware:
        h = hardware(cfg, runtime, step_arms=args.config is not None)
        print(json.dumps(h, indent=2) if args.json else hardware_text(h))
        return 0
    info = describe(cfg, runtime)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(yaml.safe_dump(info["config"], sort_keys=False))
    parts = {(f"{name} ({cfg.base_arm(name)} variant)" if name in cfg.variants else name): c
             for name, c in {**info["arms"], "x-encoder": info["encoder"]}.items()}
    width = max(map(len, parts))
    print(f"{'part':<{width}} {'total params':>16} {'trainable':>16}")
    for name, c in parts.items():
        print(f"{name:<{width}} {c['total_params']:>16,} {c['trainable_params']:>16,}")
    ref = reference_arm(to_dict(cfg), list(info["arms"]))  # ratios as the report gives them: reference / arm
    if len(info["arms"]) > 1:
        r = info["arms"][ref]["trainable_params"]
        print("trainable ratio " + ", ".join(f"{ref}/{a}: {r / max(1, c['trainable_params']):.3f}"
                                             for a, c in info["arms"].items() if a != ref))
    print(f"precision on this machine: {precision_line(info['precision'])}; describe --hardware measures it")
    return 0
