"""The one training loop, for every arm (Accelerate: devices, processes, mixed precision).

Controlled by construction: the data order, the effective batch, the optimizer and the schedule
come from the shared config sections; the arm only supplies ``loss(batch)`` and its parameter
groups. Checkpoints are taken at milestones counted in samples seen; a resume point is saved at
every milestone and every ``train.resume_every`` steps, and re-running the same command on the
same run directory continues from it with the same result as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared.arm import Arm, build_arm
from shared.checkpoint import (TrainState, find_resume, load_resume, milestone_dir, save_resume, save_weights)
from shared.config import Config, ConfigError, dump_yaml, to_dict, training_view
from shared.data.loader import ClipBatches, TrainPlan, batches, make_loader
from shared.data.order import TrainOrder
from shared.optim import build_optimizer, build_scheduler
from shared.pipeline import Prepared
from shared.precision import decision, resolve_config
from shared.progress import progress_bar
from shared.runinfo import append_jsonl, read_json, read_jsonl, versions, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    checkpoints: list[dict] = field(default_factory=list)  # {milestone, samples_seen, step, path}
    wall_s: float = 0.0
    samples_per_s: float = 0.0
    trainable_params: int = 0
    completed: bool = False


def new_accelerator(cfg: Config, run_dir: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)  # several runs in one process
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        log_with="tensorboard",
        project_dir=str(run_dir),
    )


def build_seeded_arm(prepared: Prepared, name: str, device="cpu") -> Arm:
    torch.manual_seed(prepared.cfg.seed)  # arm-specific initialisation is seeded by the run's seed
    return build_arm(name, prepared.context(device))


def write_run_header(run_dir: Path, cfg: Config, arm_name: str, order: TrainOrder, total_samples: int,
                     precision: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", f"# resolved config of arm {arm_name!r}\narm_name: {arm_name}\n" + dump_yaml(cfg))
    write_json_atomic(run_dir / "versions.json", versions())
    write_json_atomic(run_dir / "precision.json", precision)
    first, caps = order.take(0, min(16, total_samples))
    write_json_atomic(run_dir / "data_order.json", {
        "seed": cfg.seed, "samples": total_samples, "sha256": order.digest(total_samples),
        "first_clips": first.tolist(), "first_caption_choices": caps.tolist(),
    })


def check_same_config(run_dir: Path, cfg: Config, arm_name: str, why: str = "", evaluating: bool = False) -> None:
    """Refuse to resume a run directory with another training config: the result would be neither run.
    ``evaluating``: only reading its checkpoints, which any precision can evaluate."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    cfg = resolve_config(cfg)
    old = training_view(yaml.safe_load(path.read_text()), arm_name)
    new = training_view(to_dict(cfg), arm_name)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    key = "train.mixed_precision"
    if evaluating and key in diff:
        log.warning("%s: trained under %s=%s, evaluated here under %s", path, key, old.get(key), new.get(key))
        diff = [k for k in diff if k not in (key, "encoder.dtype")]
    elif key in diff:  # the usual cause: auto resolves differently on this machine
        raise ConfigError(f"{path}: this run trained under {key}={old.get(key)} but would resume under "
                          f"{new.get(key)} (resolved on this machine: {why or 'set explicitly'}); resume with "
                          f"{key}={old.get(key)} or use a new --out directory")
    if diff:
        raise ConfigError(f"{path}: this run directory was trained with another config (differs at {', '.join(diff[:8])}); "
                         "use a new --out directory or the original settings")


def train_arm(prepared: Prepared, arm_name: str, run_dir: str | Path, stop_at_samples: int | None = None,
              progress: bool = True) -> TrainResult:
    precision = decision(prepared.cfg)
    cfg = resolve_config(prepared.cfg)  # recorded, audited and checked on resume as resolved
    prepared = dataclasses.replace(prepared, cfg=cfg)
    log.info("train %s seed %d: precision %s (%s: %s)", arm_name, cfg.seed, precision["resolved"],
             precision["requested"], precision["reason"])
    run_dir = Path(run_dir)
    t = cfg.train
    total_samples = t.milestones[-1]
    total_steps = math.ceil(total_samples / t.effective_batch)
    result = TrainResult(run_dir)

    accelerator = new_accelerator(cfg, run_dir)
    nproc = accelerator.num_processes
    if t.effective_batch % (t.micro_batch * nproc):
        raise ValueError(f"train.effective_batch={t.effective_batch} is not a multiple of micro_batch x processes "
                         f"({t.micro_batch} x {nproc})")
    accum = t.effective_batch // (t.micro_batch * nproc)

    train = prepared.dataset.split("train")
    order = TrainOrder(cfg.seed, train.caption_counts())
    arm = build_seeded_arm(prepared, arm_name, accelerator.device)
    arm.prepare_training()
    optimizer = build_optimizer(arm, cfg)
    scheduler = build_scheduler(optimizer, total_steps, cfg)
    result.trainable_params = arm.parameter_counts()["trainable_params"]

    state = TrainState()
    resume = find_resume(run_dir)
    if resume is not None:
        check_same_config(run_dir, cfg, arm_name, f"{precision['requested']} -> {precision['resolved']}, {precision['reason']}")
        weights, state = load_resume(resume, optimizer, scheduler)
        arm.load_trainable_state_dict(weights)
        log.info("%s: resuming from step %d (%d samples seen)", run_dir, state.step, state.samples_seen)
    elif accelerator.is_main_process:
        write_run_header(run_dir, cfg, arm_name, order, total_samples, precision)
    log_path = run_dir / "train_log.jsonl"
    if accelerator.is_main_process:  # drop log rows past the resume point: they will be redone
        rows = [r for r in read_jsonl(log_path) if r["step"] <= state.step]
        write_text_atomic(log_path, "".join(json.dumps(r) + "\n" for r in rows))

    model, optimizer = accelerator.prepare(arm, optimizer)
    # micro-batch k of this process = micro-step k % accum of step k // accum: resuming restarts at k
    plan = TrainPlan(order, accelerator.process_index, t.effective_batch, t.micro_batch, accum)
    loader = make_loader(ClipBatches(train, plan, prepared.features.reader(train), cfg.data.query),
                         state.step * accum, total_steps * accum, cfg.data.workers, cfg.data.prefetch,
                         pin=accelerator.device.type == "cuda", persistent=True)
    stream = batches(loader)
    accelerator.init_trackers("train", config={"arm": arm_name, "seed": cfg.seed})
    trainable = [p for p in arm.parameters() if p.requires_grad]

    bar = progress_bar(total=total_steps, initial=state.step, desc=f"train {arm_name} seed {cfg.seed}", unit="step",
               disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    run_start, wall_before = time.perf_counter(), state.wall_s
    window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
    model.train()
    while state.step < total_steps:
        step_loss = torch.zeros((), device=accelerator.device)
        for micro in range(accum):
            batch = prepared.features.ready(next(stream), accelerator.device)  # online mode: encoded here
            sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
            with sync:
                loss = model(batch)
                accelerator.backward(loss / accum)
            step_loss += loss.detach() / accum
        if t.grad_clip > 0:
            accelerator.clip_grad_norm_(trainable, t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state.step += 1
        state.samples_seen = state.step * t.effective_batch
        loss_value = accelerator.reduce(step_loss, reduction="mean").item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{arm_name}: loss is {loss_value} at step {state.step}; lower train.lr?")
        state.last_loss = loss_value
        state.wall_s = wall_before + time.perf_counter() - run_start
        window_loss, window_n = window_loss + loss_value, window_n + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)

        if state.step % t.log_every == 0 or state.step == total_steps:
            now = time.perf_counter()
            row = {"step": state.step, "samples_seen": state.samples_seen, "loss": window_loss / window_n,
                   "lr": scheduler.get_last_lr()[0], "samples_per_s": window_n * t.effective_batch / (now - window_t),
                   "wall_s": round(state.wall_s, 3)}
            if accelerator.is_main_process:
                append_jsonl(log_path, row)
            accelerator.log({"loss": row["loss"], "lr": row["lr"], "samples_per_s": row["samples_per_s"]}, step=state.step)
            window_loss, window_n, window_t = 0.0, 0, now

        reached = [m for m in t.milestones if m <= state.samples_seen and m not in state.milestones_done]
        if reached:
            state.milestones_done = tuple(sorted({*state.milestones_done, *reached}))
        if accelerator.is_main_process:
            weights = accelerator.unwrap_model(model).trainable_state_dict()
            for m in reached:
                save_weights(milestone_dir(run_dir, m), weights, state,
                             {"milestone": m, "arm": arm_name, "seed": cfg.seed})
            if reached or state.step % t.resume_every == 0 or state.step == total_steps:
                save_resume(run_dir, weights, state, optimizer, scheduler)
        if stop_at_samples is not None and state.samples_seen >= stop_at_samples:
            break
    bar.close()
    accelerator.end_training()

    result.completed = state.step >= total_steps
    result.wall_s = state.wall_s
    result.samples_per_s = state.samples_seen / state.wall_s if state.wall_s else 0.0
    result.checkpoints = list_checkpoints(run_dir)
    if result.completed and accelerator.is_main_process:
        write_json_atomic(run_dir / "done.json", {"samples_seen": state.samples_seen, "steps": state.step,
                                                  "wall_s": state.wall_s, "samples_per_s": result.samples_per_s,
                                                  "trainable_params": result.trainable_params})
    return result


def list_checkpoints(run_dir: Path) -> list[dict]:
    out = []
    for folder in sorted((Path(run_dir) / "checkpoints").glob("samples_*")):
        if folder.name.endswith((".tmp", ".old")) or not (folder / "train_state.json").is_file():
            continue
        st = read_json(folder / "train_state.json")
        out.append({"milestone": st["milestone"], "samples_seen": st["samples_seen"], "step": st["step"],
                    "path": str(folder), "train_loss": st.get("last_loss"), "wall_s": st.get("wall_s")})
    return out
