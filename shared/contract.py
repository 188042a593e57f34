"""The arm contract, checked once before any training: a broken arm is named, not traced.

``check_arms`` builds each arm of a command, puts one tiny batch of the right structure (the first
training clips' captions, random visual tokens of the encoder's shape) through the methods the
training loop and the evaluators call, and raises ``ArmContractError`` (exit 2, one line) naming the
arm, the method and what it returned, e.g. ``arm 'regress': loss returned shape [4], expected a scalar``.
Without it such an arm fails minutes later inside FLOP counting or an evaluator, naming neither.

It runs beside the run, not in it: under a forked RNG and with a scratch cache folder, so nothing it
computes (text embeddings, a decoder) reaches the run's caches and a run's numbers do not change.
The evaluation side sees a checkpoint that has seen no samples (``set_progress(0)``), so a decoder
fitted on the captions seen so far fits on none.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time

import torch

from shared.arm import LATENCY_STAGES, Arm, ArmContractError, Batch, build_arm
from shared.pipeline import Pipeline, random_visual_batch
from shared.registry import arm_class

log = logging.getLogger(__name__)

REQUIRED = ("loss", "caption", "score_candidates")  # what every arm implements (docs/adding_an_arm.md)
TRAINING = ("loss",)  # what a command that only trains (``train``) calls
BATCH = 4  # clips in the check's batch: enough for in-batch negatives, cheap for any arm
TOKENS = 4  # caption length asked for


def check_arms(prepared: Pipeline, names: list[str], device=None, evaluation: bool = True,
               latency: bool = False) -> float:
    """Check every arm in ``names``; returns the seconds it took. Raises ArmContractError on the first fault.
    ``evaluation=False`` (a command that only trains) checks the training side alone; ``latency=True``
    (the latency command) also runs the arm's ``inference_stages`` once."""
    t0 = time.perf_counter()
    for name in names:
        check_arm(prepared, name, device, evaluation, latency)
    seconds = time.perf_counter() - t0
    log.info("arm contract checked (%s): %.1fs", ", ".join(names), seconds)
    return seconds


def check_arm(prepared: Pipeline, name: str, device=None, evaluation: bool = True, latency: bool = False) -> None:
    cls = arm_class(prepared.cfg.base_arm(name), prepared.cfg.plugins)
    missing = [m for m in (REQUIRED if evaluation else TRAINING) if getattr(cls, m) is getattr(Arm, m)]
    if missing:
        raise ArmContractError(f"arm {name!r}: {', '.join(missing)} not implemented by {cls.__name__} "
                               f"(every arm implements {', '.join(REQUIRED)})")
    if latency and "inference_stages" not in cls.capabilities:
        raise ArmContractError(f"arm {name!r}: {cls.__name__} does not declare the capability inference_stages "
                               f"(latency times an arm's stages named {', '.join(LATENCY_STAGES)}: "
                               "docs/adding_an_arm.md)")
    device = torch.device(device if device is not None else prepared.runtime.device)
    rngs = [device.index or 0] if device.type == "cuda" else []  # the run's RNG states, as they were after
    with tempfile.TemporaryDirectory(prefix="arm-contract-") as scratch, torch.random.fork_rng(devices=rngs):
        ctx = prepared.context(device)
        ctx = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, cache_dir=scratch))
        arm = _call(name, "building the arm", lambda: build_arm(name, ctx))
        batch = random_visual_batch(prepared, BATCH, device)
        _check_training(name, arm, batch)
        if evaluation:
            _check_evaluation(name, arm, batch)
        if latency:
            _check_latency(name, arm, batch)
    del arm
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _call(name: str, what: str, fn):
    """``fn()``; an exception from the arm's code becomes one line naming the arm and the method (the
    traceback goes to the debug log: ``-v``). The suite's own errors (a config error) pass as they are."""
    try:
        return fn()
    except Exception as e:
        if getattr(e, "exit_code", None) is not None:
            raise
        log.debug("arm %r: %s raised", name, what, exc_info=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ArmContractError(f"arm {name!r}: {what} raised {type(e).__name__}" + (f": {first}" if first else "")) from None


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def _tensor(name: str, method: str, out, shape: tuple[int | None, ...], what: str) -> torch.Tensor:
    """``out`` must be a floating tensor of ``shape`` (None: any size), finite."""
    if not isinstance(out, torch.Tensor):
        raise ArmContractError(f"arm {name!r}: {method} returned {type(out).__name__}, expected a tensor {what}")
    if out.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, out.shape)):
        raise ArmContractError(f"arm {name!r}: {method} returned shape {_shape(out)}, expected {what}")
    if not out.is_floating_point():
        raise ArmContractError(f"arm {name!r}: {method} returned dtype {out.dtype}, expected a floating-point {what}")
    if not torch.isfinite(out.detach()).all():
        raise ArmContractError(f"arm {name!r}: {method} returned non-finite values (NaN or inf) on a random batch")
    return out


def _check_training(name: str, arm: Arm, batch: Batch) -> None:
    arm.train()
    trainable = any(p.requires_grad for p in arm.parameters())
    with torch.enable_grad():
        loss = _tensor(name, "loss", _call(name, "loss", lambda: arm.loss(batch)), (), "a scalar")
        if trainable and not loss.requires_grad:
            raise ArmContractError(f"arm {name!r}: loss does not depend on any trainable parameter (no gradient)")
        if _call(name, "couples_batch", arm.couples_batch):  # the loop's path for a loss over the effective batch
            parts = _call(name, "embeddings", lambda: arm.embeddings(batch))
            if not isinstance(parts, dict) or not parts:
                raise ArmContractError(f"arm {name!r}: embeddings returned {type(parts).__name__}, expected a dict "
                                       "of per-sample tensors")
            for key, t in parts.items():
                if not isinstance(t, torch.Tensor) or t.dim() == 0 or len(t) != len(batch):
                    got = _shape(t) if isinstance(t, torch.Tensor) else type(t).__name__
                    raise ArmContractError(f"arm {name!r}: embeddings[{key!r}] is {got}, expected [{len(batch)}, ...] "
                                           "(one row per sample)")
            _tensor(name, "coupled_loss", _call(name, "coupled_loss", lambda: arm.coupled_loss(parts, batch.captions)),
                    (), "a scalar")


@torch.no_grad()
def _check_evaluation(name: str, arm: Arm, batch: Batch) -> None:
    arm.eval()
    n, candidates = len(batch), list(dict.fromkeys(batch.captions))
    _call(name, "set_progress", lambda: arm.set_progress(0))
    _call(name, "prepare_evaluation", arm.prepare_evaluation)
    captions = _call(name, "caption", lambda: arm.caption(batch.visual, batch.queries, TOKENS))
    if not isinstance(captions, (list, tuple)) or len(captions) != n or not all(isinstance(c, str) for c in captions):
        got = f"{type(captions).__name__} of {len(captions)}" if isinstance(captions, (list, tuple)) else type(captions).__name__
        raise ArmContractError(f"arm {name!r}: caption returned {got}, expected a list of {n} strings (one per clip)")
    scores = _call(name, "score_candidates", lambda: arm.score_candidates(batch.visual, batch.queries, candidates))
    _tensor(name, "score_candidates", scores, (n, len(candidates)), f"[{n}, {len(candidates)}] (clips x candidates)")
    if arm.has("embed"):
        emb = _tensor(name, "embed", _call(name, "embed", lambda: arm.embed(batch.visual, batch.queries)),
                      (n, None), f"[{n}, E]")
        texts = _call(name, "embed_texts", lambda: arm.embed_texts(candidates))
        _tensor(name, "embed_texts", texts, (len(candidates), emb.shape[1]),
                f"[{len(candidates)}, {emb.shape[1]}] (E as embed's)")


@torch.no_grad()
def _check_latency(name: str, arm: Arm, batch: Batch) -> None:
    """The stages run in order on the batch's visual tokens, and include the ones the report reads."""
    stages = _call(name, "inference_stages", lambda: arm.inference_stages(batch.queries, TOKENS))
    if not isinstance(stages, (list, tuple)) or not all(isinstance(s, tuple) and len(s) == 2 for s in stages):
        raise ArmContractError(f"arm {name!r}: inference_stages returned {type(stages).__name__}, expected a list of "
                               "(name, function) pairs")
    missing = [s for s in LATENCY_STAGES if s not in [n for n, _ in stages]]
    if missing:
        raise ArmContractError(f"arm {name!r}: inference_stages has no stage named {', '.join(missing)} (it has "
                               f"{', '.join(n for n, _ in stages) or 'none'}; latency reports {', '.join(LATENCY_STAGES)})")
    x = batch.visual
    for stage, fn in stages:
        x = _call(name, f"inference stage {stage!r}", lambda fn=fn, x=x: fn(x))
