"""``describe --memory``: peak training memory per GPU of each arm under DDP and FSDP2 at the given GPU counts
(shared/profiling/memory.py, shared/profiling/fsdp2_memory.py), and the hours to each milestone."""
from __future__ import annotations

import dataclasses

import torch

from shared.arm import ArmContext
from shared.config import SyntheticConfig, load_config, to_dict
from shared.data.sources import build_dataset
from shared.features.encoder import FrozenEncoder
from shared.lm import load_tokenizer
from shared.pipeline import base_lm_maker, tokenizer_corpus
from shared.precision import Runtime
from shared.profiling.fsdp2_memory import fsdp2_estimate
from shared.profiling.memory import GB, calibrate, encoder_flops, estimate_arm
from shared.training.parallel import micro_layout
from shared.training.schedule import MilestonePlan

CALIBRATION = ["lm.hidden_size=256", "lm.intermediate_size=1024", "lm.num_layers=4", "lm.num_heads=4",
               "lm.num_kv_heads=4", "lm.vocab_size=null", "lm.weights=null", "lm.tokenizer=captions",
               "jepa.layers=[2,4]", "jepa.y_encoder.weights=null", "jepa.y_encoder.kind=minilm", "jepa.shared_dim=null"]


def stand_in_context(cfg, device: str, runtime: Runtime | None = None):
    """The arm context of ``cfg`` at full size on ``device``, with a captions tokenizer standing in
    for the LM's own (only token counts matter here, and no hub is needed); ``runtime``: where steps
    are run (the GPU check), none for estimates."""
    synthetic = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="synthetic", synthetic=SyntheticConfig()),
                                    lm=dataclasses.replace(cfg.lm, tokenizer="captions"))
    tokenizer = load_tokenizer(synthetic, tokenizer_corpus(synthetic, build_dataset(synthetic)))
    encoder = FrozenEncoder.from_config(cfg, device=torch.device("meta"))
    ctx = ArmContext(cfg=cfg, tokenizer=tokenizer, visual_dim=encoder.dim,
                     visual_tokens=encoder.tokens_per_clip(cfg.data.frames), device=torch.device(device),
                     make_base_lm=base_lm_maker(cfg, tokenizer), runtime=runtime)
    return ctx, sum(p.numel() for p in encoder.model.parameters())


H100_BF16_DENSE = 989e12  # FLOP/s, NVIDIA's datasheet figure for the SXM part
GPU_MEMORY_GB = 80  # an H100 / A100 80 GB
UTILISATION = 0.4  # assumed share of the bf16 peak reached on the FLOPs a step executes (not measured)
# one GPU of each memory size (datasheet bf16 dense tensor peaks, no sparsity): one_gpu.yaml's table
ONE_GPU_KINDS = {24: ("A10", 125e12), 48: ("RTX A6000", 154.8e12), 80: ("A100 80GB", 312e12)}
ONE_GPU_MICRO = (8, 16, 32, 64, 128)


@dataclasses.dataclass
class TracedArms:
    ctx: ArmContext  # full size, on the meta device
    encoder_params: int
    on_gpu: int  # the encoder's parameters on the GPU: all in online mode, none with cached features
    encoder_flops: float  # the online encoder's forward FLOPs per sample (0 with cached features)
    arms: dict[str, dict[bool, dict]]  # arm -> activation checkpointing -> estimate_arm's result


def traced_arms(cfg, gpus: int, caption_tokens: int, checkpointing=(False, True)) -> TracedArms:
    """Every arm of ``cfg`` traced at full size on the meta device (``train.micro_batch`` a process, ``gpus``
    processes), per activation-checkpointing setting: what the memory and hours estimates start from."""
    ctx, encoder_params = stand_in_context(cfg, "meta")
    on_gpu = encoder_params if cfg.encoder.features == "online" else 0
    enc_flops = encoder_flops(FrozenEncoder.from_config(cfg, device=torch.device("meta")), cfg.data.frames) \
        if on_gpu else 0.0
    arms = {name: {ckpt: estimate_arm(ctx, name, cfg.train.micro_batch, caption_tokens, gpus, on_gpu, ckpt)
                   for ckpt in checkpointing} for name in cfg.arms}
    return TracedArms(ctx, encoder_params, on_gpu, enc_flops, arms)


def memory(cfg, gpus: list[int], caption_tokens: int, with_calibration: bool, utilisation: float = UTILISATION) -> dict:
    traced = traced_arms(cfg, gpus[0], caption_tokens)
    ctx, on_gpu, enc_flops, arms = traced.ctx, traced.on_gpu, traced.encoder_flops, traced.arms
    t = cfg.train
    layouts = {name: {n: _layout(ctx, cfg, name, n, caption_tokens, on_gpu, arms[name]) for n in gpus}
               for name in cfg.arms}
    time = {name: {n: _hours(cfg, arms[name], n, enc_flops, utilisation) for n in gpus} for name in cfg.arms}
    out = {"micro_batch": t.micro_batch, "caption_tokens": caption_tokens, "gpus": gpus, "gpu_memory_gb": GPU_MEMORY_GB,
           "encoder_flops_per_sample": enc_flops, "gpu_peak_flops": H100_BF16_DENSE, "utilisation": utilisation,
           "visual_tokens": ctx.visual_tokens, "encoder_on_gpu_params": on_gpu, "parallel": t.parallel,
           "activation_checkpointing": t.activation_checkpointing, "layouts": layouts, "time": time,
           "arms": {n: {"without_checkpointing": a[False], "with_checkpointing": a[True]} for n, a in arms.items()}}
    if 1 in gpus:
        out["one_gpu"] = one_gpu(cfg, arms, traced.encoder_params, FrozenEncoder.from_config(cfg, device=torch.device("meta")),
                                 utilisation)
    if with_calibration:
        small = load_config(None, [f"{k}={v}" for k, v in _flat(to_dict(cfg)).items() if _keep(k)] + CALIBRATION)
        ctx_small, _ = stand_in_context(small, "cpu")
        out["calibration"] = {"config": CALIBRATION, "micro_batch": 4,
                              "arms": {n: calibrate(ctx_small, n, 4, caption_tokens) for n in cfg.arms}}
    return out


def _layout(ctx, cfg, name: str, gpus: int, caption_tokens: int, encoder_params: int, analytic: dict) -> dict:
    """Arm ``name`` at ``gpus`` processes as the preset launches it: the per-process micro-batch, DDP
    (traced and counted) and FSDP2 (the loop's sharding, tracked over a fake process group)."""
    t = cfg.train
    micro, accum = micro_layout(t.effective_batch, t.micro_batch, gpus)
    ckpt = t.activation_checkpointing
    ddp = analytic[ckpt] if micro == t.micro_batch else \
        estimate_arm(ctx, name, micro, caption_tokens, gpus, encoder_params, ckpt)
    fsdp2 = fsdp2_estimate(ctx, name, micro, caption_tokens, gpus, ckpt, encoder_params)
    return {"gpus": gpus, "micro_batch": micro, "accumulation": accum, "checkpointing": ckpt,
            "ddp_gb": ddp["ddp_gb"], "fsdp2_gb": fsdp2["peak_gb"], "fsdp2": fsdp2,
            "fits": {"ddp": ddp["ddp_gb"] <= GPU_MEMORY_GB, "fsdp2": fsdp2["peak_gb"] <= GPU_MEMORY_GB}}


def _hours(cfg, analytic: dict, gpus: int, encoder_flops_per_sample: float, utilisation: float) -> dict:
    """Hours to each milestone on ``gpus`` H100s, counting what a step executes: forward and backward,
    checkpointing's recomputed forward, GradCache's gradient-free first forward (arms whose loss spans
    the effective batch, whenever it spans several passes) and the online encoder's forward. The MFU
    stated counts model FLOPs only (no recompute, no second forward): what the assumed utilisation
    of executed FLOPs amounts to."""
    t = cfg.train
    _, accum = micro_layout(t.effective_batch, t.micro_batch, gpus)
    plain, ckpt = analytic[False], analytic[True]
    model = plain["train_flops_per_sample"]
    parts = {"forward_backward": model, "encoder_forward": encoder_flops_per_sample,
             "recompute": ckpt["train_flops_per_sample"] - model if t.activation_checkpointing else 0.0,
             "gradcache_forward": plain["forward_flops_per_sample"]
             if plain["couples_batch"] and (accum > 1 or gpus > 1) else 0.0}
    executed = sum(parts.values())
    rate = gpus * H100_BF16_DENSE * utilisation
    return {"flops_per_sample": parts, "executed_flops_per_sample": executed,
            "mfu": utilisation * (model + encoder_flops_per_sample) / executed,
            # the clips each GPU consumes at that pace: what its loader workers must decode (describe/data_rate.py)
            "clips_per_s_per_gpu": H100_BF16_DENSE * utilisation / executed,
            "hours_to_milestone": {m: m * executed / rate / 3600 for m in t.milestones}}


def one_gpu(cfg, analytic: dict, encoder_params: int, encoder, utilisation: float) -> dict:
    """What fits one GPU of 24, 48 and 80 GB, and the hours it takes: every micro-batch dividing the
    effective batch, activation checkpointing off and on, features cached or computed online. Memory:
    the DDP estimate at the preset's micro-batch (traced), activations scaled linearly to the others
    (same sequence, batch-proportional tensors); online adds the frozen bf16 encoder. Hours: the
    whole run (trunk and cooldown branches, ``MilestonePlan.updates``), one seed, one arm, at
    ``utilisation`` of the GPU's bf16 peak, counting what a step executes (as ``_hours``); the
    fastest configuration that fits is chosen per GPU (cached features, checkpointing off, fewest
    passes first)."""
    t = cfg.train
    samples = MilestonePlan.of(t).updates * t.effective_batch
    enc_flops = encoder_flops(encoder, cfg.data.frames)
    rows = []
    for micro in (m for m in ONE_GPU_MICRO if m <= t.effective_batch and t.effective_batch % m == 0):
        for ckpt in (False, True):
            for online in (False, True):
                row = {"micro_batch": micro, "accumulation": t.effective_batch // micro, "checkpointing": ckpt,
                       "features": "online" if online else "cache", "arms": {}}
                for name, a in analytic.items():
                    e, plain = a[ckpt], a[False]
                    parts = {k: v for k, v in e["ddp_parts_gb"].items() if k not in ("activations", "encoder")}
                    gb = sum(parts.values()) + e["activation_gb"] * micro / e["micro_batch"] + \
                        (2 * encoder_params / GB if online else 0.0)
                    executed = plain["train_flops_per_sample"] + (e["train_flops_per_sample"] - plain["train_flops_per_sample"]) + \
                        (plain["forward_flops_per_sample"] if plain["couples_batch"] and micro < t.effective_batch else 0.0) + \
                        (enc_flops if online else 0.0)
                    row["arms"][name] = {"gb": gb, "executed_flops_per_sample": executed,
                                         "hours": {size: samples * executed / (peak * utilisation) / 3600
                                                   for size, (_, peak) in ONE_GPU_KINDS.items()}}
                rows.append(row)
    best = {}
    for size in ONE_GPU_KINDS:
        fits = [r for r in rows if all(a["gb"] <= size for a in r["arms"].values())]
        fits.sort(key=lambda r: (sum(a["hours"][size] for a in r["arms"].values()), r["accumulation"]))
        best[size] = fits[0] if fits else None
    return {"kinds": {size: {"name": n, "peak_flops": p} for size, (n, p) in ONE_GPU_KINDS.items()},
            "training_samples": samples, "encoder_flops_per_sample": enc_flops, "utilisation": utilisation,
            "feature_cache_gb_per_10k_clips": feature_cache_bytes(cfg, encoder) * 10_000 / GB,
            "rows": rows, "best": best}


def feature_cache_bytes(cfg, encoder) -> int:
    """Bytes of one clip in the feature store: its pooled tokens x the encoder's width x ``encoder.cache_dtype``."""
    width = {"float32": 4, "float16": 2, "bfloat16": 2}[cfg.encoder.cache_dtype]
    return encoder.tokens_per_clip(cfg.data.frames) * encoder.dim * width


def one_gpu_text(o: dict, arms: list[str]) -> list[str]:
    u = 100 * o["utilisation"]
    L = ["", f"One GPU: the whole run ({o['training_samples'] / 1e6:.2f}M training samples with the cooldown branches), one "
         f"seed, per arm, at {u:.0f}% of the card's bf16 dense peak (assumed, not measured); GB per GPU (DDP, one process; "
         "activations scaled from the traced micro-batch):",
         f"{'micro-batch':>11} {'ckpt':>4} {'features':>8} " + " ".join(f"{a + ' GB':>8} {a + ' TFLOP/sample':>17}" for a in arms)
         + "  fits"]
    for r in o["rows"]:
        fits = [f"{s}" for s in o["kinds"] if all(a["gb"] <= int(s) for a in r["arms"].values())]
        L.append(f"{r['micro_batch']:>8} x{r['accumulation']:<2} {'yes' if r['checkpointing'] else 'no':>4} {r['features']:>8} "
                 + " ".join(f"{r['arms'][a]['gb']:>8.1f} {r['arms'][a]['executed_flops_per_sample'] / 1e12:>17.3f}"
                            for a in arms) + "  " + (",".join(fits) + " GB" if fits else "none"))
    L.append(f"{'GPU':<20} {'micro-batch':>11} {'ckpt':>4} {'features':>8} " + " ".join(f"{a + ' GB':>8} {a + ' h':>7}" for a in arms)
             + f" {'both arms':>9}")
    for size, r in o["best"].items():
        label = f"{size} GB ({o['kinds'][size]['name']})"
        if r is None:
            L.append(f"{label:<20} nothing fits")
            continue
        L.append(f"{label:<20} {r['micro_batch']:>8} x{r['accumulation']:<2} {'yes' if r['checkpointing'] else 'no':>4} "
                 f"{r['features']:>8} " + " ".join(f"{r['arms'][a]['gb']:>8.1f} {r['arms'][a]['hours'][size]:>7.2f}" for a in arms)
                 + f" {sum(r['arms'][a]['hours'][size] for a in arms):>7.2f} h")
    L.append(f"Features cached: {o['feature_cache_gb_per_10k_clips']:.2f} GB per 10k clips in the feature store; the "
             f"encoder's forward, {o['encoder_flops_per_sample'] / 1e12:.3f} TFLOP a clip, is then paid once per clip, "
             "not per sample.")
    return L


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = "null" if v is None else v
    return out


def _keep(key: str) -> bool:
    return key.startswith(("data.frames", "encoder.", "vlm.", "jepa.loss", "jepa.temperature"))


def memory_text(m: dict) -> str:
    gib = m["gpu_memory_gb"]
    L = [f"Peak training memory per GPU as launched: effective batch split over the GPUs, micro-batch per process "
         f"at most {m['micro_batch']}, {m['visual_tokens']} visual tokens + query + {m['caption_tokens']}-token caption, "
         f"activation checkpointing {'on' if m['activation_checkpointing'] else 'off'}, bf16 autocast over fp32 weights, "
         "fp32 gradient reductions, AdamW.",
         "DDP: traced activations + exact state counts (shared/profiling/memory.py). FSDP2: the loop's own sharding over a "
         "fake process group, tracked by torch's FSDPMemTracker (shared/profiling/fsdp2_memory.py).", "",
         f"{'arm':<6} {'GPUs':>5} {'micro-batch':>11} {'DDP':>9} {'FSDP2':>9}  fits {gib} GB (train.parallel={m['parallel']})"]
    for name, per in m["layouts"].items():
        for n, r in per.items():
            L.append(f"{name:<6} {n:>5} {r['micro_batch']:>8} x{r['accumulation']} {r['ddp_gb']:>6.1f} GB "
                     f"{r['fsdp2_gb']:>6.1f} GB  {'yes' if r['fits'][m['parallel']] else 'NO'}")
    L += ["", f"At the preset's micro-batch {m['micro_batch']}, with and without activation checkpointing (analytic; "
          f"FSDP over {m['gpus'][0]}):",
          f"{'arm':<6} {'trainable':>14} {'checkpointing':>13} {'activations':>12} {'DDP':>9} {'FSDP':>9}"]
    for name, a in m["arms"].items():
        for key, label in (("without_checkpointing", "no"), ("with_checkpointing", "yes")):
            e = a[key]
            L.append(f"{name:<6} {e['trainable_params']:>14,} {label:>13} {e['activation_gb']:>9.1f} GB "
                     f"{e['ddp_gb']:>6.1f} GB {e['fsdp_gb']:>6.1f} GB")
    L += ["", f"Training time on H100s (bf16 dense peak {m['gpu_peak_flops'] / 1e12:.0f} TFLOP/s), assuming "
          f"{100 * m['utilisation']:.0f}% of peak on the FLOPs a step executes (an assumption, not a measurement); "
          "TFLOP per sample = forward+backward + recompute + GradCache's first forward + online encoder:"]
    for name, per in m["time"].items():
        for n, h in per.items():
            f = {k: v / 1e12 for k, v in h["flops_per_sample"].items()}
            L.append(f"  {name} on {n}: {h['executed_flops_per_sample'] / 1e12:.2f} TFLOP/sample ({f['forward_backward']:.2f} + "
                     f"{f['recompute']:.2f} + {f['gradcache_forward']:.2f} + {f['encoder_forward']:.2f}), MFU "
                     f"{100 * h['mfu']:.0f}%; " + ", ".join(f"{int(ms) / 1e6:g}M {hr:.1f} h"
                                                          for ms, hr in h["hours_to_milestone"].items()))
    if "one_gpu" in m:
        L += one_gpu_text(m["one_gpu"], list(m["arms"]))
    if "calibration" in m:
        c = m["calibration"]
        L += ["", f"Calibration (reduced size, micro-batch {c['micro_batch']}, fp32 CPU step, tracked allocations):"]
        for name, r in c["arms"].items():
            rss = (f"; peak RSS of the step {r['cpu_rss'] * 1000:.1f} MB: error {100 * r['error_vs_rss']:+.1f}%"
                   if r.get("cpu_rss") else "")
            L.append(f"  {name}: meta-traced {r['meta'] * 1000:.1f} MB vs real step tracked {r['cpu'] * 1000:.1f} MB: "
                     f"error {100 * r['error']:+.1f}%{rss}")
    return "\n".join(L)
