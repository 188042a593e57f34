"""How a trainee is laid out over processes (``train.parallel``), and the one numeric recipe of every layout.

- ``ddp``: Accelerate prepares the model and its optimizer together (DistributedDataParallel, with
  the gradients stored in the all-reduce buckets); resume points through ``accelerator.save_state``.
- ``fsdp2``: torch's ``fully_shard`` applied here, to every trainable transformer block of the arm
  (the block classes its transformers models declare, ``_no_split_modules``), then to the arm as the
  root unit; frozen parameters outside the blocks (a frozen Y-encoder, a frozen token table) are
  left out: replicated, never gathered. Accelerate still gives the device, the processes and the
  autocast. Resume points are torch distributed checkpoints of the trainable weights and AdamW
  states (each process writes its shards; loading reshards to any process count); milestone
  weights are gathered into one safetensors file.

The shards are applied here and not by Accelerate's FSDP plugin because Accelerate enters FSDP mode
only on accelerators: this way the code a GPU run executes is the code the tests run in gloo CPU
processes. One process runs FSDP2 over a mesh of one (``processes.group_of_one``).

The recipe (``recipe``) is the same for both layouts: compute under autocast in the run's precision
(Accelerate's forward wrapper, outputs cast back to fp32), fp32 master weights and AdamW states, fp32
gradient reductions (DDP all-reduces fp32 gradients; FSDP2 gathers the fp32 parameters and
reduce-scatters fp32 gradients: ``MixedPrecisionPolicy(param_dtype=None, reduce_dtype=float32)``).
So a DDP run and an FSDP2 run of one config differ only in the order of floating-point additions.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from types import MethodType
from typing import Callable

import torch
import torch.distributed.checkpoint as dcp
from accelerate.utils import convert_outputs_to_fp32
from accelerate.utils.modeling import get_mixed_precision_context_manager
from safetensors import safe_open
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from transformers import PreTrainedModel

from shared import processes
from shared.config import ConfigError
from shared.training.step import RngState

LAYOUTS = ("ddp", "fsdp2")
# FSDP2's policy for the recipe: parameters gathered as stored (fp32; autocast casts them for the
# matrix products, as under DDP), gradients reduce-scattered in fp32
FSDP2_POLICY = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
COMPUTE = {"no": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast + loss scaling"}


def recipe(precision: str) -> dict:
    """What a run's numbers are computed with, whatever its layout (saved in precision.json, beside the
    layouts it ran under; compared across arms by the control audit)."""
    return {"compute": COMPUTE[precision], "master_weights": "float32", "optimizer_states": "float32",
            "gradient_reduction": "float32"}


def micro_layout(effective_batch: int, micro_batch: int, nproc: int) -> tuple[int, int]:
    """(samples per forward pass and process, micro-steps per optimizer step). A process's share of
    the effective batch runs in passes of ``micro_batch``, or in one pass when it is smaller."""
    if effective_batch % nproc:
        raise ConfigError(f"train.effective_batch={effective_batch} cannot be split over {nproc} processes")
    share = effective_batch // nproc
    if share <= micro_batch:
        return share, 1
    if share % micro_batch:
        raise ConfigError(f"train.effective_batch={effective_batch} over {nproc} processes is {share} samples "
                          f"each, not a multiple of train.micro_batch={micro_batch}")
    return micro_batch, share // micro_batch


def block_classes(arm: nn.Module) -> set[str]:
    """Names of the transformer block classes of the arm's trainable transformers models."""
    names: set[str] = set()
    for module in arm.modules():
        if isinstance(module, PreTrainedModel) and any(p.requires_grad for p in module.parameters()):
            names.update(module._no_split_modules or ())
    return names


def shard_units(arm: nn.Module) -> list[nn.Module]:
    """The modules sharded as units of their own: every block with a trainable parameter (a frozen
    block, e.g. of a frozen Y-encoder, is never a unit)."""
    classes = block_classes(arm)
    return [m for m in arm.modules() if type(m).__name__ in classes and any(p.requires_grad for p in m.parameters())]


def shard(arm: nn.Module, mesh) -> list[nn.Module]:
    """Apply FSDP2 to ``arm`` in place: each unit, then the root over the remaining trainable
    parameters; frozen parameters outside the units are ignored. Returns the units."""
    units = shard_units(arm)
    inside = {id(p) for u in units for p in u.parameters()}
    frozen = {p for p in arm.parameters() if not p.requires_grad and id(p) not in inside}
    for unit in reversed(units):  # inner before outer, should one block class hold another
        fully_shard(unit, mesh=mesh, mp_policy=FSDP2_POLICY, reshard_after_forward=True)
    # the root's parameters are needed again right at the start of backward: kept gathered
    fully_shard(arm, mesh=mesh, mp_policy=FSDP2_POLICY, reshard_after_forward=False, ignored_params=frozen)
    return units


def _autocast_forward(model: nn.Module, accelerator) -> None:
    """The forward wrapper Accelerate gives a prepared model (autocast, fp32 outputs), for a model
    Accelerate does not wrap: the same recipe as DDP's."""
    if accelerator.native_amp:
        context = get_mixed_precision_context_manager(accelerator.native_amp, accelerator.autocast_handler)
        model.forward = MethodType(convert_outputs_to_fp32(context(type(model).forward)), model)


class Ddp:
    name = "ddp"

    def process_group(self, accelerator):
        return contextlib.nullcontext()  # Accelerate's, when there are several processes

    def prepare(self, accelerator, arm: nn.Module, make_optimizer: Callable):
        return accelerator.prepare(arm, make_optimizer(arm))  # together: what Accelerate expects of every layout

    def register(self, accelerator, scheduler) -> None:
        accelerator.register_for_checkpointing(scheduler)  # saved with the state

    def clip_grad_norm(self, accelerator, model, max_norm: float) -> None:
        accelerator.clip_grad_norm_(model.parameters(), max_norm)

    def save(self, accelerator, folder: Path, model, optimizer, scheduler) -> None:
        accelerator.save_state(str(folder), safe_serialization=True)

    def load(self, accelerator, folder: Path, model, optimizer, scheduler, trainable: list[str]) -> None:
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"{folder}: not a DDP resume point (no model.safetensors); it was written under "
                              "train.parallel=fsdp2: resume with that setting")
        with safe_open(str(weights), framework="pt") as f:
            saved = {k.removeprefix("module.") for k in f.keys()}
        missing = [n for n in trainable if n not in saved]
        if missing:
            raise ConfigError(f"{folder}: resume point lacks trainable weights {missing[:3]}; it is of another arm")
        accelerator.load_state(str(folder), strict=False)  # strict would ask for the frozen parts too

    def full_state_dict(self, accelerator, model) -> dict[str, torch.Tensor]:
        return accelerator.get_state_dict(model)


class Fsdp2:
    name = "fsdp2"
    EXTRA = "scheduler.pt"  # written by rank 0; each rank's RNG state in rng_<rank>.pt

    def process_group(self, accelerator):
        """Accelerate's group, or at one process a group of one: the mesh needs one."""
        if accelerator.num_processes > 1:
            return contextlib.nullcontext()
        return processes.group_of_one("nccl" if accelerator.device.type == "cuda" else "gloo")

    def prepare(self, accelerator, arm: nn.Module, make_optimizer: Callable):
        if accelerator.mixed_precision == "fp16":
            raise ConfigError("train.parallel=fsdp2 runs bf16 or fp32 (train.mixed_precision); fp16's loss scaling "
                              "is only wired for ddp")
        shard(arm, init_device_mesh(accelerator.device.type, (accelerator.num_processes,)))
        _autocast_forward(arm, accelerator)
        return arm, make_optimizer(arm)  # over the sharded (DTensor) parameters

    def register(self, accelerator, scheduler) -> None:
        """Nothing to register: ``save`` writes the schedule beside the sharded state."""

    def clip_grad_norm(self, accelerator, model, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)

    def save(self, accelerator, folder: Path, model, optimizer, scheduler) -> None:
        weights, states = get_state_dict(model, optimizer)  # trainable only (Arm.state_dict), sharded
        dcp.save({"model": weights, "optimizer": states}, checkpoint_id=str(folder))
        if accelerator.is_main_process:
            torch.save(scheduler.state_dict(), folder / self.EXTRA)
        torch.save(RngState(accelerator.device).to_dict(), folder / f"rng_{accelerator.process_index}.pt")

    def load(self, accelerator, folder: Path, model, optimizer, scheduler, trainable: list[str]) -> None:
        if not (folder / ".metadata").is_file():
            raise ConfigError(f"{folder}: not an FSDP2 resume point (no .metadata); it was written under "
                              "train.parallel=ddp: resume with that setting")
        weights, states = get_state_dict(model, optimizer)
        saved = set(dcp.FileSystemReader(str(folder)).read_metadata().state_dict_metadata)
        missing = [n for n in trainable if f"model.{n}" not in saved]
        if missing:
            raise ConfigError(f"{folder}: resume point lacks trainable weights {missing[:3]}; it is of another arm")
        state = {"model": weights, "optimizer": states}
        dcp.load(state, checkpoint_id=str(folder))  # reshards to this run's process count
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(strict=False))  # the frozen parts are rebuilt, not loaded
        scheduler.load_state_dict(torch.load(folder / self.EXTRA, weights_only=True))
        rng = folder / f"rng_{accelerator.process_index}.pt"
        if rng.is_file():  # a process the saving run did not have keeps its own
            RngState(accelerator.device, torch.load(rng, weights_only=True)).restore()

    def full_state_dict(self, accelerator, model) -> dict[str, torch.Tensor]:
        """The trainable weights, gathered whole on the main process (a collective; {} elsewhere)."""
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def layout_of(name: str):
    if name not in LAYOUTS:
        raise ConfigError(f"train.parallel: unknown layout {name!r}; one of {list(LAYOUTS)}")
    return Ddp() if name == "ddp" else Fsdp2()
