"""Training FLOPs per sample, and the whole compute of a checkpoint: the sample-efficiency curves' axes.

Counted as ``describe --memory`` counts them (shared/profiling/memory.py): the arm built at full size
on the meta device, one micro-batch of the run's shapes run forward and backward under torch's FLOP
counter, attention through the fused-kernel stand-in (whose FLOPs are added exactly). The caption
length is the training captions' mean in the shared tokenizer. What the step does not compute is
not counted: the frozen X-encoder when its features are cached (shared by every arm), a frozen
Y-encoder's targets when they are cached (embedded once per distinct caption, before training).
GradCache's extra forward pass (coupled arms over several micro-batches or processes) is added.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from shared.arm import build_arm
from shared.training.parallel import micro_layout
from shared.training.step import runs_gradcache
from shared.profiling.memory import ATTENTION_FLOPS, fused_attention_everywhere, stand_in_batch, trace_step


def mean_caption_tokens(prepared, limit: int = 2000) -> int:
    captions = list(prepared.dataset.split("train").captions(limit))
    ids = prepared.tokenizer(captions, add_special_tokens=False)["input_ids"]
    return max(1, round(float(np.mean([len(t) for t in ids]))))


def train_flops_per_sample(prepared, arm_name: str, processes: int = 1) -> dict:
    """{"train_flops_per_sample", "caption_tokens", "gradcache"}: forward + backward FLOPs of one
    training sample of ``arm_name`` as the run's loop computes it."""
    t = prepared.cfg.train
    ctx = prepared.context("meta")
    torch.manual_seed(0)
    arm = build_arm(arm_name, ctx).train()
    tokens = mean_caption_tokens(prepared)
    micro, accum = micro_layout(t.effective_batch, t.micro_batch, processes)  # a process's pass, as the loop runs it
    batch = stand_in_batch(ctx, micro, tokens, ctx.device)
    with fused_attention_everywhere(arm):
        per_sample = trace_step(arm, batch)["flops"] / micro
        gradcache = runs_gradcache(arm.couples_batch(), accum, processes)  # the loop's own predicate
        if gradcache:  # the embeddings pass without gradients, before the one that is backpropagated
            ATTENTION_FLOPS[0] = 0
            with FlopCounterMode(display=False) as count, torch.no_grad():
                arm(batch, part="embeddings")
            per_sample += (count.get_total_flops() + ATTENTION_FLOPS[0]) / micro
    captions = list(dict.fromkeys(prepared.dataset.split("train").captions(256)))
    return {"train_flops_per_sample": float(per_sample), "caption_tokens": tokens, "gradcache": bool(gradcache),
            "encoder_flops_per_sample": encoder_flops_per_clip(prepared.cfg),
            **{k: float(v) for k, v in arm.side_flops(captions).items()}}


def encoder_flops_per_clip(cfg) -> float:
    """Forward FLOPs of the frozen X-encoder (a ViT) on one clip's frames, from its shape on the meta
    device: 2 x parameters x tokens for the matrix products plus 4 x depth x tokens^2 x width for
    attention, per frame (timm's PE forward cannot run on meta: a data-dependent ``.item()``). Both arms
    pay it per sample when features are computed in the step (``online``, the paper-scale mode); a
    feature cache pays it once per clip instead, the same for every arm."""
    from shared.features.encoder import FrozenEncoder

    model = FrozenEncoder(cfg.encoder, "meta").model
    grid = model.patch_embed.grid_size
    tokens = int(grid[0]) * int(grid[1]) + int(getattr(model, "num_prefix_tokens", 0))
    params = sum(p.numel() for p in model.parameters())
    per_frame = 2 * params * tokens + 4 * len(model.blocks) * tokens ** 2 * model.embed_dim
    return float(per_frame * cfg.data.frames)


def compute_breakdown(flops: dict, samples: int, decoder_samples: float | None, distinct_captions: int,
                      text_pretraining: float) -> dict:
    """The whole compute behind a checkpoint (FLOPs): the trained step's, the frozen encoder's (per sample
    seen, as online features), the arm's side models' (targets embedded once per distinct training
    caption; a Y-decoder trained on ``decoder_samples`` captions), the text pretraining its start used."""
    out = {"train_flops": flops["train_flops_per_sample"] * samples,
           "encoder_flops": flops.get("encoder_flops_per_sample", 0.0) * samples,
           "target_flops": flops.get("target_flops_per_caption", 0.0) * distinct_captions,
           "decoder_flops": flops.get("decoder_flops_per_caption", 0.0) * (decoder_samples or 0),
           "text_pretraining_flops": text_pretraining}
    out["total_flops"] = sum(out.values())
    return out
