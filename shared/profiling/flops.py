"""Training FLOPs per sample: the compute axis of the sample-efficiency curves.

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
    batch = stand_in_batch(ctx, t.micro_batch, tokens, ctx.device)
    with fused_attention_everywhere(arm):
        per_sample = trace_step(arm, batch)["flops"] / t.micro_batch
        gradcache = arm.couples_batch() and t.effective_batch > t.micro_batch * processes
        if gradcache:  # the embeddings pass without gradients, before the one that is backpropagated
            ATTENTION_FLOPS[0] = 0
            with FlopCounterMode(display=False) as count, torch.no_grad():
                arm(batch, part="embeddings")
            per_sample += (count.get_total_flops() + ATTENTION_FLOPS[0]) / t.micro_batch
    return {"train_flops_per_sample": float(per_sample), "caption_tokens": tokens, "gradcache": bool(gradcache)}
