"""The one training loop, for every arm (Accelerate: devices, processes, mixed precision; the layout,
DDP or FSDP2, from shared/training/parallel.py).

Controlled by construction: the data order, the effective batch, the optimizer and the schedule
come from the shared config sections; the arm only supplies ``loss(batch)`` (or, for a loss over
the whole batch, ``embeddings`` and ``coupled_loss``) and its parameter groups. Checkpoints are
taken at milestones counted in samples seen, either as the run passes them or at the end of a
cooldown branch per milestone (``train.milestone_cooldown``, see schedule.py); a resume point is
saved at every milestone, every ``train.resume_every`` updates and every ``train.resume_every_min``
minutes, by every process, and re-running the same command on the same run directory continues
from it (on the trunk or inside a branch) with the same result as an uninterrupted run. Decisions
read from the filesystem (is there a resume point, which checkpoints exist) are taken by rank 0 and
broadcast, after a start-up check that every rank sees the run folder. The loss is read on the
host only at logging and checkpoint steps; a non-finite loss then ends the run with one line, and
no checkpoint is written after it.

This module keeps the steps; the arm's set-up is shared/training/trainee.py, the walk through the
milestone plan and its cooldown branches shared/training/cooldown.py, the run header, resume points
and milestone weights shared/training/resume.py (on the run folder of shared/training/checkpoint.py).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType

from shared import processes, tracking
from shared.config import Config, ConfigError
from shared.data.loader import ClipBatches, TrainPlan, batches, make_loader
from shared.data.order import TrainOrder
from shared.files import append_jsonl, write_json_atomic
from shared.pipeline import Pipeline
from shared.progress import progress_bar
from shared.training import cooldown, determinism
from shared.training.checkpoint import RunDir, TrainState, folder_lock, save_resume
from shared.training.parallel import layout_of, micro_layout, recipe
from shared.training.release import release
from shared.training.resume import ResumeClock, last_saved, save_milestones, start_or_resume
from shared.training.schedule import MilestonePlan, Schedule
from shared.training.step import coupled_step, independent_step
from shared.training.trainee import Trainee, build_trainee

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


def new_accelerator(cfg: Config, run_dir: Path, precision: str):
    """The Accelerator of one run, computing in ``precision`` (resolved: no, bf16, fp16), with torch's
    determinism switches set for ``train.deterministic`` (TF32 for fp32 parts on unless it is true)."""
    if processes.state().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)  # several runs in one process
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                              log_with=tracking.open_trackers(cfg, run_dir, "train"), project_dir=str(run_dir),
                              kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)])
    determinism.apply(cfg.train.deterministic, accelerator.device)
    return accelerator


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


def train_arm(prepared: Pipeline, arm_name: str, run_dir: str | Path, stop_at_samples: int | None = None,
              progress: bool = True) -> TrainResult:
    """Train (or resume) one arm into ``run_dir``. ``stop_at_samples``: stop once the run has trained
    on that many samples (optimizer updates x effective batch, cooldown branches included), resumably.
    The precision is the pipeline's runtime's (resolved once by the command); ``prepared.cfg`` holds it
    resolved, as the run records, audits and checks it on resume."""
    cfg, precision = prepared.cfg, prepared.runtime.precision.record()
    log.info("train %s seed %d: precision %s (%s: %s)", arm_name, cfg.seed, precision["resolved"],
             precision["requested"], precision["reason"])
    run = RunDir(run_dir)
    processes.configure(cfg)
    accelerator = new_accelerator(cfg, run.root, precision["resolved"])
    precision["determinism"] = determinism.record(accelerator.device.type)
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ConfigError("launched with Accelerate's FSDP plugin: the suite shards the model itself "
                          "(train.parallel=fsdp2); launch with a plain multi-GPU config (experiments/accelerate/)")
    processes.check_shared_folder(run.root)
    layout = layout_of(cfg.train.parallel)
    precision["recipe"] = recipe(precision["resolved"])
    with contextlib.ExitStack() as held:
        held.callback(release, accelerator)  # last: the model dies with its run (shared/training/release.py)
        # rank 0 holds the folder's lock; a refusal there ends every rank, not only rank 0
        processes.on_main(lambda: held.enter_context(folder_lock(run.root, "training")) and None)
        held.enter_context(layout.process_group(accelerator))
        return _train(prepared, arm_name, run, accelerator, layout, precision, stop_at_samples, progress)


def step_gradients(accelerator, trainee: Trainee, micro_batches: list, coupled: bool) -> torch.Tensor:
    """The forward and backward passes of one optimizer step (gradients synchronised); its loss."""
    model, arm = trainee.model, accelerator.unwrap_model(trainee.model)
    return (coupled_step(accelerator, model, arm, micro_batches) if coupled
            else independent_step(accelerator, model, arm, micro_batches))


def optimizer_step(accelerator, trainee: Trainee, micro_batches: list, coupled: bool, grad_clip: float) -> torch.Tensor:
    step_loss = step_gradients(accelerator, trainee, micro_batches, coupled)
    if grad_clip > 0:
        trainee.layout.clip_grad_norm(accelerator, trainee.model, grad_clip)
    trainee.optimizer.step()
    trainee.scheduler.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    return step_loss


def _train(prepared: Pipeline, arm_name: str, run: RunDir, accelerator, layout, precision: dict,
           stop_at_samples: int | None, progress: bool) -> TrainResult:
    cfg, t = prepared.cfg, prepared.cfg.train
    plan = MilestonePlan.of(t)
    schedule = Schedule(t, plan)
    nproc = accelerator.num_processes
    micro, accum = micro_layout(t.effective_batch, t.micro_batch, nproc)
    train = prepared.dataset.split("train")
    order = TrainOrder(cfg.seed, train.caption_counts())
    trainee = build_trainee(prepared, arm_name, accelerator, layout, schedule)
    state = start_or_resume(run, accelerator, cfg, arm_name, order, precision, trainee, plan)
    schedule.branch = plan.branch(state.branch) if state.branch is not None else None
    log.info("%s: %s over %d process(es), %d x %d samples per process and step", arm_name, layout.name, nproc,
             accum, micro)
    # micro-batch k of this process = micro-step k % accum of step k // accum: a stream opened at a
    # step sees exactly what an uninterrupted run sees there (trunk, branch or resume alike)
    reads = TrainPlan(order, accelerator.process_index, t.effective_batch, micro, accum)
    dataset = ClipBatches(train, reads, prepared.features.reader(train), cfg.data.query)

    def stream(first: int, stop: int):
        return batches(make_loader(dataset, first * accum, stop * accum, cfg.data.workers, cfg.data.prefetch,
                                   pin=accelerator.device.type == "cuda", persistent=True))

    accelerator.init_trackers("train", config=tracking.hyperparameters(cfg, arm_name=arm_name))
    coupled = trainee.couples(accelerator, accum)
    bar = progress_bar(total=plan.updates, initial=state.updates, desc=f"train {arm_name} seed {cfg.seed}", unit="step",
                       disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    session = _Session(prepared, arm_name, run, accelerator, trainee, plan, schedule, state, accum, coupled, bar,
                       _Window(torch.zeros((), device=accelerator.device)), ResumeClock(t), stop_at_samples)
    trainee.model.train()
    cooldown.run_plan(session, stream)
    bar.close()
    for tracker in accelerator.trackers:  # not end_training(): it would end the process group evaluation needs
        tracker.finish()
    done = all(m in state.milestones_done for m in t.milestones) and state.branch is None
    return _finish(run, accelerator, state, trainee.trainable_params, done, t.effective_batch)


@dataclass
class _Session:
    """One invocation of the loop over a run folder: steps on the trunk or in a branch, logging,
    milestone checkpoints and resume points."""

    prepared: Pipeline
    arm_name: str
    run: RunDir
    accelerator: object
    trainee: Trainee
    plan: MilestonePlan
    schedule: Schedule
    state: TrainState
    accum: int
    coupled: bool
    bar: object
    window: _Window
    resume_clock: ResumeClock
    stop_at_samples: int | None
    stopped: bool = False
    _clock: float = field(default_factory=time.perf_counter)

    def run_steps(self, stream, stop: int) -> bool:
        """Optimizer steps up to data position ``stop``; False if the run stopped before it."""
        t, state = self.prepared.cfg.train, self.state
        while state.step < stop:
            micro_batches = [self.prepared.features.ready(next(stream), self.accelerator.device) for _ in range(self.accum)]
            step_loss = optimizer_step(self.accelerator, self.trainee, micro_batches, self.coupled, t.grad_clip)
            self._advance(t.effective_batch)
            self.window.add(self.accelerator.reduce(step_loss, reduction="mean"))
            self.bar.update(1)
            # plain protocol: the milestones are the trunk's own states; cooldown: the branches' ends
            reached = [] if self.plan.cooldown else [m for m in t.milestones
                                                     if m <= state.samples_seen and m not in state.milestones_done]
            saving = (bool(reached) or (not self.plan.cooldown and state.step == self.plan.total)
                      or self.resume_clock.due(state.updates))
            if saving or state.updates % t.log_every == 0:
                self._log(self._read_loss())
            if reached:
                state.milestones_done = tuple(sorted({*state.milestones_done, *reached}))
                save_milestones(self.accelerator, self.trainee, self.run, state, reached, self.arm_name,
                                self.prepared.cfg.seed)
            if saving:
                self.save_resume()
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
                           f"{self.state.step} (last checkpoint: {last_saved(self.run)}); lower train.lr or check the data")
        self.state.last_loss = loss
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        return loss

    def save_resume(self, folder: Path | None = None) -> None:
        save_resume(self.accelerator, self.run, self.state, lambda f: self.trainee.save(self.accelerator, f), folder)
        if folder is None:
            self.resume_clock.saved()

    def _log(self, loss: float) -> None:
        _log_row(self.accelerator, self.run, self.state, self.window, loss, self.trainee.scheduler,
                 self.prepared.cfg.train.effective_batch)


def _finish(run: RunDir, accelerator, state: TrainState, trainable_params: int, completed: bool,
            batch: int) -> TrainResult:
    result = TrainResult(run.root, trainable_params=trainable_params, completed=completed,
                         wall_s=state.wall_s, checkpoints=processes.on_main(run.checkpoints),  # rank 0's listing
                         samples_per_s=state.updates * batch / state.wall_s if state.wall_s else 0.0)
    if result.completed and accelerator.is_main_process:
        write_json_atomic(run.done, {"samples_seen": state.samples_seen, "steps": state.step, "updates": state.updates,
                                     "wall_s": state.wall_s,
                                     "samples_per_s": result.samples_per_s, "trainable_params": result.trainable_params})
    return result


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

