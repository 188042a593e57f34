"""Training memory per GPU, estimated without allocating anything.

Method: the arm is built at full size on the meta device (shapes, no storage) and one training
micro-batch is run forward and backward there, while a dispatch mode tracks the bytes of every
storage created and freed: the peak of live activation bytes, exactly as the graph would hold
them. Attention runs through a stand-in with the memory of a fused kernel (flash/memory-efficient:
it keeps q, k, v, the output and a log-sum-exp row, never the L x L weights), which is what SDPA
uses on a GPU. Model weights are traced in bf16, as autocast computes. Added exactly from counts:
fp32 weights, fp32 gradients and the two AdamW moments (DDP keeps the gradients in its all-reduce
buckets, ``gradient_as_bucket_view``: no second copy), autocast's bf16 copies of the trainable
weights, and the frozen encoder in online mode. The analytic FSDP column divides the weights,
gradients and optimizer states by N and adds two gathered layers.

FSDP2 as the loop lays it out (``fsdp2_estimate``): the arm is sharded with the loop's own
``shard`` over a fake process group of N ranks (torch's ``fake`` backend: no communication, no
other process) with fake tensors (shapes, no storage), and one training step (two, so the AdamW
states exist) is tracked by torch's ``FSDPMemTracker``: sharded and gathered parameters, gradients,
all-gather and reduce-scatter buffers, activations, optimizer states, per GPU.
The error of the traced activations against a real fp32 CPU step at a reduced size is measured by
``calibrate`` (``describe --memory --calibrate``): against the same tracker on real tensors, and
against the process's peak resident memory during the step (the kernel's own count).
"""
from __future__ import annotations

import contextlib
import dataclasses
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from transformers import AttentionInterface, PreTrainedModel

from shared.arm import Batch, build_arm

GB = 1e9


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages created while active (views share their base's storage)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


ATTENTION_FLOPS = [0]  # FLOPs of the stand-in attention calls (its matmuls are not dispatched): 2x forward's in backward


class _FusedAttentionMemory(torch.autograd.Function):
    """The memory of a fused attention kernel: saves q, k, v, the output and [B, H, L] log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v):
        b, h, lq, d = q.shape
        ctx.flops = 4 * b * h * lq * k.shape[-2] * d  # Q K^T and the weighted sum of V
        ATTENTION_FLOPS[0] += ctx.flops
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        ATTENTION_FLOPS[0] += 2 * ctx.flops
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def fused_attention_memory(module, query, key, value, attention_mask, *args, **kwargs):
    return _FusedAttentionMemory.apply(query, key, value).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def fused_attention_everywhere(model: torch.nn.Module):
    """Route every transformers attention of ``model`` through the memory stand-in."""
    AttentionInterface.register("memory_model", fused_attention_memory)
    configs = {id(m.config): m.config for m in model.modules() if isinstance(m, PreTrainedModel)}
    before = {k: c._attn_implementation for k, c in configs.items()}
    for c in configs.values():
        c._attn_implementation = "memory_model"
    try:
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]


def param_bytes(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in module.parameters()) - trainable


def largest_layer(module: torch.nn.Module) -> int:
    sizes = [sum(p.numel() for p in m.parameters()) for m in module.modules() if type(m).__name__.endswith("Layer")]
    return max(sizes, default=0)


def trace_step(arm, batch, count_flops: bool = True) -> dict:
    """Peak live bytes of one forward + backward (activations, transient tensors, parameter grads),
    and its FLOPs as executed (torch's counter plus the stand-in attention's; with
    activation checkpointing on, the recomputed forward is counted too) and those of a forward alone
    (what GradCache's first, gradient-free pass costs)."""
    with LiveBytes() as live:  # alone: the FLOP counter's module tracking would keep tensors alive
        loss = arm(batch)
        forward_peak = live.peak
        loss.backward()
        del loss
    grads = sum(p.numel() * p.element_size() for p in arm.parameters() if p.requires_grad)
    arm.zero_grad(set_to_none=True)
    out = {"forward_peak": forward_peak, "step_peak": live.peak, "grads_traced": grads}
    if count_flops:
        ATTENTION_FLOPS[0] = 0
        with FlopCounterMode(display=False) as flops:
            arm(batch).backward()
        arm.zero_grad(set_to_none=True)
        out["flops"] = flops.get_total_flops() + ATTENTION_FLOPS[0]
        ATTENTION_FLOPS[0] = 0
        with FlopCounterMode(display=False) as flops, torch.no_grad():
            arm(batch)
        out["forward_flops"] = flops.get_total_flops() + ATTENTION_FLOPS[0]
    return out


def encoder_flops(encoder, frames: int) -> int:
    """Forward FLOPs of the frozen encoder on one clip (meta device)."""
    x = torch.zeros(frames, encoder.cfg.image_size, encoder.cfg.image_size, 3, dtype=torch.uint8, device="meta")
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        encoder.model.forward_features(x.permute(0, 3, 1, 2).float())
    return flops.get_total_flops()


def stand_in_batch(ctx, micro_batch: int, caption_tokens: int, device):
    """A batch of the preset's shapes: visual tokens of the encoder, the query, a caption of
    ``caption_tokens`` tokens (" a" repeated: one token each in a byte-level BPE)."""
    caption = " ".join(["a"] * caption_tokens)
    return Batch(ids=["x"] * micro_batch, queries=[ctx.cfg.data.query] * micro_batch, captions=[caption] * micro_batch,
                 visual=torch.zeros(micro_batch, ctx.visual_tokens, ctx.visual_dim, device=device))


def estimate_arm(ctx, name: str, micro_batch: int, caption_tokens: int, gpus: int, encoder_params: int,
                 checkpointing: bool, count_flops: bool = True) -> dict:
    """GB per GPU for DDP and FSDP over ``gpus``, with the parts they are made of (and the FLOPs per
    sample unless ``count_flops`` is off: memory alone traces once instead of three times)."""
    arm = build_arm(name, ctx)
    trainable, frozen = param_bytes(arm)
    layer = largest_layer(arm)
    arm = arm.to(torch.bfloat16).train()  # autocast computes in bf16: activations are traced at that width
    if checkpointing:
        arm.enable_activation_checkpointing()
    with fused_attention_everywhere(arm):
        traced = trace_step(arm, stand_in_batch(ctx, micro_batch, caption_tokens, ctx.device), count_flops)
    activations = traced["step_peak"] - traced["grads_traced"]  # grads are counted in fp32 below
    states = {"weights_fp32": 4 * (trainable + frozen), "grads_fp32": 4 * trainable, "adam_moments": 8 * trainable}
    encoder = 2 * encoder_params  # the frozen encoder, bf16, on the GPU in online mode
    ddp = {**states, "autocast_copies": 2 * trainable, "activations": activations, "encoder": encoder}
    fsdp = {**{k: v / gpus for k, v in states.items()}, "gathered_layers": 2 * 4 * layer, "activations": activations,
            "encoder": encoder}  # layers gathered in fp32: the recipe (shared/training/parallel.py)
    return {"trainable_params": trainable, "frozen_params": frozen, "micro_batch": micro_batch,
            "train_flops_per_sample": traced.get("flops", 0) / micro_batch,
            "forward_flops_per_sample": traced.get("forward_flops", 0) / micro_batch, "couples_batch": arm.couples_batch(),
            "checkpointing": checkpointing, "activation_gb": activations / GB,
            "forward_peak_gb": traced["forward_peak"] / GB,
            "ddp_gb": sum(ddp.values()) / GB, "fsdp_gb": sum(fsdp.values()) / GB, "gpus": gpus,
            "ddp_parts_gb": {k: v / GB for k, v in ddp.items()}, "fsdp_parts_gb": {k: v / GB for k, v in fsdp.items()}}


def calibrate(ctx_real, name: str, micro_batch: int, caption_tokens: int) -> dict:
    """Traced activation bytes on meta vs a real fp32 CPU step of the same reduced model (tracked
    allocations), without checkpointing: the estimate's error at a size measurable here."""
    out = {}
    for device in ("meta", "cpu"):
        ctx = dataclasses.replace(ctx_real, device=torch.device(device))
        torch.manual_seed(0)
        arm = build_arm(name, ctx).train()
        batch = stand_in_batch(ctx, micro_batch, caption_tokens, ctx.device)
        if device == "meta":
            with fused_attention_everywhere(arm):
                traced = trace_step(arm, batch, count_flops=False)
        else:
            before = _reset_peak_rss()
            traced = trace_step(arm, batch, count_flops=False)
            out["cpu_rss"] = (_peak_rss() - before - traced["grads_traced"]) / GB if before is not None else None
        out[device] = (traced["step_peak"] - traced["grads_traced"]) / GB
    out["error"] = out["meta"] / out["cpu"] - 1
    if out.get("cpu_rss"):
        out["error_vs_rss"] = out["meta"] / out["cpu_rss"] - 1
    return out


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int | None:
    """Current RSS after resetting the kernel's peak-RSS mark (Linux), or None where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status("VmRSS:")


def _peak_rss() -> int:
    return _status("VmHWM:") or 0
