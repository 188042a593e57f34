"""The arm interface: what differs between the two sides of the comparison, and nothing else.

The training loop, the evaluators and the latency harness only call the methods below; they never
branch on an arm's name. Adding an arm means a module that subclasses ``Arm`` and decorates it with
``@register_arm(name, ConfigClass)``, found either through the config's ``plugins`` (a module name
or a path) or, for an installed package, through the ``jepa_vs_vlm.arms`` entry-point group, which
is also how the two built-in arms are found (see pyproject.toml).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from shared.config import Config
from shared.registry import (
    arm_class,
    register_arm,  # noqa: F401 - arms take it with the interface they implement
)

if TYPE_CHECKING:
    from shared.precision import Runtime
    from shared.text_pretraining import TextKnowledge


@dataclass
class Batch:
    """One micro-batch, identical for every arm: visual tokens, the query, one target caption.

    The loader fills ``visual`` (cached features) or ``frames`` (online mode: decoded uint8 frames
    that the frozen encoder turns into ``visual`` on the device before the arm sees the batch).
    """

    ids: list[str]
    queries: list[str]
    captions: list[str]  # the target text Y sampled for this step
    visual: torch.Tensor | None = None  # [B, L, D] frozen X-encoder tokens
    frames: torch.Tensor | None = None  # uint8 [B, T, H, W, 3]
    labels: torch.Tensor | None = None  # [B] class index, -1 = none (evaluation)
    references: list[tuple[str, ...]] | None = None  # every caption of each clip (evaluation)

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pin-memory thread (CUDA), so host-to-device copies can overlap."""
        for name in ("visual", "frames"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.pin_memory())
        return self


@dataclass
class ArmContext:
    """What an arm is built from: the config and the pieces shared by all arms."""

    cfg: Config
    tokenizer: Any  # a transformers tokenizer (shared by every arm)
    visual_dim: int  # channels of the X-encoder tokens
    visual_tokens: int  # X-encoder tokens per clip
    # builds a fresh copy of the shared base causal LM on a device (the same weights for every arm of a
    # seed); given by whoever builds the context (shared/pipeline.py): the interface builds no model
    make_base_lm: Callable[[torch.device], nn.Module] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # the training split's captions, read on demand (text-only uses such as fitting a Y-decoder)
    captions_of_train: Callable[[int | None], list[str]] | None = None

    # the target captions at training positions [start, stop) of this seed's order, and that
    # stream's identity: what an arm has seen by a checkpoint
    captions_at: Callable[[int, int], list[str]] | None = None
    stream_key: str = ""
    arm_name: str = ""  # the name being built: a registered arm's, or a variant's (set by build_arm)
    # the command's device, process layout and resolved precision (shared/precision.py), decided once
    runtime: "Runtime | None" = None
    # the models the text pretraining stage learned from the training captions (shared/text_pretraining.py),
    # where the config asks for them (weights: captions)
    text: "TextKnowledge | None" = None

    def train_captions(self, limit: int | None = None) -> list[str]:
        """Every caption of the first ``limit`` training clips (all by default)."""
        return self.captions_of_train(limit) if self.captions_of_train is not None else []

    def base_lm(self) -> nn.Module:
        """A fresh copy of the shared base causal LM on this context's device."""
        if self.make_base_lm is None:
            raise ValueError("this context was built without a base LM (make_base_lm)")
        return self.make_base_lm(self.device)

    @property
    def precision(self) -> str:
        """The run's resolved training precision (no, bf16, fp16): what an arm trains or fits outside the
        loop runs under it (the JEPA arm's Y-decoder)."""
        if self.runtime is None:
            raise ValueError("this context was built without a runtime (shared/precision.py: resolve_runtime)")
        return self.runtime.precision.for_config(self.cfg).resolved  # a context replaced with another cfg

    def seen_captions(self, start: int, stop: int) -> list[str]:
        if self.captions_at is None:
            raise ValueError("this context has no training order (built without data)")
        return self.captions_at(start, stop)



Stage = tuple[str, Callable[[Any], Any]]
# the stages of ``inference_stages`` the latency report reads by name, the paper's three (an arm may add more)
LATENCY_STAGES = ("query_embedding", "encoder_predictor", "decoder")

# What an arm may offer beyond training, captioning and classification: declared by the arm class in
# ``capabilities``, each the methods it must implement; evaluators, latency, selective decoding,
# export and the ``arms`` command read the declaration (checked against the methods at class creation)
CAPABILITIES: dict[str, tuple[tuple[str, ...], str]] = {
    "embed": (("embed", "embed_texts"), "retrieval (text-to-video R@1)"),
    "decode_embeddings": (("decode_embeddings",), "selective decoding"),
    "reconstruct_texts": (("reconstruct_texts",), "decoder ceiling (decode(encode(text)))"),
    "inference_stages": (("inference_stages",), "latency stages"),
    "coupled_loss": (("embeddings", "coupled_loss", "couples_batch"), "loss over the effective batch (GradCache)"),
    "export": (("export_pretrained",), "Hugging Face export"),
}


class ArmContractError(TypeError):
    """An arm that breaks the interface (a capability without its methods, a loss of the wrong shape):
    the command line prints the message, which names the arm and the method, and exits 2."""

    exit_code = 2


class Arm(nn.Module):
    """Base class of an arm. ``forward(batch)`` is the training loss (so Accelerate can wrap it)."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()  # keys of CAPABILITIES this arm implements

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        where = f"arm class {cls.__name__} ({cls.__module__})"
        unknown = sorted(set(cls.capabilities) - set(CAPABILITIES))
        if unknown:
            raise ArmContractError(f"{where}: capabilities: unknown {', '.join(map(repr, unknown))} "
                                   f"(known: {', '.join(sorted(CAPABILITIES))})")
        for cap in sorted(cls.capabilities):
            missing = [m for m in CAPABILITIES[cap][0] if getattr(cls, m) is getattr(Arm, m)]
            if missing:
                raise ArmContractError(f"{where} declares capability {cap!r} but does not implement "
                                       f"{', '.join(missing)}")

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def __init__(self, ctx: ArmContext):
        super().__init__()
        self.samples_seen: int | None = None
        if ctx.arm_name:  # a variant keeps its base arm's class under its own name and section
            self.name = ctx.arm_name
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.arm_cfg = ctx.cfg.arm_config(self.name)

    # ---- training ------------------------------------------------------------------------
    def forward(self, batch: Batch, part: str = "loss"):
        """The training loss (its mean, or ``part="loss_sum"`` its sum over ``loss_units``), or
        (``part="embeddings"``) what ``coupled_loss`` is computed from. All go through ``forward``
        so a data-parallel wrapper sees every pass."""
        if part == "loss":
            return self.loss(batch)
        return self.loss_sum(batch) if part == "loss_sum" else self.embeddings(batch)

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def loss_units(self, batch: Batch) -> int:
        """What ``loss`` is a mean over (samples by default; the VLM: target tokens). Split into
        micro-batches, the step divides the summed losses by the units of the whole effective
        batch, so accumulation and processes give the loss of one big batch."""
        return len(batch)

    def loss_sum(self, batch: Batch) -> torch.Tensor:
        """``loss`` times ``loss_units``: the micro-batch's share of the effective batch's loss."""
        return self.loss(batch) * self.loss_units(batch)

    def couples_batch(self) -> bool:
        """True when a sample's loss depends on the other samples of the batch (e.g. InfoNCE's
        negatives): the loop then takes the loss over the whole effective batch (GradCache),
        through ``embeddings`` and ``coupled_loss``."""
        return False

    def embeddings(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-sample tensors [B, ...] that ``coupled_loss`` turns into the loss (coupled arms)."""
        raise NotImplementedError

    def coupled_loss(self, parts: dict[str, torch.Tensor], captions: list) -> torch.Tensor:
        """The loss over the effective batch. ``captions`` says which targets are the same text: the
        texts themselves, or (from the loop, which gathers 64-bit keys across processes rather than
        strings) one integer key per text, equal keys for equal texts."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "Arm":
        """Training mode for the trainable parts only: a frozen module (a frozen Y-encoder, the token
        table) stays in eval mode, so its dropout and LayerDrop never act and its outputs match
        evaluation's, whatever ``train()`` is called on (a wrapper's ``train()`` reaches here too)."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
        return self

    def frozen_modules(self) -> list[nn.Module]:
        """The outermost submodules that hold parameters, none of them trainable."""
        out: dict[str, nn.Module] = {}
        for name, module in self.named_modules():
            params = list(module.parameters())
            if name and params and not any(p.requires_grad for p in params) \
                    and not any(name.startswith(f"{outer}.") for outer in out):
                out[name] = module
        return list(out.values())

    def enable_activation_checkpointing(self) -> None:
        """Recompute each transformer layer in the backward pass instead of storing its activations
        (``train.activation_checkpointing``), for every trainable transformers model inside the arm."""
        for module in self.modules():
            if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing \
                    and any(p.requires_grad for p in module.parameters()):
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def compile_layers(self) -> None:
        """``torch.compile`` each transformer block (``train.compile``); the rest stays eager."""
        for module in self.modules():
            if type(module).__name__.endswith("DecoderLayer"):
                module.compile()

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups; override for per-module learning-rate multipliers."""
        decay, no_decay = [], []
        for n, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        return [
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]

    def prepare_training(self) -> None:
        """Hook run once before training (e.g. embed the training targets once)."""

    def prepare_evaluation(self) -> None:
        """Hook run before evaluating (e.g. fit a decoder); cheap when nothing changed since the last call."""

    def set_progress(self, samples_seen: int | None) -> None:
        """Which checkpoint the loaded weights are: how many training samples they have seen."""
        self.samples_seen = samples_seen

    @classmethod
    def controls(cls, section: dict) -> list[str]:
        """What this arm's config section gives it that the other arms may lack (pretrained parts,
        text it learns from outside the loop), in words, for the report and the control audit."""
        return []

    def evaluation_info(self) -> dict:
        """Extra numbers of the evaluated checkpoint for the metrics row (e.g. a decoder's size)."""
        return {}

    def side_flops(self, captions: list[str]) -> dict[str, float]:
        """FLOPs of models the arm runs outside its training step, per caption, counted on the arm as built
        (the meta device): ``target_flops_per_caption`` (embedding a target text) and
        ``decoder_flops_per_caption`` (training a decoder on one caption). The compute axis adds them."""
        return {}

    # ---- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def caption(self, visual: torch.Tensor, queries: list[str], max_new_tokens: int) -> list[str]:
        raise NotImplementedError

    @torch.no_grad()
    def score_candidates(self, visual: torch.Tensor, queries: list[str], candidates: list[str]) -> torch.Tensor:
        """[B, C] scores, higher = more likely (for top-k classification)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, visual: torch.Tensor, queries: list[str]) -> torch.Tensor:
        """[B, E] L2-normalised prediction, for retrieval and streams (capability "embed")."""
        raise NotImplementedError(f"arm {self.name!r} has no embedding output")

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """[N, E] L2-normalised text embeddings in the space of ``embed`` (optional)."""
        raise NotImplementedError(f"arm {self.name!r} has no text embedding")

    @torch.no_grad()
    def decode_embeddings(self, embeddings: torch.Tensor, max_new_tokens: int) -> list[str]:
        """Text for [N, E] embeddings from ``embed`` (or averages of them), for selective decoding (optional)."""
        raise NotImplementedError(f"arm {self.name!r} cannot decode embeddings")

    @torch.no_grad()
    def reconstruct_texts(self, texts: list[str], max_new_tokens: int) -> list[str] | None:
        """Texts sent through the arm's target space and decoded back, for arms that decode
        embeddings (the Y-decoder's ceiling); None for arms without one."""
        return None

    def export_pretrained(self, folder: Path) -> dict[str, Any]:
        """Write the trained arm as folders that plain transformers loads (``save_pretrained``) plus its
        small extra parts (optional; ``python -m experiments export``). Returns, for the model card,
        {"parts": {name: what it is}, "config": what the folder's export.json records}."""
        raise NotImplementedError(f"arm {self.name!r} has no Hugging Face export")

    def inference_stages(self, queries: list[str], max_new_tokens: int) -> list[Stage]:
        """The arm's inference as named stages, in execution order; each takes the previous
        stage's output and the first receives the visual tokens. The decoder stage generates
        exactly ``max_new_tokens`` tokens, so arms are timed on equal output lengths.
        Used by the latency harness.
        """
        raise NotImplementedError

    # ---- bookkeeping ---------------------------------------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """Trainable parameters only: frozen parts (Y-encoder, token table) are rebuilt from the config,
        so checkpoints and resume points (``accelerator.save_state``) stay small. Filters in place,
        since a wrapper (DDP) passes its own ``destination`` and ``prefix``."""
        out = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        keep = {prefix + n for n, p in self.named_parameters() if p.requires_grad}
        for key in [k for k in out if k.startswith(prefix) and k not in keep]:
            del out[key]
        return out

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        missing = [n for n, p in own.items() if p.requires_grad and n not in state]
        unexpected = [n for n in state if n not in own]
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match arm {self.name!r}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for n, t in state.items():
                own[n].copy_(t)

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total_params": total, "trainable_params": trainable}


def build_arm(name: str, ctx: ArmContext) -> Arm:
    """Arm ``name`` (a registered arm or a variant of one in ``ctx.cfg.variants``)."""
    base = ctx.cfg.base_arm(name)
    return arm_class(base, ctx.cfg.plugins)(dataclasses.replace(ctx, arm_name=name))
