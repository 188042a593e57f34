"""One optimizer step's forward and backward passes over its micro-batches (Accelerate).

Two kinds, chosen by the arm and not by its name:

- ``independent_step``: a sample's loss does not depend on the others. With one micro-batch on one
  process, the arm's mean loss. Otherwise each micro-batch contributes its summed loss
  (``loss_sum``) divided by the loss units (samples; tokens for the VLM) of the whole effective
  batch, counted across processes, with gradients accumulated over the micro-steps (synchronised
  on the last one): the loss and gradients of one big batch, whatever the split (tested).
- ``coupled_step`` for losses where a sample's loss depends on the rest of the batch (InfoNCE's
  negatives): GradCache. The embeddings of every micro-batch of every process are computed without
  gradients, gathered, and the loss taken over the whole effective batch; its gradient with respect
  to the embeddings is then pushed back through each micro-batch's recomputed forward. So the loss
  is the same function of the effective batch for any number of processes and micro-steps
  (tested: 1 process x 2 micro-steps == 2 processes == one batch). Each micro-batch's second pass
  replays the RNG state of its first (CPU and device generators), so dropout draws the same masks
  in both and the gradient is that of the loss computed. Which targets are the same text travels
  as 64-bit keys of the captions, gathered as one tensor, not as pickled strings.
"""
from __future__ import annotations

import contextlib
import hashlib

import torch
from torch.distributed.fsdp import FSDPModule

from shared.precision import autocast


def runs_gradcache(couples_batch: bool, accum: int, processes: int) -> bool:
    """Is the loss taken over the effective batch with GradCache? Only for an arm whose loss couples the
    batch, and only when that batch spans several passes (micro-steps or processes): one micro-batch on
    one process already is the effective batch, and the plain loss the same function. The loop and the
    FLOP count (shared/profiling/flops.py) both decide by this."""
    return couples_batch and (accum > 1 or processes > 1)


def _sync_last(accelerator, model, i: int, n: int):
    """Gradients reduced on the last micro-step only: DDP through Accelerate's ``no_sync``; the suite's
    own FSDP2 modules, which Accelerate does not know (its ``no_sync`` was a no-op there and every
    micro-step reduce-scattered), through ``set_requires_gradient_sync``."""
    if i == n - 1:
        return contextlib.nullcontext()
    return _fsdp2_no_sync(model) if isinstance(model, FSDPModule) else accelerator.no_sync(model)


@contextlib.contextmanager
def _fsdp2_no_sync(model: FSDPModule):
    """Gradients accumulate unsharded, unreduced (each rank holds its unit's whole gradient until
    the last micro-step: DDP's memory for the gradients, not FSDP2's shard)."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def independent_step(accelerator, model, arm, micro_batches) -> torch.Tensor:
    if len(micro_batches) == 1 and accelerator.num_processes == 1:  # the effective batch itself
        loss = model(micro_batches[0])
        accelerator.backward(loss)
        return loss.detach()
    units = torch.tensor(float(sum(arm.loss_units(b) for b in micro_batches)), device=accelerator.device)
    if accelerator.num_processes > 1:
        units = accelerator.reduce(units, reduction="sum")
    # the data-parallel all-reduce averages over processes: scale each share back to a sum
    scale = accelerator.num_processes / units.clamp_min(1)
    total = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro_batches):
        with _sync_last(accelerator, model, i, len(micro_batches)):
            share = model(batch, part="loss_sum") * scale
            accelerator.backward(share)
        total += share.detach()
    return total  # averaged over processes by the caller: the effective batch's loss


def caption_keys(captions: list[str], device) -> torch.Tensor:
    """One signed 64-bit key per caption (blake2b: the same on every process, unlike ``hash``)."""
    keys = [int.from_bytes(hashlib.blake2b(c.encode(), digest_size=8).digest(), "little", signed=True)
            for c in captions]
    return torch.tensor(keys, dtype=torch.int64, device=device)


class RngState:
    """The CPU and device random generators' state, to replay a pass's randomness exactly (and to
    carry it in a resume point)."""

    def __init__(self, device: torch.device, saved: dict[str, torch.Tensor] | None = None):
        self.device = torch.device(device)
        if saved is not None:
            self.cpu, self.on_device = saved["cpu"], saved.get("device")
            return
        self.cpu = torch.get_rng_state()
        self.on_device = torch.get_device_module(self.device.type).get_rng_state(self.device) \
            if self.device.type not in ("cpu", "meta") else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.on_device is not None:
            torch.get_device_module(self.device.type).set_rng_state(self.on_device, self.device)

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"cpu": self.cpu} | ({"device": self.on_device} if self.on_device is not None else {})


def coupled_step(accelerator, model, arm, micro_batches) -> torch.Tensor:
    rng, parts = [], []
    with torch.no_grad():
        for batch in micro_batches:
            rng.append(RngState(accelerator.device))
            parts.append(model(batch, part="embeddings"))
    local = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    keys = caption_keys([c for batch in micro_batches for c in batch.captions], accelerator.device)
    if accelerator.num_processes > 1:  # every process's rows, in process order = sample-position order
        local = {k: accelerator.gather(v.contiguous()) for k, v in local.items()}
        keys = accelerator.gather(keys)
    leaves = {k: v.detach().float().requires_grad_() for k, v in local.items()}
    loss = arm.coupled_loss(leaves, keys.tolist())
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)))
    row = accelerator.process_index * sum(len(b) for b in micro_batches)
    for i, batch in enumerate(micro_batches):
        n = len(batch)
        rng[i].restore()  # the same dropout masks as the first pass: the gradient of the loss computed
        with _sync_last(accelerator, model, i, len(micro_batches)):
            out = model(batch, part="embeddings")
            surrogate = sum((out[k].float() * g[row:row + n]).sum() for k, g in grads.items()
                            if g is not None and out[k].requires_grad)
            # the data-parallel all-reduce averages over processes; every process holds the same loss
            accelerator.backward(surrogate * accelerator.num_processes)
        row += n
    return loss.detach()


def one_batch_step(arm, optimizer, batch, precision: str, grad_clip: float = 0.0) -> torch.Tensor:
    """One optimizer step on one micro-batch without an Accelerator, for benchmarks and profiles
    (shared/profiling/steps.py): what the loop does with one process and one micro-step (the plain
    loss under the autocast of ``precision``, a resolved precision, gradient clipping, the optimizer
    step), so a benchmark times the step that training runs."""
    with autocast(precision, next(arm.parameters()).device.type):
        loss = arm(batch)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(arm.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
