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
"""
from __future__ import annotations

import contextlib
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
from accelerate.utils import DistributedDataParallelKwargs, DistributedType

from shared import processes, tracking
from shared.config import Config, ConfigError, dump_yaml, to_dict, training_view
from shared.data.loader import ClipBatches, TrainPlan, batches, make_loader
from shared.data.order import TrainOrder
from shared.files import append_jsonl, read_jsonl, write_json_atomic, write_text_atomic
from shared.pipeline import Pipeline
from shared.precision import check_recorded
from shared.progress import progress_bar
from shared.runinfo import versions
from shared.training import determinism
from shared.training.checkpoint import (
    RunDir,
    TrainState,
    folder_lock,
    load_resume,
    save_resume,
    save_weights,
)
from shared.training.optim import build_optimizer
from shared.training.parallel import layout_of, micro_layout, recipe
from shared.training.release import release
from shared.training.schedule import Branch, MilestonePlan, Schedule, build_scheduler
from shared.training.step import coupled_step, independent_step, runs_gradcache

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
    """The Accelerator of one run, computing in ``precision`` (resolved: no, bf16, fp16)."""
    if processes.state().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)  # several runs in one process
    if torch.cuda.is_available():  # TF32 matmuls for what runs in fp32 (master weights, losses)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                       log_with=tracking.open_trackers(cfg, run_dir, "train"), project_dir=str(run_dir),
                       kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)])


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
    precision["determinism"] = determinism.apply(cfg.train.deterministic, accelerator.device)
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


@dataclass
class Trainee:
    """An arm ready to train: laid out by its layout (DDP or FSDP2), with its optimizer and schedule."""

    model: torch.nn.Module  # the arm, laid out (DDP-wrapped or FSDP2-sharded)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    trainable_names: list[str]
    trainable_params: int
    layout: object  # shared/training/parallel.py: Ddp or Fsdp2

    def save(self, accelerator, folder: Path) -> None:
        self.layout.save(accelerator, folder, self.model, self.optimizer, self.scheduler)

    def load(self, accelerator, folder: Path) -> None:
        self.layout.load(accelerator, folder, self.model, self.optimizer, self.scheduler, self.trainable_names)

    def couples(self, accelerator, accum: int) -> bool:
        """Is the loss taken over the effective batch (GradCache)? (shared/training/step.py: runs_gradcache)"""
        return runs_gradcache(accelerator.unwrap_model(self.model).couples_batch(), accum, accelerator.num_processes)


def build_trainee(prepared: Pipeline, arm_name: str, accelerator, layout, schedule: Schedule | None = None) -> Trainee:
    """The arm of ``prepared``'s config laid out, with its optimizer and its schedule (default: the
    config's, from its first step)."""
    cfg, t = prepared.cfg, prepared.cfg.train
    schedule = schedule or Schedule(t, MilestonePlan.of(t))
    arm = prepared.seeded_arm(arm_name, accelerator.device)
    arm.prepare_training()
    if t.activation_checkpointing:
        arm.enable_activation_checkpointing()
    if t.compile:
        arm.compile_layers()
    names = [n for n, p in arm.named_parameters() if p.requires_grad]
    count = arm.parameter_counts()["trainable_params"]
    # the optimizer is built over the laid-out (under FSDP2: sharded) parameters
    model, optimizer = layout.prepare(accelerator, arm, lambda m: build_optimizer(m, cfg))
    scheduler = build_scheduler(optimizer, schedule)  # stepped once per optimizer step
    layout.register(accelerator, scheduler)
    return Trainee(model, optimizer, scheduler, names, count, layout)


def _resume_point(run: RunDir, cfg: Config, arm_name: str, precision: dict) -> Path | None:
    """Rank 0's answer for every rank: the resume point to continue from, if any (config checked)."""
    resume = run.find_resume()
    if resume is not None:
        check_same_config(run.root, cfg, arm_name, f"{precision['requested']} -> {precision['resolved']}, {precision['reason']}")
    return resume


def _start_or_resume(run: RunDir, accelerator, cfg: Config, arm_name: str, order: TrainOrder, precision: dict,
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
        _record_layout(run, precision["recipe"], trainee.layout.name, accelerator.num_processes, state.updates)
    return state


def _record_layout(run: RunDir, recipe: dict, layout: str, nproc: int, update: int) -> None:
    """precision.json keeps the numeric recipe and every layout and process count the run trained
    under, from which optimizer update (a resume under the same ones adds nothing)."""
    path = run.root / "precision.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("recipe", recipe)  # a run begun before recipes were recorded (the config check held it)
    layouts = [r for r in info.get("layouts", []) if r["from_step"] <= update]  # later ones are being redone
    if not layouts or (layouts[-1]["layout"], layouts[-1]["processes"]) != (layout, nproc):
        layouts.append({"layout": layout, "processes": nproc, "from_step": update})
    info["layouts"] = layouts
    write_json_atomic(path, info)


class _ResumeClock:
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
    state = _start_or_resume(run, accelerator, cfg, arm_name, order, precision, trainee, plan)
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
                       _Window(torch.zeros((), device=accelerator.device)), _ResumeClock(t), stop_at_samples)
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
    resume_clock: _ResumeClock
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
                _save_milestones(self.accelerator, self.trainee, self.run, state, reached, self.arm_name,
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
                           f"{self.state.step} (last checkpoint: {_last_saved(self.run)}); lower train.lr or check the data")
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

    def enter_branch(self, branch: Branch) -> None:
        """Keep the trunk's state at the branch point, then decay from there."""
        self.save_resume(self.run.branch_point)
        self.state.branch, self.state.branch_wall_s = branch.milestone, 0.0
        self.schedule.branch = branch
        log.info("%s: cooldown branch of milestone %d: steps %d-%d", self.run.root, branch.milestone, branch.start,
                 branch.end)

    def leave_branch(self, branch: Branch) -> None:
        """The branch's end is the milestone's checkpoint; the trunk resumes from the branch point."""
        state = self.state
        state.milestones_done = tuple(sorted({*state.milestones_done, branch.milestone}))
        _save_milestones(self.accelerator, self.trainee, self.run, state, [branch.milestone], self.arm_name,
                         self.prepared.cfg.seed)
        trunk = load_resume(self.run.branch_point, lambda f: self.trainee.load(self.accelerator, f))
        # model, optimizer, schedule position and RNG are the trunk's again; the run's counters go on
        state.step, state.samples_seen, state.branch, state.branch_wall_s = trunk.step, trunk.samples_seen, None, 0.0
        self.schedule.branch = None
        self.save_resume()


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


def _save_milestones(accelerator, trainee: Trainee, run: RunDir, state: TrainState, reached: list[int],
                     arm_name: str, seed: int) -> None:
    """The trainable weights gathered into one file per milestone (a collective under FSDP2)."""
    full = trainee.layout.full_state_dict(accelerator, trainee.model)
    if accelerator.is_main_process:
        weights = {n: full[n] for n in trainee.trainable_names}
        for m in reached:
            save_weights(run.milestone(m), weights, state, {"milestone": m, "arm": arm_name, "seed": seed},
                         config=run.config)
    accelerator.wait_for_everyone()
