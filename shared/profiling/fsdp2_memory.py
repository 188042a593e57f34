"""FSDP2 at N GPUs without the GPUs: the loop's own sharding over a fake process group, measured.

The arm is built at full size on the meta device, given fake storage (``FakeTensorMode``: shapes and
dtypes, nothing allocated), and sharded by ``shared.training.parallel.shard`` over a process group
of torch's ``fake`` backend with N ranks (this process plays rank 0; collectives do nothing). What
is checked and measured is what a GPU run of N processes would build: the units and what stays out
of them, the dtypes, the sharded state dict's keys and shard shapes, and, tracked by torch's
``FSDPMemTracker`` over a training step with the AdamW states in place, the peak memory per
GPU: sharded and gathered parameters, gradients, communication buffers, activations, optimizer states.
Attention runs through the fused-kernel memory stand-in of shared/profiling/memory.py, as on a GPU.
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict

import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.testing._internal.distributed.fake_pg import FakeStore

from shared.arm import build_arm
from shared.precision import autocast
from shared.profiling.memory import GB, fused_attention_everywhere, stand_in_batch
from shared.training.optim import build_optimizer
from shared.training.parallel import shard

CPU = torch.device("cpu")


@contextlib.contextmanager
def fake_world(world: int):
    """A ``fake`` process group of ``world`` ranks (this process is rank 0) and its device mesh."""
    if dist.is_initialized():
        raise RuntimeError("a process group is already running: a fake one cannot be made beside it")
    dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())
    try:
        yield init_device_mesh("cpu", (world,))
    finally:
        dist.destroy_process_group()


def layout_facts(arm: torch.nn.Module, units: list, classes: Counter, trainable: list[str], world: int) -> dict:
    """What the sharding built: the units, what stays replicated, the dtypes and the state dict."""
    sharded = [p for p in arm.parameters() if isinstance(p, DTensor)]
    plain = [n for n, p in arm.named_parameters() if not isinstance(p, DTensor)]
    policy = {u._get_fsdp_state()._mp_policy for u in [*units, arm]}
    state = arm.state_dict()  # trainable only (Arm.state_dict), as the resume points hold it
    # rank 0 holds the first ceil(rows / N) rows of every parameter (dim-0 shards)
    shard_rows_ok = all(v.to_local().shape[0] == math.ceil(v.shape[0] / world) for v in state.values())
    return {
        "world": world, "units": dict(classes), "root_is_sharded": isinstance(arm, FSDPModule),
        "sharded_params": len(sharded), "replicated_params": dict(Counter(n.split(".")[0] for n in plain)),
        "replicated_all_frozen": all(not p.requires_grad for p in arm.parameters() if not isinstance(p, DTensor)),
        "frozen_in_units": sum(1 for u in units for p in u.parameters() if not p.requires_grad),
        "param_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in sharded}),
        "gather_dtype": sorted({str(m.param_dtype or "as stored").removeprefix("torch.") for m in policy}),
        "reduce_dtype": sorted({str(m.reduce_dtype).removeprefix("torch.") for m in policy}),
        "state_dict_keys_are_trainable_names": sorted(state) == sorted(trainable),
        "state_dict_sharded": all(isinstance(v, DTensor) for v in state.values()) and shard_rows_ok,
    }


def _fake_storage(arm: torch.nn.Module) -> None:
    """Fake CPU storage for a meta-built arm. ``to_empty`` replaces each module's parameters on its
    own, which unties a parameter two modules share (the VLM's output layer and token table): the
    ties are restored, as the arm built on a real device has them."""
    holders: dict[int, list] = defaultdict(list)
    for module in arm.modules():
        for key, p in module._parameters.items():
            if p is not None:
                holders[id(p)].append((module, key))
    arm.to_empty(device=CPU)
    for (first, key), *others in holders.values():
        for module, other_key in others:
            module._parameters[other_key] = first._parameters[key]


def _init_adam_states(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's states with a step of zero gradients at learning rate 0 (fake tensors:
    only their existence matters), so one tracked step measures a step of a run under way."""
    lrs = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = 0.0
        for p in g["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = lr


def fsdp2_estimate(ctx, name: str, micro_batch: int, caption_tokens: int, world: int, checkpointing: bool,
                   encoder_params: int = 0) -> dict:
    """Build, shard and track arm ``name`` as ``world`` processes of FSDP2 would (GB per GPU)."""
    arm = build_arm(name, ctx)  # meta: no weights read, nothing allocated
    if checkpointing:
        arm.enable_activation_checkpointing()
    trainable = [n for n, p in arm.named_parameters() if p.requires_grad]
    with fake_world(world) as mesh, FakeTensorMode(allow_non_fake_inputs=True):
        _fake_storage(arm)
        units = shard(arm, mesh)
        classes = Counter(type(u).__name__.removeprefix("FSDP") for u in units)  # fully_shard names it FSDP<Block>
        facts = layout_facts(arm, units, classes, trainable, world)
        optimizer = build_optimizer(arm, ctx.cfg)
        _init_adam_states(optimizer)  # as after a first step: the tracked step then holds the AdamW states
        batch = stand_in_batch(ctx, micro_batch, caption_tokens, CPU)
        tracker = FSDPMemTracker(arm, optimizer)
        arm.train()
        with fused_attention_everywhere(arm), tracker:
            with autocast("bf16", "cpu"):  # the recipe on a GPU: bf16 autocast around the forward
                loss = arm(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        peak = tracker.get_tracker_snapshot("peak")[CPU]
        # the tracker follows the storages FSDP owns and those made while it runs; the frozen parameters
        # left out of the shards (replicated, made before) are added from their sizes
        replicated = sum(p.numel() * p.element_size() for p in arm.parameters() if not isinstance(p, DTensor))
    parts = {str(k).split(".")[-1].lower(): v / GB for k, v in peak.items() if k != "Total" and v}
    parts["frozen_replicated"] = replicated / GB
    parts["encoder"] = 2 * encoder_params / GB  # the frozen online encoder, bf16, outside the arm
    return {**facts, "micro_batch": micro_batch, "checkpointing": checkpointing,
            "peak_gb": sum(parts.values()), "parts_gb": parts}
