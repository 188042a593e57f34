"""Where a command's wall time went: seconds per phase, kept in ``timings.json`` beside its results.

Each invocation of a command (a first run, then every resume) adds one entry of phases in the
order they ran; work that belongs to a milestone (its training since the previous milestone, the
Y-decoder fit it needed, its evaluation) is kept per (arm, seed, milestone) and survives resumes, so
a finished folder always tells what each point of the curve cost. Written atomically after every
phase: a killed run keeps what it measured.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from shared.files import read_json, write_json_atomic

_command_start = time.perf_counter()  # reset by the command line when a command starts (before torch loads)


def mark_command_start() -> None:
    global _command_start
    _command_start = time.perf_counter()


class Timings:
    def __init__(self, path: Path | None):
        self.path = path
        old = read_json(path) if path is not None and path.is_file() else {}
        self.invocations: list[dict] = old.get("invocations", [])
        self.milestones: dict[str, dict] = old.get("milestones", {})
        self.phases: dict[str, float] = {}
        self.invocations.append({"phases": self.phases})
        self.add("start-up (imports, config)", time.perf_counter() - _command_start)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + seconds, 2)
        self.save()

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def milestone(self, arm: str, seed: int, milestone: int, **seconds: float | None) -> None:
        row = self.milestones.setdefault(f"{arm}/seed{seed}/{milestone}", {"arm": arm, "seed": seed, "milestone": milestone})
        row.update({k: round(v, 2) for k, v in seconds.items() if v is not None})
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.invocations[-1]["total_s"] = round(time.perf_counter() - _command_start, 2)
        write_json_atomic(self.path, {"invocations": self.invocations, "milestones": self.milestones})
