"""``describe --hardware``: what this machine computes fast, and the precision ``auto`` picks here.

Flags (AVX512-BF16, AMX, oneDNN's ISA cap, the CUDA device), dense matmul GFLOP/s in fp32 and bf16,
and, given a config, one training step of each arm under each precision, all measured in one
process one after the other, so the ratios hold on a noisy machine.
"""
from __future__ import annotations

import platform

import torch

from shared.pipeline import prepare, random_visual_batch
from shared.precision import DTYPE_NAMES, Runtime, describe
from shared.profiling.matmul import matmul_gflops
from shared.profiling.steps import time_train_steps

PRECISIONS = ("no", "bf16")


def arm_step_ms(cfg, runtime: Runtime, steps: int = 2) -> dict[str, dict[str, float]]:
    """{arm: {precision: ms per training step}} on the preset's micro-batch (random visual tokens),
    each after one untimed step (allocation, kernel selection)."""
    prepared = prepare(cfg, runtime, splits=())
    batch = random_visual_batch(prepared, cfg.train.micro_batch, "cpu")
    out: dict[str, dict[str, float]] = {}
    for name in cfg.arms:
        out[name] = {}
        for precision in PRECISIONS:
            arm = prepared.seeded_arm(name)
            arm.prepare_training()
            out[name][precision] = 1000 * sum(time_train_steps(arm, batch, steps, precision)) / steps
    return out


def hardware(cfg, runtime: Runtime, step_arms: bool = False) -> dict:
    d = runtime.precision.record()
    gflops = {name: matmul_gflops(DTYPE_NAMES[name], runtime.device) / 1e9 for name in ("float32", "bfloat16")}
    h = {"decision": d, "matmul_gflops": gflops, "bf16_over_fp32": gflops["bfloat16"] / gflops["float32"],
         "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
         "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if step_arms and d["hardware"]["device"] == "cpu":
        h["train_step_ms"] = arm_step_ms(cfg, runtime)
    return h


def hardware_text(h: dict) -> str:
    d, hw = h["decision"], h["decision"]["hardware"]

    def yes(b: bool) -> str:
        return "yes" if b else "no"

    cuda = f" ({hw['cuda_name']}, bf16 {yes(hw['cuda_bf16'])})" if hw["cuda_name"] else ""
    lines = [f"device              {hw['device']}{cuda}",
             f"cpu                 {hw['cpu']}  ({h['threads']} torch threads, kernels {h['torch_cpu_capability']})",
             f"AVX512-BF16         {yes(hw['avx512_bf16'])}",
             f"AMX                 {yes(hw['amx'])}",
             f"ONEDNN_MAX_CPU_ISA  {hw['onednn_isa_cap'] or '(not set)'}",
             f"matmul fp32         {h['matmul_gflops']['float32']:8.1f} GFLOP/s",
             f"matmul bf16         {h['matmul_gflops']['bfloat16']:8.1f} GFLOP/s   "
             f"(bf16/fp32 = {h['bf16_over_fp32']:.2f}x)"]
    for name, ms in h.get("train_step_ms", {}).items():
        lines.append(f"train step {name:<8} {ms['no']:8.1f} ms fp32, {ms['bf16']:8.1f} ms bf16   "
                     f"(bf16 is {ms['no'] / ms['bf16']:.2f}x the speed of fp32)")
    lines += [f"precision           {describe(d)}",
              f"encoder dtype       {d['encoder_dtype']}"]
    if hw["device"] == "cpu" and (d["resolved"] == "bf16") != (h["bf16_over_fp32"] > 1):
        lines.append("note: the measured speeds disagree with the flags; set train.mixed_precision="
                     f"{'bf16' if h['bf16_over_fp32'] > 1 else 'no'} explicitly if this holds")
    return "\n".join(lines)
