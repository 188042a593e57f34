"""``latency``: per-stage inference latency, streaming cost and training throughput of every arm.

The paper's Figure 3 (right): one video preloaded in memory, the same prompt decoded ``repeats``
times, mean time per sample split into "query embedding", "encoder + predictor" (the frozen
X-encoder included) and "decoder". Also: the cost of one streaming embedding against one decoded
caption, and training samples/s, tokens/s and model-FLOPs utilisation against this machine's
measured matmul peak, all measured in the same run.
"""
from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from experiments.cli import add_config_args
from plots.latency import latency_figure
from shared.config import load_config
from shared.evaluation.latency import count_flops, summarize, synchronize, time_stages
from shared.features.encoder import FrozenEncoder
from shared.files import write_json_atomic, write_text_atomic
from shared.pipeline import prepare, random_visual_batch
from shared.precision import (
    DTYPE_NAMES,
    announce,
    autocast_for,
    decision,
    matmul_gflops,
)
from shared.processes import device as process_device
from shared.runinfo import versions
from shared.training.optim import build_optimizer
from shared.training.step import one_batch_step

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = ["encoder.weights=null", "lm.weights=null", "lm.tokenizer=captions",
                  "jepa.y_encoder.weights=random", "jepa.y_decoder.weights=random"]


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("latency", help=help,
                       description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--random-weights", action="store_true",
                   help="random weights for every model (the architectures are unchanged): time paper.yaml "
                        "without downloads; pair with data.source=synthetic and small latency.frames on CPU")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps per arm (0 skips training)")
    p.set_defaults(run=run)


def preload_video(prepared, frames: int):
    source = prepared.dataset.split("test")
    source = source if len(source) else prepared.dataset.split("train")
    return source.frames(0, frames, prepared.cfg.encoder.image_size)[None]  # uint8 [1, T, H, W, 3]


def arm_inference(prepared, encoder, name: str, video, window, device) -> dict:
    cfg = prepared.cfg
    lat = cfg.latency
    arm = prepared.seeded_arm(name, device).eval()
    arm.prepare_evaluation()

    def in_autocast(fn):
        def run(x):
            with torch.no_grad(), autocast_for(cfg):
                return fn(x)
        return run

    with torch.no_grad():
        stages = [("x_encoder", lambda frames: encoder.encode_clips(frames).to(device))]
        stages += [(n, in_autocast(fn)) for n, fn in arm.inference_stages([cfg.data.query], lat.caption_tokens)]
        per, totals = time_stages(stages, video, lat.repeats, lat.warmup, device)
        # the streaming unit: one window of data.frames frames, embedded and (optionally) decoded
        w_per, w_totals = time_stages(stages, window, lat.repeats, lat.warmup, device)
    enc_pred = [a + b for a, b in zip(per["x_encoder"], per["encoder_predictor"])]
    out = {
        "stages": {"query_embedding": summarize(per["query_embedding"]),
                   "encoder_predictor": summarize(enc_pred),
                   "decoder": summarize(per["decoder"])},
        "total_ms": summarize(totals)["mean_ms"],
        "total": summarize(totals),
        "stage_order": [n for n, _ in stages],
        "x_encoder_in_stage_ms": summarize(per["x_encoder"])["mean_ms"],
        "predictor_only_ms": summarize(per["encoder_predictor"])["mean_ms"],
        "params": arm.parameter_counts(),
    }
    before_decoder = [sum(w_per[n][i] for n in w_per if n != "decoder") for i in range(len(w_totals))]
    out["window"] = {"frames": int(window.shape[1]), "caption_ms": summarize(w_totals)["mean_ms"],
                     "decoder_ms": summarize(w_per["decoder"])["mean_ms"]}
    if arm.has("embed"):  # an embedding needs every stage but the decoder
        w = out["window"]
        w["embed_ms"] = summarize(before_decoder)["mean_ms"]
        w["embed_ms_cached_frames"] = w["embed_ms"] - summarize(w_per["x_encoder"])["mean_ms"]
        # in a stream, windows overlap (selective.hop_s of selective.window_s): only a hop's new frames
        # need the encoder, as selective-decoding does it
        new = max(1, round(window.shape[1] * cfg.selective.hop_s / cfg.selective.window_s))
        with torch.no_grad():
            enc_new, _ = time_stages(stages[:1], window[:, :new], lat.repeats, lat.warmup, device)
        w["new_frames_per_hop"] = new
        w["embed_ms_overlapping"] = w["embed_ms_cached_frames"] + summarize(enc_new["x_encoder"])["mean_ms"]
    del arm
    return out


def arm_training(prepared, name: str, steps: int, device, peak: float) -> dict:
    cfg = prepared.cfg
    t = cfg.train
    arm = prepared.seeded_arm(name, device)
    arm.prepare_training()
    arm.train()
    opt = build_optimizer(arm, cfg)
    batch = random_visual_batch(prepared, t.micro_batch, device)
    records = batch.captions

    def fwd_bwd():
        with autocast_for(cfg):
            loss = arm(batch)
        loss.backward()

    def step():
        one_batch_step(arm, opt, batch, cfg)

    for _ in range(3):
        step()
    flops = count_flops(fwd_bwd)
    opt.zero_grad(set_to_none=True)

    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    step_s = (time.perf_counter() - start) / steps
    tok = prepared.tokenizer
    text_tokens = sum(len(tok(c + " " + cfg.data.query, add_special_tokens=False)["input_ids"]) for c in records)
    tokens_per_sample = prepared.visual_tokens + text_tokens / len(records)
    samples_per_s = len(records) / step_s
    profile = profile_steps(step, 2)
    return {"samples_per_s": samples_per_s, "tokens_per_s": samples_per_s * tokens_per_sample,
            "tokens_per_sample": tokens_per_sample, "step_ms": 1000 * step_s, "batch": len(records),
            "flops_per_step": flops, "achieved_flops": flops / step_s, "mfu": flops / step_s / peak,
            "profile_top": profile}


def profile_steps(step, n: int) -> list[dict]:
    """Where a training step's time goes: the top operators by self time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / n,
             "share": e.self_cpu_time_total / total} for e in events[:10]]


def run_latency(cfg, out: Path, train_steps: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)

    device = process_device()  # whatever accelerate gives this process: CPU here, CUDA elsewhere
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    prepared = prepare(cfg, splits=())
    encoder = FrozenEncoder.from_config(cfg).to(device)
    video = preload_video(prepared, cfg.latency.frames)
    window = preload_video(prepared, cfg.data.frames)
    precision = decision(cfg, device)
    train_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(precision["resolved"], "float32")
    result = {"device": str(device), "dtype": train_dtype, "encoder_dtype": precision["encoder_dtype"],
              "precision": precision,
              "threads": torch.get_num_threads(), "frames": cfg.latency.frames, "repeats": cfg.latency.repeats,
              "caption_tokens": cfg.latency.caption_tokens, "cpu": platform.processor() or platform.machine(),
              "versions": versions(), "arms": {}}
    with torch.no_grad():
        per, _ = time_stages([("x_encoder", lambda f: encoder.encode_clips(f))], video, cfg.latency.repeats,
                             cfg.latency.warmup, device)
    result["encoder_ms"] = summarize(per["x_encoder"])
    for name in cfg.arms:
        log.info("latency: %s, %d frames, %d repeats", name, cfg.latency.frames, cfg.latency.repeats)
        result["arms"][name] = arm_inference(prepared, encoder, name, video, window, device)
    result["streaming"] = streaming_summary(result["arms"])
    if train_steps > 0:
        # both peaks for the record; MFU divides by the peak of the dtype that actually runs
        peak = {d: matmul_gflops(DTYPE_NAMES[d], device) for d in dict.fromkeys(("float32", "bfloat16", train_dtype))}
        training = {"peak_flops": peak, "peak_dtype": train_dtype, "steps": train_steps, "arms": {}}
        for name in cfg.arms:
            log.info("throughput: %s, %d steps of %d samples", name, train_steps, cfg.train.micro_batch)
            training["arms"][name] = arm_training(prepared, name, train_steps, device,
                                                  peak[train_dtype])
        names = list(training["arms"])
        if len(names) >= 2:
            a, b = names[:2]
            training["throughput_ratio"] = {f"{a}/{b}": training["arms"][a]["samples_per_s"] / training["arms"][b]["samples_per_s"]}
        result["training"] = training
    write_json_atomic(out / "latency.json", result)
    latency_figure(result, out)
    write_text_atomic(out / "latency.md", latency_markdown(result))
    return result


def streaming_summary(arms: dict) -> dict:
    out = {}
    for name, r in arms.items():
        w = r["window"]
        if "embed_ms" in w:
            out[name] = {"embed_ms": w["embed_ms"], "caption_ms": w["caption_ms"],
                         "caption_over_embed": w["caption_ms"] / w["embed_ms"],
                         "embed_ms_cached_frames": w["embed_ms_cached_frames"],
                         "caption_over_embed_cached_frames": (w["caption_ms"] - w["embed_ms"] + w["embed_ms_cached_frames"])
                         / max(w["embed_ms_cached_frames"], 1e-9),
                         "embed_ms_overlapping": w["embed_ms_overlapping"],
                         "new_frames_per_hop": w["new_frames_per_hop"],
                         # a caption in the same stream reuses the same frame features: + decoder only
                         "caption_over_embed_overlapping": (w["decoder_ms"] + w["embed_ms_overlapping"])
                         / max(w["embed_ms_overlapping"], 1e-9)}
            for other, ro in arms.items():
                if other != name:
                    out[name][f"{other}_caption_over_embed"] = ro["window"]["caption_ms"] / w["embed_ms"]
    return out


def latency_markdown(r: dict) -> str:
    L = [f"# Latency and throughput ({r['device']}, {r['threads']} threads, {r['dtype']})", "",
         f"One {r['frames']}-frame video preloaded in memory, the same prompt decoded {r['repeats']} times "
         f"({r['caption_tokens']} generated tokens each), mean per sample. \"encoder + predictor\" includes the "
         f"frozen X-encoder ({r['encoder_ms']['mean_ms']:.1f} ms alone).", "",
         "| arm | query embedding ms | encoder + predictor ms | decoder ms | total ms |", "|---|---:|---:|---:|---:|"]
    for name, a in r["arms"].items():
        s = a["stages"]
        L.append(f"| {name} | {s['query_embedding']['mean_ms']:.2f} | {s['encoder_predictor']['mean_ms']:.2f} | "
                 f"{s['decoder']['mean_ms']:.2f} | {a['total_ms']:.2f} |")
    if r.get("streaming"):
        L += ["", "## Streaming: one window embedded vs one caption decoded", ""]
        for name, s in r["streaming"].items():
            L.append(f"- {name}: embedding {s['embed_ms']:.1f} ms vs caption {s['caption_ms']:.1f} ms: "
                     f"**{s['caption_over_embed']:.1f}x** cheaper to embed ({s['caption_over_embed_cached_frames']:.1f}x "
                     "when the frames' encoder features are already computed; "
                     f"{s['caption_over_embed_overlapping']:.1f}x in a stream of overlapping windows, where each hop "
                     f"encodes {s['new_frames_per_hop']} new frames).")
    if r.get("training"):
        t = r["training"]
        L += ["", "## Training throughput", "",
              f"Measured matmul peak: {t['peak_flops']['bfloat16'] / 1e9:.1f} GFLOP/s bf16, "
              f"{t['peak_flops']['float32'] / 1e9:.1f} GFLOP/s fp32; training ran in {t['peak_dtype']} "
              f"({r['precision']['requested']}: {r['precision']['reason']}), so MFU is against the "
              f"{t['peak_dtype']} peak.", "",
              "| arm | samples/s | tokens/s | GFLOP per step | achieved GFLOP/s | MFU |", "|---|---:|---:|---:|---:|---:|"]
        for name, a in t["arms"].items():
            L.append(f"| {name} | {a['samples_per_s']:.1f} | {a['tokens_per_s']:.0f} | {a['flops_per_step'] / 1e9:.2f} | "
                     f"{a['achieved_flops'] / 1e9:.1f} | {100 * a['mfu']:.1f}% |")
        for k, v in t.get("throughput_ratio", {}).items():
            L.append(f"\nThroughput ratio {k}: **{v:.2f}x**.")
        L += ["", "Where a training step's time goes (top operators by self time):", ""]
        for name, a in t["arms"].items():
            L.append(f"- {name}: " + ", ".join(f"{p['op']} {100 * p['share']:.0f}%" for p in a["profile_top"][:6]))
    return "\n".join(L) + "\n"


def run(args: argparse.Namespace) -> int:
    overrides = (RANDOM_WEIGHTS if args.random_weights else []) + list(args.overrides)
    cfg = load_config(args.config, overrides)
    announce(cfg)
    result = run_latency(cfg, args.out, args.train_steps)
    for name, a in result["arms"].items():
        log.info("%s: %s total %.1f ms", name, ", ".join(f"{k} {v['mean_ms']:.1f}" for k, v in a["stages"].items()), a["total_ms"])
    log.info("wrote %s", args.out / "latency.json")
    return 0
