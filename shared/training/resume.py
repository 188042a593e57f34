"""Saving and resuming a run (the run folder itself is shared/training/checkpoint.py): its header,
the resume point chosen at start-up, milestone weights, and when a resume point is due."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import yaml

from shared import processes
from shared.config import Config, ConfigError, dump_yaml, to_dict, training_view
from shared.data.order import TrainOrder
from shared.files import read_jsonl, write_json_atomic, write_text_atomic
from shared.precision import check_recorded
from shared.runinfo import versions
from shared.training.checkpoint import RunDir, TrainState, load_resume, save_weights
from shared.training.schedule import MilestonePlan
from shared.training.trainee import Trainee

log = logging.getLogger(__name__)


def write_run_header(run: RunDir, cfg: Config, arm_name: str, order: TrainOrder, total_samples: int,
                     precision: dict, plan: MilestonePlan) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config, f"# resolved config of arm {arm_name!r}\narm_name: {arm_name}\n" + dump_yaml(cfg))
    write_json_atomic(run.root / "versions.json", versions())
    write_json_atomic(run.root / "precision.json", precision)
    first, caps = order.take(0, min(16, total_samples))
    write_json_atomic(run.root / "data_order.json", {
        "seed": cfg.seed, "samples": total_samples, "sha256": order.digest(total_samples),
        "first_clips": first.tolist(), "first_caption_choices": caps.tolist(),
    })
    # which steps run on the trunk and in each milestone's cooldown branch: the control audit compares it
    write_json_atomic(run.root / "schedule.json", plan.describe())


def check_same_config(run_dir: Path, cfg: Config, arm_name: str, why: str = "", evaluating: bool = False) -> None:
    """Refuse to resume a run directory with another training config (``cfg`` as it runs here, precision
    resolved): the result would be neither run. ``evaluating``: only reading its checkpoints, which any
    precision can evaluate."""
    path = RunDir(run_dir).config
    if not path.is_file():
        return
    old = training_view(yaml.safe_load(path.read_text()), arm_name)
    new = training_view(to_dict(cfg), arm_name)
    retired = sorted(set(old) - set(new))  # keys this version no longer has: nothing here reads them
    if retired:
        log.warning("%s: keys this version no longer has, not compared: %s", path, ", ".join(retired))
    diff = check_recorded(path, old, new, sorted(k for k in new if old.get(k, "<absent>") != new[k]), evaluating, why)
    if diff:
        raise ConfigError(f"{path}: this run directory was trained with another config (differs at {', '.join(diff[:8])}); "
                         "use a new --out directory or the original settings")


def _resume_point(run: RunDir, cfg: Config, arm_name: str, precision: dict) -> Path | None:
    """Rank 0's answer for every rank: the resume point to continue from, if any (config checked)."""
    resume = run.find_resume()
    if resume is not None:
        check_same_config(run.root, cfg, arm_name, f"{precision['requested']} -> {precision['resolved']}, {precision['reason']}")
    return resume


def start_or_resume(run: RunDir, accelerator, cfg: Config, arm_name: str, order: TrainOrder, precision: dict,
                    trainee: Trainee, plan: MilestonePlan) -> TrainState:
    state, resume = TrainState(), processes.on_main(lambda: _resume_point(run, cfg, arm_name, precision))
    if resume is not None:
        state = load_resume(resume, lambda folder: trainee.load(accelerator, folder))
        log.info("%s: resuming from step %d (%d samples seen)", run.root, state.step, state.samples_seen)
    elif accelerator.is_main_process:
        write_run_header(run, cfg, arm_name, order, cfg.train.milestones[-1], precision, plan)
    if accelerator.is_main_process:  # drop log rows past the resume point: they will be redone
        rows = [r for r in read_jsonl(run.log) if r.get("update", r["step"]) <= state.updates]
        write_text_atomic(run.log, "".join(json.dumps(r) + "\n" for r in rows))
        _record_layout(run, precision, trainee.layout.name, accelerator.num_processes, state.updates)
    return state


def _record_layout(run: RunDir, precision: dict, layout: str, nproc: int, update: int) -> None:
    """precision.json keeps the numeric recipe and every layout, process count and ``train.deterministic``
    the run trained under, from which optimizer update (a resume under the same ones adds nothing).
    ``train.deterministic`` may change on resume, so the run's ``determinism`` is its least deterministic
    stretch's: what compare-runs may promise of the whole run."""
    path = run.root / "precision.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("recipe", precision["recipe"])  # a run begun before recipes were recorded (the config check held it)
    now = precision.get("determinism") or {}
    det = bool(now.get("deterministic", False))
    layouts = [r for r in info.get("layouts", []) if r["from_step"] <= update]  # later ones are being redone
    last = layouts[-1] if layouts else None
    if not last or (last["layout"], last["processes"], last.get("deterministic", det)) != (layout, nproc, det):
        layouts.append({"layout": layout, "processes": nproc, "deterministic": det, "from_step": update})
    info["layouts"] = layouts
    if now and not det and (info.get("determinism") or {}).get("deterministic", False):
        info["determinism"] = {**now, "from_step": update}  # a deterministic start, continued without
    write_json_atomic(path, info)


class ResumeClock:
    """Is a resume point due: every ``resume_every`` updates, and/or every ``resume_every_min`` minutes
    of training. The clock is read at log steps by rank 0 alone and its answer broadcast, so every
    process saves at the same step (ranks reading their own clocks could disagree and wait in
    different collectives)."""

    def __init__(self, t):
        self.steps, self.seconds, self.log_every = t.resume_every, 60 * t.resume_every_min, t.log_every
        self.last = time.perf_counter()

    def due(self, update: int) -> bool:
        if self.steps and update % self.steps == 0:
            return True
        if self.seconds and update % self.log_every == 0:
            return processes.on_main(lambda: time.perf_counter() - self.last >= self.seconds)
        return False

    def saved(self) -> None:
        self.last = time.perf_counter()


def save_milestones(accelerator, trainee: Trainee, run: RunDir, state: TrainState, reached: list[int],
                    arm_name: str, seed: int) -> None:
    """The trainable weights gathered into one file per milestone (a collective under FSDP2)."""
    full = trainee.layout.full_state_dict(accelerator, trainee.model)
    if accelerator.is_main_process:
        weights = {n: full[n] for n in trainee.trainable_names}
        for m in reached:
            save_weights(run.milestone(m), weights, state, {"milestone": m, "arm": arm_name, "seed": seed},
                         config=run.config)
    accelerator.wait_for_everyone()


def last_saved(run: RunDir) -> str:
    ckpts = run.checkpoints()
    return ckpts[-1]["path"] if ckpts else "none yet"
