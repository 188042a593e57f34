"""``describe --gpu``: the first thing to run on a GPU, before renting many (docs/paper_scale.md).

Both arms of the config, with random weights (no hub) and the online encoder on random frames, take
a few training steps of two micro-batches on this one device through the loop's own code (``build_trainee``,
``optimizer_step``) under each layout (DDP, which at one process is the plain model, and FSDP2 over a
mesh of one) with ``torch.compile`` off and on. Per run: peak device memory against the estimate
``describe --memory`` makes for one GPU, step time, samples/s and MFU against the device's peak for
the dtype the step computes in (bf16 under autocast: the datasheet figure for known GPUs; otherwise
a measured matmul of that dtype).
Exits non-zero (4) when a run crashes or its peak memory exceeds the estimate by more than 25%.

``--gpu`` on a machine without CUDA runs the same on the CPU (memory is then neither measured nor
estimated): a dry run for small configs, which the tests use (smoke.yaml).
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import time
import traceback

import torch

from experiments.describe.memory import stand_in_context
from shared.arm import Batch, build_arm
from shared.config import load_config
from shared.features.encoder import FrozenEncoder
from shared.features.visual import VisualFeatures
from shared.precision import dtype_name, resolve_runtime
from shared.profiling.matmul import matmul_gflops
from shared.profiling.fsdp2_memory import fsdp2_estimate
from shared.training.loop import build_trainee, new_accelerator, optimizer_step
from shared.profiling.memory import encoder_flops, estimate_arm
from shared.training.parallel import layout_of, micro_layout
from shared.training.release import release

log = logging.getLogger(__name__)

MEMORY_SLACK = 1.25  # a run may use up to 25% more than the estimate before the check fails
# dense bf16 peak (FLOP/s, datasheet, without sparsity) by device name; others are measured
BF16_PEAK = {"H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H200": 989e12,
             "GH200": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
# random weights everywhere (no hub); targets embedded in the step (no text cache to fill: there is no data)
RANDOM_WEIGHTS = ["lm.weights=null", "encoder.weights=null", "encoder.features=online", "jepa.y_encoder.weights=random",
                  "jepa.y_encoder.cache=false", "jepa.y_decoder.weights=random"]


class GpuCheckFailed(RuntimeError):
    exit_code = 4


@dataclasses.dataclass
class _StandIn:
    """What ``build_trainee`` needs of a prepared pipeline, without data: the config and a seeded arm."""

    cfg: object
    ctx: object

    def seeded_arm(self, name: str, device):
        torch.manual_seed(self.cfg.seed)
        return build_arm(name, dataclasses.replace(self.ctx, device=torch.device(device)))


def device_peak(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """Peak FLOP/s of ``dtype``, the one the step's matrix products run in: against the bf16 peak an
    fp32 run on a CPU without native bf16 (where bf16 is emulated, ~2 GFLOP/s) showed an MFU of ~2,600%."""
    name = dtype_name(dtype)
    if device.type == "cuda" and dtype == torch.bfloat16:
        gpu = torch.cuda.get_device_name(device)
        for key, flops in BF16_PEAK.items():
            if key in gpu:
                return flops, f"{gpu}, datasheet"
    return matmul_gflops(dtype, device), f"measured {name} matmul"


def random_batch(cfg, ctx, micro: int, caption_tokens: int, device) -> Batch:
    frames = torch.randint(0, 256, (micro, cfg.data.frames, cfg.encoder.image_size, cfg.encoder.image_size, 3),
                           dtype=torch.uint8, device=device)
    return Batch(ids=[str(i) for i in range(micro)], queries=[cfg.data.query] * micro,
                 captions=[" ".join(["a"] * caption_tokens)] * micro, frames=frames)


def run_one(cfg, ctx, features, name: str, layout_name: str, steps: int, caption_tokens: int) -> dict:
    """Steps of arm ``name`` under one layout and compile setting; seconds per step after the first."""
    accelerator = new_accelerator(cfg, cfg.cache_path / "gpu_check", ctx.precision)
    device, layout, t = accelerator.device, layout_of(layout_name), cfg.train
    if device.type == "cuda":  # a crashed row's model is freed once its traceback is: collected here
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with layout.process_group(accelerator):
            times = _timed_steps(cfg, ctx, features, name, accelerator, layout, steps, caption_tokens)
        peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    finally:
        release(accelerator)  # the next row starts without this one's model (shared/training/release.py)
    step_s = sum(times[1:]) / max(1, len(times) - 1)  # the first step compiles and warms up
    return {"step_s": step_s, "first_step_s": times[0], "samples_per_s": t.effective_batch / step_s, "peak_gb": peak}


def _timed_steps(cfg, ctx, features, name: str, accelerator, layout, steps: int, caption_tokens: int) -> list[float]:
    """Seconds of each optimizer step; the arm lives in this frame only."""
    device, t = accelerator.device, cfg.train
    micro, accum = micro_layout(t.effective_batch, t.micro_batch, accelerator.num_processes)
    trainee = build_trainee(_StandIn(cfg, ctx), name, accelerator, layout)
    trainee.model.train()
    coupled, times = trainee.couples(accelerator, accum), []
    for _ in range(steps):
        batches = [features.ready(random_batch(cfg, ctx, micro, caption_tokens, device), device) for _ in range(accum)]
        start = time.perf_counter()
        optimizer_step(accelerator, trainee, batches, coupled, t.grad_clip).item()  # .item(): wait for the device
        times.append(time.perf_counter() - start)
    return times


def estimates(cfg, ctx_meta, name: str, micro: int, caption_tokens: int, encoder_params: int, memory: bool) -> dict:
    """What describe --memory says one GPU holds, per layout (where memory is measured), and the model
    FLOPs per sample."""
    ckpt = cfg.train.activation_checkpointing
    plain = estimate_arm(ctx_meta, name, micro, caption_tokens, 1, encoder_params, False)
    if not memory:
        return {"ddp": None, "fsdp2": None, "model_flops_per_sample": plain["train_flops_per_sample"]}
    ddp = estimate_arm(ctx_meta, name, micro, caption_tokens, 1, encoder_params, True, count_flops=False) if ckpt else plain
    fsdp2 = fsdp2_estimate(ctx_meta, name, micro, caption_tokens, 1, ckpt, encoder_params)
    return {"ddp": ddp["ddp_gb"], "fsdp2": fsdp2["peak_gb"], "model_flops_per_sample": plain["train_flops_per_sample"]}


@dataclasses.dataclass
class CheckSetup:
    """What every row of the check is built from."""

    cfg: object  # resolved, two micro-batches a step
    runtime: object
    device: torch.device
    micro: int
    ctx: object  # the arms' context on ``device``
    encoder_params: int
    features: VisualFeatures  # the online encoder on ``device``


def check_setup(config: str, overrides: list[str], device: torch.device | str | None = None) -> CheckSetup:
    """The config, the arms' context and the online encoder, on ``device`` (default: the runtime's)."""
    cfg = load_config(config, [*overrides, *RANDOM_WEIGHTS])
    runtime = resolve_runtime(cfg)
    cfg = runtime.precision.apply(cfg)
    micro, _ = micro_layout(cfg.train.effective_batch, cfg.train.micro_batch, 1)
    # two micro-batches a step: GradCache's coupled path runs, and a step takes seconds, not tens of them
    # (memory is that of one micro-batch plus the states whatever the accumulation; time is per sample)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, effective_batch=2 * micro))
    device = torch.device(device if device is not None else runtime.device)
    ctx, encoder_params = stand_in_context(cfg, str(device), runtime)
    features = VisualFeatures(cfg, FrozenEncoder.from_config(cfg, device=device))
    return CheckSetup(cfg, runtime, device, micro, ctx, encoder_params, features)


def gpu_check(config: str, overrides: list[str], steps: int = 3, compile_modes=(False, True),
              layouts=("ddp", "fsdp2"), caption_tokens: int = 32) -> dict:
    s = check_setup(config, overrides)
    cfg, runtime, device, micro, ctx, encoder_params, features = (s.cfg, s.runtime, s.device, s.micro, s.ctx,
                                                                  s.encoder_params, s.features)
    meta, _ = stand_in_context(cfg, "meta")
    enc_flops = encoder_flops(FrozenEncoder.from_config(cfg, device=torch.device("meta")), cfg.data.frames)
    peak_dtype = runtime.precision.dtype
    peak, peak_source = device_peak(device, peak_dtype)
    rows = []
    for name in cfg.arms:
        est = estimates(cfg, meta, name, micro, caption_tokens, encoder_params, memory=device.type == "cuda")
        model_flops = est["model_flops_per_sample"] + enc_flops
        for compiled in compile_modes:
            run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=compiled))
            for layout in layouts:
                row = {"arm": name, "layout": layout, "compile": compiled, "estimate_gb": est[layout]}
                log.info("gpu check: %s, %s, compile %s", name, layout, "on" if compiled else "off")
                try:
                    row.update(run_one(run_cfg, ctx, features, name, layout, steps, caption_tokens))
                except Exception as e:  # a crash is a finding: reported, the other runs still run
                    row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    log.debug("%s", traceback.format_exc())
                if "samples_per_s" in row:
                    row["mfu"] = row["samples_per_s"] * model_flops / peak
                row["ok"] = "error" not in row and (row.get("peak_gb") is None
                                                    or row["peak_gb"] <= MEMORY_SLACK * row["estimate_gb"])
                rows.append(row)
    return {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "peak_flops": peak, "peak_dtype": dtype_name(peak_dtype), "peak_source": peak_source, "micro_batch": micro,
            "effective_batch": cfg.train.effective_batch, "steps": steps, "rows": rows,
            "ok": all(r["ok"] for r in rows)}


def gpu_check_text(r: dict) -> str:
    L = [f"GPU check on {r['device_name']} ({r['peak_dtype']} peak {r['peak_flops'] / 1e12:.3g} TFLOP/s, {r['peak_source']}): "
         f"random weights, online encoder on random frames, {r['effective_batch']} samples a step in micro-batches of "
         f"{r['micro_batch']}, {r['steps']} steps (the first not timed)",
         f"{'arm':<6} {'layout':<6} {'compile':<7} {'step s':>8} {'samples/s':>10} {'MFU':>6} {'peak GB':>8} "
         f"{'estimate':>9}  verdict"]
    for x in r["rows"]:
        if "error" in x:
            L.append(f"{x['arm']:<6} {x['layout']:<6} {'on' if x['compile'] else 'off':<7} CRASHED: {x['error']}")
            continue
        peak = f"{x['peak_gb']:>8.1f}" if x["peak_gb"] is not None else f"{'n/a':>8}"
        estimate = f"{x['estimate_gb']:>6.1f} GB" if x["estimate_gb"] is not None else f"{'n/a':>9}"
        verdict = "ok" if x["ok"] else f"FAIL: over the estimate by more than {100 * (MEMORY_SLACK - 1):.0f}%"
        L.append(f"{x['arm']:<6} {x['layout']:<6} {'on' if x['compile'] else 'off':<7} {x['step_s']:>8.3f} "
                 f"{x['samples_per_s']:>10.1f} {100 * x['mfu']:>5.1f}% {peak} {estimate}  {verdict}")
    L.append("PASS" if r["ok"] else "FAIL (exit code 4)")
    return "\n".join(L)
