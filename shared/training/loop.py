"""The one training loop, for every arm (Accelerate: devices, processes, DDP/FSDP, mixed precision).

Controlled by construction: the data order, the effective batch, the optimizer and the schedule
come from the shared config sections; the arm only supplies ``loss(batch)`` (or, for a loss over
the whole batch, ``embeddings`` and ``coupled_loss``) and its parameter groups. Checkpoints are
taken at milestones counted in samples seen, either as the run passes them or at the end of a
cooldown branch per milestone (``train.milestone_cooldown``, see schedule.py); a resume point is
saved at every milestone and every ``train.resume_every`` updates, by every process, and re-running
the same command on the same run directory continues from it (on the trunk or inside a branch)
with the same result as an uninterrupted run. The loss is read on the
host only at logging and checkpoint steps; a non-finite loss then ends the run with one line, and
no checkpoint is written after it.
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
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from shared import processes, tracking
from shared.config import Config, ConfigError, dump_yaml, to_dict, training_view
from shared.data.loader import ClipBatches, TrainPlan, batches, make_loader
from shared.data.order import TrainOrder
from shared.files import append_jsonl, read_jsonl, write_json_atomic, write_text_atomic
from shared.pipeline import Prepared
from shared.precision import decision, resolve_config
from shared.progress import progress_bar
from shared.runinfo import versions
from shared.training.checkpoint import (
    RunDir,
    TrainState,
    folder_lock,
    load_resume,
    save_resume,
    save_weights,
)
from shared.training.optim import build_optimizer
from shared.training.schedule import Branch, MilestonePlan, Schedule, build_scheduler
from shared.training.step import coupled_step, independent_step

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    checkpoints: list[dict] = field(default_factory=list)  # {milestone, samples_seen, step, path}
    wall_s: float = 0.0
    samples_per_s: float = 0.0
    trainable_params: int = 0
    completed: bool = False


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the last checkpoint before it is intact, so a resume
    with another setting can start there."""

    exit_code = 3


def new_accelerator(cfg: Config, run_dir: Path):
    if processes.state().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)  # several runs in one process
    if torch.cuda.is_available():  # TF32 matmuls for what runs in fp32 (master weights, losses)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision,
                       log_with=tracking.open_trackers(cfg, run_dir, "train"), project_dir=str(run_dir))


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
    """Refuse to resume a run directory with another training config: the result would be neither run.
    ``evaluating``: only reading its checkpoints, which any precision can evaluate."""
    path = RunDir(run_dir).config
    if not path.is_file():
        return
    cfg = resolve_config(cfg)
    old = training_view(yaml.safe_load(path.read_text()), arm_name)
    new = training_view(to_dict(cfg), arm_name)
    retired = sorted(set(old) - set(new))  # keys this version no longer has: nothing here reads them
    if retired:
        log.warning("%s: keys this version no longer has, not compared: %s", path, ", ".join(retired))
    diff = sorted(k for k in new if old.get(k, "<absent>") != new[k])
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


@dataclass
class _Window:
    """Losses since the last log line, kept on the device: read on the host only when logged."""

    loss: torch.Tensor
    steps: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, step_loss: torch.Tensor) -> None:
        self.loss += step_loss
        self.steps += 1

    def read(self) -> float:
        return self.loss.item() / max(1, self.steps)

    def reset(self) -> None:
        self.loss.zero_()
        self.steps, self.start = 0, time.perf_counter()


def train_arm(prepared: Prepared, arm_name: str, run_dir: str | Path, stop_at_samples: int | None = None,
              progress: bool = True) -> TrainResult:
    precision = decision(prepared.cfg)
    cfg = resolve_config(prepared.cfg)  # recorded, audited and checked on resume as resolved
    prepared = dataclasses.replace(prepared, cfg=cfg)
    log.info("train %s seed %d: precision %s (%s: %s)", arm_name, cfg.seed, precision["resolved"],
             precision["requested"], precision["reason"])
    run = RunDir(run_dir)
    accelerator = new_accelerator(cfg, run.root)
    lock = folder_lock(run.root, "training") if accelerator.is_main_process else contextlib.nullcontext()
    with lock:
        return _train(prepared, arm_name, run, accelerator, precision, stop_at_samples, progress)


@dataclass
class _Trainee:
    """An arm ready to train: wrapped by Accelerate, with its optimizer and schedule."""

    model: torch.nn.Module  # the prepared (DDP/FSDP-wrapped) arm
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    trainable_names: list[str]
    trainable_params: int


def _micro_steps(t, nproc: int) -> int:
    """Micro-batches per process and optimizer step, so that every step sees the effective batch."""
    if t.effective_batch % (t.micro_batch * nproc):
        raise ConfigError(f"train.effective_batch={t.effective_batch} is not a multiple of train.micro_batch x "
                          f"processes ({t.micro_batch} x {nproc})")
    return t.effective_batch // (t.micro_batch * nproc)


def _build_trainee(prepared: Prepared, arm_name: str, accelerator, schedule: Schedule) -> _Trainee:
    cfg, t = prepared.cfg, prepared.cfg.train
    arm = prepared.seeded_arm(arm_name, accelerator.device)
    arm.prepare_training()
    if t.activation_checkpointing:
        arm.enable_activation_checkpointing()
    if t.compile:
        arm.compile_layers()
    names = [n for n, p in arm.named_parameters() if p.requires_grad]
    count = arm.parameter_counts()["trainable_params"]
    model = accelerator.prepare(arm)
    # built after prepare, over the prepared (possibly sharded) parameters
    optimizer = accelerator.prepare(build_optimizer(accelerator.unwrap_model(model), cfg))
    scheduler = build_scheduler(optimizer, schedule)
    accelerator.register_for_checkpointing(scheduler)  # saved with the state, stepped once per step
    return _Trainee(model, optimizer, scheduler, names, count)


def _start_or_resume(run: RunDir, accelerator, cfg: Config, arm_name: str, order: TrainOrder, precision: dict,
                     trainable_names: list[str], plan: MilestonePlan) -> TrainState:
    state, resume = TrainState(), run.find_resume()
    if resume is not None:
        check_same_config(run.root, cfg, arm_name, f"{precision['requested']} -> {precision['resolved']}, {precision['reason']}")
        state = load_resume(accelerator, resume, trainable_names)
        log.info("%s: resuming from step %d (%d samples seen)", run.root, state.step, state.samples_seen)
    elif accelerator.is_main_process:
        write_run_header(run, cfg, arm_name, order, cfg.train.milestones[-1], precision, plan)
    if accelerator.is_main_process:  # drop log rows past the resume point: they will be redone
        rows = [r for r in read_jsonl(run.log) if r.get("update", r["step"]) <= state.updates]
        write_text_atomic(run.log, "".join(json.dumps(r) + "\n" for r in rows))
    return state


def _optimizer_step(accelerator, trainee: _Trainee, micro_batches: list, coupled: bool, grad_clip: float) -> torch.Tensor:
    model = trainee.model
    step_loss = (coupled_step(accelerator, model, accelerator.unwrap_model(model), micro_batches) if coupled
                 else independent_step(accelerator, model, accelerator.unwrap_model(model), micro_batches))
    if grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    trainee.optimizer.step()
    trainee.scheduler.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    return step_loss


def _train(prepared: Prepared, arm_name: str, run: RunDir, accelerator, precision: dict,
           stop_at_samples: int | None, progress: bool) -> TrainResult:
    cfg, t = prepared.cfg, prepared.cfg.train
    plan = MilestonePlan.of(t)
    schedule = Schedule(t, plan)
    accum = _micro_steps(t, accelerator.num_processes)
    train = prepared.dataset.split("train")
    order = TrainOrder(cfg.seed, train.caption_counts())
    trainee = _build_trainee(prepared, arm_name, accelerator, schedule)
    state = _start_or_resume(run, accelerator, cfg, arm_name, order, precision, trainee.trainable_names, plan)
    schedule.branch = plan.branch(state.branch) if state.branch is not None else None
    # micro-batch k of this process = micro-step k % accum of step k // accum: a stream opened at a
    # step sees exactly what an uninterrupted run sees there (trunk, branch or resume alike)
    reads = TrainPlan(order, accelerator.process_index, t.effective_batch, t.micro_batch, accum)
    dataset = ClipBatches(train, reads, prepared.features.reader(train), cfg.data.query)

    def stream(first: int, stop: int):
        return batches(make_loader(dataset, first * accum, stop * accum, cfg.data.workers, cfg.data.prefetch,
                                   pin=accelerator.device.type == "cuda", persistent=True))

    accelerator.init_trackers("train", config=tracking.hyperparameters(cfg, arm_name=arm_name))
    # one micro-batch on one process already is the effective batch: the plain loss is the same function
    coupled = accelerator.unwrap_model(trainee.model).couples_batch() and (accum > 1 or accelerator.num_processes > 1)
    bar = progress_bar(total=plan.updates, initial=state.updates, desc=f"train {arm_name} seed {cfg.seed}", unit="step",
                       disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    session = _Session(prepared, arm_name, run, accelerator, trainee, plan, schedule, state, accum, coupled, bar,
                       _Window(torch.zeros((), device=accelerator.device)), stop_at_samples)
    trainee.model.train()
    while not session.stopped:
        if state.branch is not None:  # inside a milestone's cooldown branch (entered, or resumed into)
            branch = plan.branch(state.branch)
            if session.run_steps(stream(state.step, branch.end), branch.end):
                session.leave_branch(branch)
        elif (branch := plan.next_branch(state.step, state.milestones_done)) is not None:
            session.enter_branch(branch)
        elif state.step < plan.trunk_end:
            upcoming = [b.start for b in plan.branches if b.start > state.step and b.milestone not in state.milestones_done]
            session.run_steps(stream(state.step, min(upcoming, default=plan.trunk_end)), min(upcoming, default=plan.trunk_end))
        else:
            break
    bar.close()
    for tracker in accelerator.trackers:  # not end_training(): it would end the process group evaluation needs
        tracker.finish()
    done = all(m in state.milestones_done for m in t.milestones) and state.branch is None
    return _finish(run, accelerator, state, trainee.trainable_params, done, t.effective_batch)


@dataclass
class _Session:
    """One invocation of the loop over a run folder: steps on the trunk or in a branch, logging,
    milestone checkpoints and resume points."""

    prepared: Prepared
    arm_name: str
    run: RunDir
    accelerator: object
    trainee: _Trainee
    plan: MilestonePlan
    schedule: Schedule
    state: TrainState
    accum: int
    coupled: bool
    bar: object
    window: _Window
    stop_at_samples: int | None
    stopped: bool = False
    _clock: float = field(default_factory=time.perf_counter)

    def run_steps(self, stream, stop: int) -> bool:
        """Optimizer steps up to data position ``stop``; False if the run stopped before it."""
        t, state = self.prepared.cfg.train, self.state
        while state.step < stop:
            micro_batches = [self.prepared.features.ready(next(stream), self.accelerator.device) for _ in range(self.accum)]
            step_loss = _optimizer_step(self.accelerator, self.trainee, micro_batches, self.coupled, t.grad_clip)
            self._advance(t.effective_batch)
            self.window.add(self.accelerator.reduce(step_loss, reduction="mean"))
            self.bar.update(1)
            # plain protocol: the milestones are the trunk's own states; cooldown: the branches' ends
            reached = [] if self.plan.cooldown else [m for m in t.milestones
                                                     if m <= state.samples_seen and m not in state.milestones_done]
            saving = (bool(reached) or state.updates % t.resume_every == 0
                      or (not self.plan.cooldown and state.step == self.plan.total))
            if saving or state.updates % t.log_every == 0:
                self._log(self._read_loss())
            if reached:
                state.milestones_done = tuple(sorted({*state.milestones_done, *reached}))
                _save_milestones(self.accelerator, self.trainee.model, self.run, state, reached,
                                 self.trainee.trainable_names, self.arm_name, self.prepared.cfg.seed)
            if saving:
                save_resume(self.accelerator, self.run, state)
            if self.stop_at_samples is not None and state.updates * t.effective_batch >= self.stop_at_samples:
                self.stopped = True
                return False
        return True

    def _advance(self, batch: int) -> None:
        now = time.perf_counter()
        dt, self._clock = now - self._clock, now
        s = self.state
        s.step += 1
        s.updates += 1
        s.samples_seen = s.step * batch
        s.wall_s += dt
        if s.branch is None:
            s.trunk_wall_s += dt
        else:
            s.branch_wall_s += dt

    def _read_loss(self) -> float:
        loss = self.window.read()  # the one host sync: at log and checkpoint steps
        if not math.isfinite(loss):
            raise Diverged(f"{self.arm_name} seed {self.prepared.cfg.seed}: the training loss is {loss} by step "
                           f"{self.state.step} (last checkpoint: {_last_saved(self.run)}); lower train.lr or check the data")
        self.state.last_loss = loss
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        return loss

    def _log(self, loss: float) -> None:
        _log_row(self.accelerator, self.run, self.state, self.window, loss, self.trainee.scheduler,
                 self.prepared.cfg.train.effective_batch)

    def enter_branch(self, branch: Branch) -> None:
        """Keep the trunk's state at the branch point, then decay from there."""
        save_resume(self.accelerator, self.run, self.state, folder=self.run.branch_point)
        self.state.branch, self.state.branch_wall_s = branch.milestone, 0.0
        self.schedule.branch = branch
        log.info("%s: cooldown branch of milestone %d: steps %d-%d", self.run.root, branch.milestone, branch.start,
                 branch.end)

    def leave_branch(self, branch: Branch) -> None:
        """The branch's end is the milestone's checkpoint; the trunk resumes from the branch point."""
        state = self.state
        state.milestones_done = tuple(sorted({*state.milestones_done, branch.milestone}))
        _save_milestones(self.accelerator, self.trainee.model, self.run, state, [branch.milestone],
                         self.trainee.trainable_names, self.arm_name, self.prepared.cfg.seed)
        trunk = load_resume(self.accelerator, self.run.branch_point, self.trainee.trainable_names)
        # model, optimizer, schedule position and RNG are the trunk's again; the run's counters go on
        state.step, state.samples_seen, state.branch, state.branch_wall_s = trunk.step, trunk.samples_seen, None, 0.0
        self.schedule.branch = None
        save_resume(self.accelerator, self.run, state)


def _finish(run: RunDir, accelerator, state: TrainState, trainable_params: int, completed: bool,
            batch: int) -> TrainResult:
    result = TrainResult(run.root, trainable_params=trainable_params, completed=completed,
                         wall_s=state.wall_s, checkpoints=run.checkpoints(),
                         samples_per_s=state.updates * batch / state.wall_s if state.wall_s else 0.0)
    if result.completed and accelerator.is_main_process:
        write_json_atomic(run.done, {"samples_seen": state.samples_seen, "steps": state.step, "updates": state.updates,
                                     "wall_s": state.wall_s,
                                     "samples_per_s": result.samples_per_s, "trainable_params": result.trainable_params})
    return result


def _last_saved(run: RunDir) -> str:
    ckpts = run.checkpoints()
    return ckpts[-1]["path"] if ckpts else "none yet"


def _log_row(accelerator, run: RunDir, state: TrainState, window: _Window, loss: float, scheduler, batch: int) -> None:
    if window.steps == 0:
        return
    now = time.perf_counter()
    row = {"update": state.updates, "step": state.step, "samples_seen": state.samples_seen, "loss": loss,
           "lr": scheduler.get_last_lr()[0], "samples_per_s": window.steps * batch / (now - window.start),
           "wall_s": round(state.wall_s, 3)}
    if state.branch is not None:
        row["branch"] = state.branch  # a milestone's cooldown branch, not the trunk
    if accelerator.is_main_process:
        append_jsonl(run.log, row)
    accelerator.log(tracking.train_values(row), step=state.updates)
    window.reset()


def _save_milestones(accelerator, model, run: RunDir, state: TrainState, reached: list[int], names: list[str],
                     arm_name: str, seed: int) -> None:
    """The trainable weights gathered into one file per milestone (a collective under FSDP)."""
    full = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        weights = {n: full[n] for n in names}
        for m in reached:
            save_weights(run.milestone(m), weights, state, {"milestone": m, "arm": arm_name, "seed": seed},
                         config=run.config)
    accelerator.wait_for_everyone()
