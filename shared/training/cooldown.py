"""Walking a run's milestone plan (shared/training/schedule.py): trunk segments up to the next
branch point, and with ``train.milestone_cooldown`` each milestone's cooldown branch: entered from
the trunk (its state kept as the branch point), run to the branch's end (the milestone's checkpoint),
left by restoring the trunk. The loop's session (shared/training/loop.py) runs the steps."""
from __future__ import annotations

import logging

from shared.training.checkpoint import load_resume
from shared.training.resume import save_milestones
from shared.training.schedule import Branch

log = logging.getLogger(__name__)


def run_plan(session, stream) -> None:
    """Every trunk segment and branch still to run, in plan order, until the run ends or is stopped
    (``stream(first, stop)``: the batches of data positions [first, stop))."""
    plan, state = session.plan, session.state
    while not session.stopped:
        if state.branch is not None:  # inside a milestone's cooldown branch (entered, or resumed into)
            branch = plan.branch(state.branch)
            if session.run_steps(stream(state.step, branch.end), branch.end):
                leave_branch(session, branch)
        elif (branch := plan.next_branch(state.step, state.milestones_done)) is not None:
            enter_branch(session, branch)
        elif state.step < plan.trunk_end:
            upcoming = [b.start for b in plan.branches if b.start > state.step and b.milestone not in state.milestones_done]
            session.run_steps(stream(state.step, min(upcoming, default=plan.trunk_end)), min(upcoming, default=plan.trunk_end))
        else:
            break


def enter_branch(session, branch: Branch) -> None:
    """Keep the trunk's state at the branch point, then decay from there."""
    session.save_resume(session.run.branch_point)
    session.state.branch, session.state.branch_wall_s = branch.milestone, 0.0
    session.schedule.branch = branch
    log.info("%s: cooldown branch of milestone %d: steps %d-%d", session.run.root, branch.milestone, branch.start,
             branch.end)


def leave_branch(session, branch: Branch) -> None:
    """The branch's end is the milestone's checkpoint; the trunk resumes from the branch point."""
    state = session.state
    state.milestones_done = tuple(sorted({*state.milestones_done, branch.milestone}))
    save_milestones(session.accelerator, session.trainee, session.run, state, [branch.milestone], session.arm_name,
                    session.prepared.cfg.seed)
    trunk = load_resume(session.run.find_branch_point(), lambda f: session.trainee.load(session.accelerator, f))
    # model, optimizer, schedule position and RNG are the trunk's again; the run's counters go on
    state.step, state.samples_seen, state.branch, state.branch_wall_s = trunk.step, trunk.samples_seen, None, 0.0
    session.schedule.branch = None
    session.save_resume()
