"""``describe --memory``: estimated peak training memory per GPU of each arm (shared/training/memory.py)."""
from __future__ import annotations

import dataclasses

import torch

from shared.arm import ArmContext
from shared.config import SyntheticConfig, load_config, to_dict
from shared.data.sources import build_dataset
from shared.features.encoder import FrozenEncoder
from shared.lm import load_tokenizer
from shared.pipeline import tokenizer_corpus
from shared.training.memory import calibrate, encoder_flops, estimate_arm

CALIBRATION = ["lm.hidden_size=256", "lm.intermediate_size=1024", "lm.num_layers=4", "lm.num_heads=4",
               "lm.num_kv_heads=4", "lm.vocab_size=null", "lm.weights=null", "lm.tokenizer=captions",
               "jepa.layers=[2,4]", "jepa.y_encoder.weights=null", "jepa.y_encoder.kind=minilm", "jepa.shared_dim=null"]


def stand_in_context(cfg, device: str):
    """The arm context of ``cfg`` at full size on ``device``, with a captions tokenizer standing in
    for the LM's own (only token counts matter here, and no hub is needed)."""
    synthetic = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="synthetic", synthetic=SyntheticConfig()),
                                    lm=dataclasses.replace(cfg.lm, tokenizer="captions"))
    tokenizer = load_tokenizer(synthetic, tokenizer_corpus(synthetic, build_dataset(synthetic)))
    encoder = FrozenEncoder.from_config(cfg, device=torch.device("meta"))
    ctx = ArmContext(cfg=cfg, tokenizer=tokenizer, visual_dim=encoder.dim,
                     visual_tokens=encoder.tokens_per_clip(cfg.data.frames), device=torch.device(device))
    return ctx, sum(p.numel() for p in encoder.model.parameters())


H100_BF16_DENSE = 989e12  # FLOP/s, NVIDIA's datasheet figure for the SXM part


def memory(cfg, gpus: int, caption_tokens: int, with_calibration: bool, mfu: float = 0.4) -> dict:
    ctx, encoder_params = stand_in_context(cfg, "meta")
    on_gpu = encoder_params if cfg.encoder.features == "online" else 0
    enc_flops = encoder_flops(FrozenEncoder.from_config(cfg, device=torch.device("meta")), cfg.data.frames) \
        if on_gpu else 0
    arms = {name: {ckpt: estimate_arm(ctx, name, cfg.train.micro_batch, caption_tokens, gpus, on_gpu, ckpt)
                   for ckpt in (False, True)} for name in cfg.arms}
    rate = gpus * H100_BF16_DENSE * mfu
    hours = {n: {m: m * (a[False]["train_flops_per_sample"] + enc_flops) / rate / 3600 for m in cfg.train.milestones}
             for n, a in arms.items()}
    out = {"micro_batch": cfg.train.micro_batch, "caption_tokens": caption_tokens, "gpus": gpus,
           "encoder_flops_per_sample": enc_flops, "assumed_mfu": mfu, "gpu_peak_flops": H100_BF16_DENSE,
           "hours_to_milestone": hours,
           "visual_tokens": ctx.visual_tokens, "encoder_on_gpu_params": on_gpu,
           "arms": {n: {"without_checkpointing": a[False], "with_checkpointing": a[True]} for n, a in arms.items()}}
    if with_calibration:
        small = load_config(None, [f"{k}={v}" for k, v in _flat(to_dict(cfg)).items() if _keep(k)] + CALIBRATION)
        ctx_small, _ = stand_in_context(small, "cpu")
        out["calibration"] = {"config": CALIBRATION, "micro_batch": 4,
                              "arms": {n: calibrate(ctx_small, n, 4, caption_tokens) for n in cfg.arms}}
    return out


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
    L = [f"Estimated peak training memory per GPU: micro-batch {m['micro_batch']}, {m['visual_tokens']} visual tokens "
         f"+ query + {m['caption_tokens']}-token caption, bf16 autocast, AdamW; FSDP over {m['gpus']} GPUs.",
         "(activations traced on the meta device with fused attention; states counted exactly; shared/training/memory.py)", "",
         f"{'arm':<6} {'trainable':>14} {'checkpointing':>13} {'activations':>12} {'DDP':>9} {'FSDP':>9}"]
    for name, a in m["arms"].items():
        for key, label in (("without_checkpointing", "no"), ("with_checkpointing", "yes")):
            e = a[key]
            L.append(f"{name:<6} {e['trainable_params']:>14,} {label:>13} {e['activation_gb']:>9.1f} GB "
                     f"{e['ddp_gb']:>6.1f} GB {e['fsdp_gb']:>6.1f} GB")
    L += ["", f"Training FLOPs per sample (forward + backward; + frozen encoder forward "
          f"{m['encoder_flops_per_sample'] / 1e12:.2f} TFLOP in online mode) and hours to each milestone on "
          f"{m['gpus']} H100 at {100 * m['assumed_mfu']:.0f}% MFU (an assumption, not a measurement):"]
    for name, a in m["arms"].items():
        per = a["without_checkpointing"]["train_flops_per_sample"] / 1e12
        L.append(f"  {name}: {per:.2f} TFLOP/sample; " + ", ".join(
            f"{int(ms) / 1e6:g}M {h:.1f} h" for ms, h in m["hours_to_milestone"][name].items()))
    if "calibration" in m:
        c = m["calibration"]
        L += ["", f"Calibration (reduced size, micro-batch {c['micro_batch']}, fp32 CPU step, tracked allocations):"]
        for name, r in c["arms"].items():
            rss = (f"; peak RSS of the step {r['cpu_rss'] * 1000:.1f} MB: error {100 * r['error_vs_rss']:+.1f}%"
                   if r.get("cpu_rss") else "")
            L.append(f"  {name}: meta-traced {r['meta'] * 1000:.1f} MB vs real step tracked {r['cpu'] * 1000:.1f} MB: "
                     f"error {100 * r['error']:+.1f}%{rss}")
    return "\n".join(L)
