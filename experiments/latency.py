"""``latency``: per-stage inference latency, streaming cost and training throughput of every arm.

The paper's Figure 3 (right): one video preloaded in memory, the same prompt decoded ``repeats``
times after ``warmup`` untimed runs, each stage timed in every repeat: "query embedding", "encoder +
predictor" (the frozen X-encoder included) and "decoder", summarized by mean, std, p50, p90 and p99
with the raw times kept. The same stages at every batch size of ``latency.batch_sizes``; each arm's
time to first token and time per output token; the cost of one streaming embedding against one
decoded caption (ratio of medians, with the spread of the per-repeat ratios); and training
samples/s, tokens/s and model-FLOPs utilisation against this machine's measured matmul peak of the
dtype in use, with the share of the step spent in matrix products, all measured in the same run.
"""
from __future__ import annotations

import argparse
import logging
import platform
from pathlib import Path

import numpy as np
import torch

from experiments.cli import add_config_args
from plots.latency import latency_figure
from shared.arm import LATENCY_STAGES
from shared.config import ConfigError, load_config
from shared.contract import check_arms
from shared.files import write_json_atomic, write_text_atomic
from shared.pipeline import prepare, random_visual_batch
from shared.precision import DTYPE_NAMES, describe, dtype_name, resolve_runtime
from shared.profiling.latency import count_flops, ratio_spread, summarize, time_stages
from shared.profiling.matmul import matmul_gflops
from shared.profiling.steps import StepTimer
from shared.runinfo import versions
from shared.tables import markdown_table

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = ["encoder.weights=null", "lm.weights=null", "lm.tokenizer=captions",
                  "jepa.y_encoder.weights=random", "jepa.y_decoder.weights=random"]
LOW_MATMUL_SHARE = 0.5  # below this, MFU against the matmul peak says more about the step's mix than its speed


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


def inference(prepared, encoder, arm, batch: int, tokens: int):
    """The X-encoder then the arm's stages, for ``batch`` copies of one query, decoding ``tokens`` tokens."""
    runtime, device = prepared.runtime, prepared.runtime.device

    def in_autocast(fn):
        def run(x):
            with torch.no_grad(), runtime.autocast():
                return fn(x)
        return run

    stages = [("x_encoder", lambda frames: encoder.encode_clips(frames).to(device))]
    return stages + [(n, in_autocast(fn)) for n, fn in arm.inference_stages([prepared.cfg.data.query] * batch, tokens)]


def measure(stages, video, repeats: int, warmup: int, device) -> tuple[dict, dict[str, list[float]], list[float]]:
    """The paper's three stages (the X-encoder counted in "encoder + predictor") and the total, summarized;
    with the raw per-stage times and totals."""
    with torch.no_grad():
        per, totals = time_stages(stages, video, repeats, warmup, device)
    enc_pred = [a + b for a, b in zip(per["x_encoder"], per["encoder_predictor"])]
    paper = {"query_embedding": per["query_embedding"], "encoder_predictor": enc_pred, "decoder": per["decoder"]}
    return {"stages": {k: summarize(v) for k, v in paper.items()}, "total": summarize(totals)}, per, totals


def before_decoder(per: dict[str, list[float]], n: int) -> list[float]:
    """Per repeat, every stage but the decoder: what an embedding costs."""
    return [sum(v[i] for k, v in per.items() if k != "decoder") for i in range(n)]


def arm_inference(prepared, encoder, name: str, video, window) -> dict:
    lat, device = prepared.cfg.latency, prepared.runtime.device
    arm = prepared.seeded_arm(name, device).eval()
    arm.prepare_evaluation()
    stages = inference(prepared, encoder, arm, 1, lat.caption_tokens)
    summary, per, totals = measure(stages, video, lat.repeats, lat.warmup, device)
    out = {**summary, "total_ms": summary["total"]["mean_ms"], "stage_order": [n for n, _ in stages],
           "x_encoder_in_stage_ms": summarize(per["x_encoder"])["mean_ms"],
           "predictor_only_ms": summarize(per["encoder_predictor"])["mean_ms"], "params": arm.parameter_counts()}
    if arm.has("embed"):  # the embedding (every stage but the decoder) and one decode of it
        out["embedding"] = summarize(before_decoder(per, len(totals)))
        out["decode"] = out["stages"]["decoder"]
    out["decoding"] = decoding(prepared, encoder, arm, video, per["decoder"], totals)
    out["batch_sweep"] = {"1": {**summary, "repeats": lat.repeats}}
    for b in (b for b in lat.batch_sizes if b != 1):
        log.info("latency: %s at batch %d, %d repeats", name, b, lat.sweep_repeats)
        swept, _, _ = measure(inference(prepared, encoder, arm, b, lat.caption_tokens),
                              np.repeat(video, b, axis=0), lat.sweep_repeats, lat.warmup, device)
        out["batch_sweep"][str(b)] = {**swept, "repeats": lat.sweep_repeats}
    out["window"] = window_cost(prepared, encoder, arm, stages, window)
    del arm
    return out


def decoding(prepared, encoder, arm, video, decode_ms: list[float], totals: list[float]) -> dict:
    """Time to first token (TTFT: the request until one token is out, i.e. a run decoding 1 token, end
    to end) and time per output token (TPOT: each further token, (decode of N - decode of 1) / (N - 1)),
    from the stages alone (an arm's decoder is one stage): each repeat of the N-token decode less the
    median 1-token decode, so TPOT's spread is that of the N-token runs."""
    lat, device = prepared.cfg.latency, prepared.runtime.device
    n = lat.caption_tokens
    _, per1, totals1 = measure(inference(prepared, encoder, arm, 1, 1), video, lat.repeats, lat.warmup, device)
    out = {"tokens": n, "ttft": summarize(totals1), "e2e": summarize(totals)}
    if n > 1:
        first = float(np.median(per1["decoder"]))
        out["tpot"] = summarize([(ms - first) / (n - 1) for ms in decode_ms])
    return out


def window_cost(prepared, encoder, arm, stages, window) -> dict:
    """The streaming unit: one window of data.frames frames, embedded and (optionally) decoded."""
    cfg, device = prepared.cfg, prepared.runtime.device
    lat = cfg.latency
    with torch.no_grad():
        per, totals = time_stages(stages, window, lat.repeats, lat.warmup, device)
    w = {"frames": int(window.shape[1]), "caption_ms": summarize(totals)["mean_ms"],
         "decoder_ms": summarize(per["decoder"])["mean_ms"], "caption": summarize(totals)}
    if not arm.has("embed"):
        return w
    embed = before_decoder(per, len(totals))  # an embedding needs every stage but the decoder
    cached = [e - x for e, x in zip(embed, per["x_encoder"])]
    # in a stream, windows overlap (selective.hop_s of selective.window_s): only a hop's new frames
    # need the encoder, as selective-decoding does it
    new = max(1, round(window.shape[1] * cfg.selective.hop_s / cfg.selective.window_s))
    with torch.no_grad():
        enc_new, _ = time_stages(stages[:1], window[:, :new], lat.repeats, lat.warmup, device)
    overlapping = [c + x for c, x in zip(cached, enc_new["x_encoder"])]
    w.update(embed=summarize(embed), embed_ms=summarize(embed)["mean_ms"], embed_ms_cached_frames=float(np.mean(cached)),
             new_frames_per_hop=new, embed_ms_overlapping=float(np.mean(overlapping)),
             raw={"caption": totals, "embed": embed, "cached": cached, "overlapping": overlapping,
                  "decoder": per["decoder"]})
    return w


def streaming_summary(arms: dict) -> dict:
    """Per embedding arm: a caption against an embedding of the same window, as the ratio of the
    medians with the 10th-90th percentiles of the per-repeat ratios (``*_spread``)."""
    out = {}
    for name, r in arms.items():
        w = r["window"]
        if "raw" not in w:
            continue
        raw = w.pop("raw")
        # a caption in the same stream reuses the same frame features: + decoder only
        in_stream = [d + o for d, o in zip(raw["decoder"], raw["overlapping"])]
        spreads = {"caption_over_embed": ratio_spread(raw["caption"], raw["embed"]),
                   "caption_over_embed_cached_frames": ratio_spread([c - e + k for c, e, k in zip(
                       raw["caption"], raw["embed"], raw["cached"])], raw["cached"]),
                   "caption_over_embed_overlapping": ratio_spread(in_stream, raw["overlapping"])}
        for other, ro in arms.items():
            if other != name:
                spreads[f"{other}_caption_over_embed"] = ratio_spread(ro["window"]["caption"]["times_ms"], raw["embed"])
        out[name] = {"embed_ms": w["embed_ms"], "caption_ms": w["caption_ms"],
                     "embed_ms_cached_frames": w["embed_ms_cached_frames"],
                     "embed_ms_overlapping": w["embed_ms_overlapping"], "new_frames_per_hop": w["new_frames_per_hop"],
                     **{k: s["ratio"] for k, s in spreads.items()}, **{f"{k}_spread": s for k, s in spreads.items()}}
    return out


def arm_training(prepared, name: str, steps: int, peak: float) -> dict:
    """Samples/s, tokens/s and MFU of ``steps`` timed steps at the preset's micro-batch (after 3 untimed),
    and a torch.profiler profile of 2 more: where the step's time goes, and how much is matrix products."""
    cfg, device = prepared.cfg, prepared.runtime.device
    arm = prepared.seeded_arm(name, device)
    arm.prepare_training()
    timer = StepTimer(arm)
    batch = random_visual_batch(prepared, cfg.train.micro_batch, device)
    times = timer.time(batch, steps, warmup=3)

    def fwd_bwd():
        with prepared.runtime.autocast():
            loss = arm(batch)
        loss.backward()

    flops = count_flops(fwd_bwd)
    timer.optimizer.zero_grad(set_to_none=True)
    step_s = sum(times) / steps  # throughput: the work over the time it took
    tok = prepared.tokenizer
    text_tokens = sum(len(tok(c + " " + cfg.data.query, add_special_tokens=False)["input_ids"]) for c in batch.captions)
    tokens_per_sample = prepared.visual_tokens + text_tokens / len(batch)
    samples_per_s = len(batch) / step_s
    profile = timer.profile(batch, 2)
    share = profile["matmul_share"]
    out = {"samples_per_s": samples_per_s, "tokens_per_s": samples_per_s * tokens_per_sample,
           "tokens_per_sample": tokens_per_sample, "step_ms": 1000 * step_s, "step": summarize([1000 * t for t in times]),
           "batch": len(batch), "flops_per_step": flops, "achieved_flops": flops / step_s, "mfu": flops / step_s / peak,
           "matmul_share": share, "profile_clock": profile["clock"], "profile_top": profile["top"]}
    if share < LOW_MATMUL_SHARE:
        out["explanation"] = (f"matrix products are {100 * share:.0f}% of the step's self time: at these widths the "
                              "step is mostly elementwise work and framework overhead, which the matmul peak does "
                              "not measure, so the MFU is low by construction")
    return out


def training_throughput(prepared, steps: int, train_dtype: str) -> dict:
    device = prepared.runtime.device
    # both peaks for the record; MFU divides by the peak of the dtype that actually runs
    peak = {d: matmul_gflops(DTYPE_NAMES[d], device) for d in dict.fromkeys(("float32", "bfloat16", train_dtype))}
    training = {"peak_flops": peak, "peak_dtype": train_dtype, "steps": steps, "warmup_steps": 3, "arms": {}}
    for name in prepared.cfg.arms:
        log.info("throughput: %s, %d steps of %d samples", name, steps, prepared.cfg.train.micro_batch)
        a = training["arms"][name] = arm_training(prepared, name, steps, peak[train_dtype])
        log.info("%s: %.1f samples/s, MFU %.1f%%, matrix products %.0f%% of the step%s", name, a["samples_per_s"],
                 100 * a["mfu"], 100 * a["matmul_share"], f" ({a['explanation']})" if "explanation" in a else "")
    names = list(training["arms"])
    if len(names) >= 2:
        a, b = names[:2]
        training["throughput_ratio"] = {f"{a}/{b}": training["arms"][a]["samples_per_s"] / training["arms"][b]["samples_per_s"]}
    return training


def run_latency(cfg, out: Path, train_steps: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    runtime = resolve_runtime(cfg)  # whatever accelerate gives this process: CPU here, CUDA elsewhere
    device = runtime.device
    prepared = prepare(cfg, runtime, splits=())  # also sets the thread count (train.threads)
    check_arms(prepared, list(cfg.arms), latency=True)  # a broken arm is named before minutes of timing
    encoder = prepared.features.encoder  # on the runtime's device, in the resolved encoder dtype
    lat = prepared.cfg.latency
    video = preload_video(prepared, lat.frames)
    window = preload_video(prepared, cfg.data.frames)
    precision = runtime.precision.record()
    train_dtype = dtype_name(runtime.precision.dtype)
    result = {"device": str(device), "dtype": train_dtype, "encoder_dtype": precision["encoder_dtype"],
              "precision": precision, "threads": torch.get_num_threads(), "frames": lat.frames,
              "warmup": lat.warmup, "repeats": lat.repeats, "batch_sizes": list(lat.batch_sizes),
              "sweep_repeats": lat.sweep_repeats, "caption_tokens": lat.caption_tokens,
              "cpu": platform.processor() or platform.machine(), "versions": versions(), "arms": {}}
    with torch.no_grad():
        per, _ = time_stages([("x_encoder", lambda f: encoder.encode_clips(f))], video, lat.repeats, lat.warmup, device)
    result["encoder_ms"] = summarize(per["x_encoder"])
    for name in cfg.arms:
        log.info("latency: %s, %d frames, %d repeats after %d warm-up runs", name, lat.frames, lat.repeats, lat.warmup)
        result["arms"][name] = arm_inference(prepared, encoder, name, video, window)
    result["streaming"] = streaming_summary(result["arms"])
    if train_steps > 0:
        result["training"] = training_throughput(prepared, train_steps, train_dtype)
    write_json_atomic(out / "latency.json", result)
    latency_figure(result, out)
    write_text_atomic(out / "latency.md", latency_markdown(result))
    return result


def ms(s: dict) -> str:
    return f"{s['p50_ms']:.2f} / {s['p90_ms']:.2f}"


def latency_markdown(r: dict) -> str:
    lines = [f"# Latency and throughput ({r['device']}, {r['threads']} threads, {r['dtype']})", "",
             f"One {r['frames']}-frame video preloaded in memory, the same prompt decoded {r['repeats']} times after "
             f"{r['warmup']} untimed warm-up run{'s' * (r['warmup'] != 1)} ({r['caption_tokens']} generated tokens "
             "each); precision "
             f"{describe(r['precision'])}. Times are p50 / p90 in ms per batch (every repeat's time is in "
             f"latency.json); \"encoder + predictor\" includes the frozen X-encoder "
             f"(p50 {r['encoder_ms']['p50_ms']:.1f} ms alone at batch 1).", "",
             *markdown_table(["arm", "batch", "repeats", "query embedding", "encoder + predictor", "decoder", "total",
                              "total per sample p50"],
                             [[name, b, s["repeats"], *(ms(s["stages"][k]) for k in LATENCY_STAGES), ms(s["total"]),
                               f"{s['total']['p50_ms'] / int(b):.2f}"]
                              for name, a in r["arms"].items() for b, s in a["batch_sweep"].items()], "lrrrrrrr"),
             "", "## Decoding: time to first token and per output token", "",
             "TTFT: the request until one token is out (a 1-token run end to end); TPOT: each further token, "
             f"(decode of {r['caption_tokens']} tokens - median decode of 1) / {r['caption_tokens'] - 1}; batch 1.", "",
             *markdown_table(["arm", "TTFT ms", "TPOT ms", "end to end ms"],
                             [[name, ms(d["ttft"]), ms(d["tpot"]) if "tpot" in d else "n/a", ms(d["e2e"])]
                              for name, d in ((n, a["decoding"]) for n, a in r["arms"].items())])]
    embedders = {n: a for n, a in r["arms"].items() if "embedding" in a}
    if embedders:
        lines += ["", *(f"- {n}: embedding {ms(a['embedding'])} ms, one decode of its embedding {ms(a['decode'])} ms "
                        "(p50 / p90)." for n, a in embedders.items())]
    if r.get("streaming"):
        lines += ["", "## Streaming: one window embedded vs one caption decoded", "",
                  "Ratios of medians, with the 10th-90th percentiles of the per-repeat ratios.", ""]
        for name, s in r["streaming"].items():
            lines.append(f"- {name}: embedding {s['embed_ms']:.1f} ms vs caption {s['caption_ms']:.1f} ms (means): "
                         f"**{spread(s['caption_over_embed_spread'])}** cheaper to embed "
                         f"({spread(s['caption_over_embed_cached_frames_spread'])} when the frames' encoder features are "
                         f"already computed; {spread(s['caption_over_embed_overlapping_spread'])} in a stream of "
                         f"overlapping windows, where each hop encodes {s['new_frames_per_hop']} new frames).")
    if r.get("training"):
        t = r["training"]
        lines += ["", "## Training throughput", "",
                  f"Measured matmul peak: {t['peak_flops']['bfloat16'] / 1e9:.1f} GFLOP/s bf16, "
                  f"{t['peak_flops']['float32'] / 1e9:.1f} GFLOP/s fp32; training ran in {t['peak_dtype']}, so MFU is "
                  f"against the {t['peak_dtype']} peak. {t['steps']} timed steps at the preset's micro-batch after "
                  f"{t['warmup_steps']} untimed; matrix products: share of the step's self time in aten::mm, addmm, "
                  "bmm, baddbmm, matmul and linear (torch.profiler, 2 steps).", "",
                  *markdown_table(["arm", "batch", "samples/s", "tokens/s", "GFLOP per step", "achieved GFLOP/s", "MFU",
                                   "matrix products"],
                                  [[name, a["batch"], f"{a['samples_per_s']:.1f}", f"{a['tokens_per_s']:.0f}",
                                    f"{a['flops_per_step'] / 1e9:.2f}", f"{a['achieved_flops'] / 1e9:.1f}",
                                    f"{100 * a['mfu']:.1f}%", f"{100 * a['matmul_share']:.0f}%"]
                                   for name, a in t["arms"].items()])]
        lines += [f"\n{name}: {a['explanation']}." for name, a in t["arms"].items() if "explanation" in a]
        for k, v in t.get("throughput_ratio", {}).items():
            lines.append(f"\nThroughput ratio {k}: **{v:.2f}x**.")
        lines += ["", "Where a training step's time goes (top operators by self time):", ""]
        for name, a in t["arms"].items():
            lines.append(f"- {name}: " + ", ".join(f"{p['op']} {100 * p['share']:.0f}%" for p in a["profile_top"][:6]))
    return "\n".join(lines) + "\n"


def spread(s: dict) -> str:
    return f"{s['ratio']:.1f}x (p10-p90 {s['p10']:.1f}-{s['p90']:.1f}x)"


def run(args: argparse.Namespace) -> int:
    overrides = (RANDOM_WEIGHTS if args.random_weights else []) + list(args.overrides)
    cfg = load_config(args.config, overrides)
    if args.train_steps < 0:
        raise ConfigError("--train-steps: 0 or more")
    result = run_latency(cfg, args.out, args.train_steps)
    for name, a in result["arms"].items():
        log.info("%s: %s; total p50 %.1f ms, p90 %.1f ms", name,
                 ", ".join(f"{k} p50 {v['p50_ms']:.1f}" for k, v in a["stages"].items()),
                 a["total"]["p50_ms"], a["total"]["p90_ms"])
    log.info("wrote %s", args.out / "latency.json")
    return 0
