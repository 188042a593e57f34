"""The learning-rate schedule and where the evaluated checkpoints come from, shared by every arm.

Two protocols for the milestones of a sample-efficiency curve:

- **plain** (``train.milestone_cooldown: 0``): one run; the checkpoint at milestone m is the
  model as it stands after m samples. Under a decaying schedule (cosine, linear) only the last
  milestone is an annealed model; under ``constant`` (the paper's section 4.4 protocol) none is.
- **cooldown branches** (``train.milestone_cooldown: c`` > 0): a trunk trained under the
  schedule, and for each milestone m a short branch that leaves the trunk c*m samples before m,
  sees the same data positions as the trunk would, and decays the rate linearly to zero by m;
  the branch's end is the evaluated checkpoint, and the trunk resumes from the branch point,
  unaffected. Every point of the curve is then an annealed model that has seen exactly m samples
  (the warmup-stable-decay practice), at c * sum(milestones) extra samples of compute.

``schedule: wsd`` (warmup, constant, linear decay to zero over the last ``decay_frac``) is a
single run with the same decay as one branch: a cooldown milestone equals the wsd run that stops
there (tested bitwise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def total_steps(t) -> int:
    """Optimizer steps of the trunk: up to the last milestone."""
    return math.ceil(t.milestones[-1] / t.effective_batch)


def milestone_step(t, milestone: int) -> int:
    return math.ceil(milestone / t.effective_batch)


def decay_steps(fraction: float, steps: int) -> int:
    """Steps of a linear decay over ``fraction`` of ``steps`` (at least one)."""
    return min(steps, max(1, round(fraction * steps)))


def warmup_steps(t, total: int) -> int:
    return max(1, round(t.warmup_frac * total))


def trunk_factor(step: int, total: int, t) -> float:
    """The trunk's rate at optimizer step ``step`` as a fraction of ``train.lr``."""
    warmup = warmup_steps(t, total)
    if step < warmup:
        return (step + 1) / warmup
    if t.schedule == "constant":
        return 1.0
    if t.schedule == "wsd":
        k = decay_steps(t.decay_frac, total)
        return 1.0 if step < total - k else max(0.0, (total - step) / k)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if t.schedule == "cosine" else 1 - progress
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * shape


@dataclass(frozen=True)
class Branch:
    """The cooldown of one milestone: optimizer steps [start, end) decaying to zero, then a checkpoint."""

    milestone: int
    start: int
    end: int

    def factor(self, step: int) -> float:
        return (self.end - step) / (self.end - self.start)


@dataclass(frozen=True)
class MilestonePlan:
    """Which optimizer steps run on the trunk and which in each milestone's cooldown branch."""

    total: int  # the trunk's nominal length (sets warmup and the decaying schedules' span)
    branches: tuple[Branch, ...]  # empty: plain protocol

    @staticmethod
    def of(t) -> "MilestonePlan":
        total = total_steps(t)
        if not t.milestone_cooldown:
            return MilestonePlan(total, ())
        branches = []
        for m in t.milestones:
            end = milestone_step(t, m)
            branches.append(Branch(m, end - decay_steps(t.milestone_cooldown, end), end))
        return MilestonePlan(total, tuple(branches))

    @property
    def cooldown(self) -> bool:
        return bool(self.branches)

    @property
    def trunk_end(self) -> int:
        """The trunk is trained up to the last branch point (nothing is evaluated beyond it)."""
        return max(b.start for b in self.branches) if self.branches else self.total

    def branch(self, milestone: int) -> Branch:
        return next(b for b in self.branches if b.milestone == milestone)

    def next_branch(self, step: int, done: tuple[int, ...]) -> Branch | None:
        """The branch that leaves the trunk at ``step`` and has not run yet."""
        return next((b for b in self.branches if b.start == step and b.milestone not in done), None)

    @property
    def updates(self) -> int:
        """Optimizer updates of the whole run, branches included (for progress bars)."""
        return self.trunk_end + sum(b.end - b.start for b in self.branches)

    def describe(self) -> dict:
        return {"trunk_steps": self.trunk_end, "nominal_steps": self.total, "updates": self.updates,
                "branches": [{"milestone": b.milestone, "start_step": b.start, "end_step": b.end}
                             for b in self.branches]}


class Schedule:
    """The factor LambdaLR multiplies the groups' rates by: the trunk's, times the decay of the
    branch being run (``branch`` is set by the loop when it enters and leaves a branch)."""

    def __init__(self, t, plan: MilestonePlan):
        self.t, self.plan = t, plan
        self.branch: Branch | None = None

    def __call__(self, step: int) -> float:
        f = trunk_factor(step, self.plan.total, self.t)
        return f * self.branch.factor(step) if self.branch is not None else f


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    # a plain function, not the Schedule object: LambdaLR would otherwise save and restore its
    # attributes with the state, and the branch being run is the loop's to set
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s))

