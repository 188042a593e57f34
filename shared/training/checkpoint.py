"""The run folder of one (arm, seed) training, and its checkpoints, written atomically.

``RunDir`` is the one owner of the layout:

- ``config.yaml``, ``precision.json``, ``versions.json``, ``data_order.json``: the run's header;
- ``checkpoints/samples_<N>/``: one per milestone: the trainable weights gathered to one
  ``model.safetensors`` (whatever the sharding), ``train_state.json`` and the resolved
  ``config.yaml``, so a checkpoint describes itself;
- ``resume/update_<N>/``: the latest resume point, after N optimizer updates, written by every
  process in its layout's format (``accelerator.save_state`` under DDP; a torch distributed
  checkpoint of sharded weights and AdamW states under FSDP2; shared/training/parallel.py) plus
  ``train_state.json`` (step, samples seen, milestones done; the data position follows from the
  step); ``branch_point/update_<N>/`` likewise, the trunk's state where a cooldown branch left it.
  Each save is written into a folder named for it alone and renamed when complete (``save_point``);
- ``train_log.jsonl``, ``done.json``, and ``.lock`` while a process trains in it.
Frozen parts (encoder, token embeddings, frozen Y-encoder) are rebuilt from the config.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from shared import processes
from shared.config import ConfigError
from shared.files import read_json, swap_in, write_json_atomic


@dataclass
class TrainState:
    step: int = 0  # the data position, in optimizer steps: samples seen by the weights as they are
    samples_seen: int = 0
    milestones_done: tuple[int, ...] = ()
    wall_s: float = 0.0  # training time, accumulated across resumes (branches included)
    last_loss: float | None = None
    updates: int = 0  # optimizer updates done by the run, trunk and branches (monotonic, unlike step)
    branch: int | None = None  # the milestone whose cooldown branch these weights are in; None = trunk
    trunk_wall_s: float = 0.0
    branch_wall_s: float = 0.0  # in the current branch

    @property
    def path_s(self) -> float:
        """Training seconds spent on the path to these weights: the trunk up to here, and the branch."""
        return self.trunk_wall_s + self.branch_wall_s

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones_done"] = list(self.milestones_done)
        d["path_s"] = self.path_s
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> "TrainState":
        d = dict(d)
        d["milestones_done"] = tuple(d.get("milestones_done", ()))
        d.setdefault("updates", d.get("step", 0))  # states written before branches existed: all trunk
        d.setdefault("trunk_wall_s", d.get("wall_s", 0.0))
        return TrainState(**{k: v for k, v in d.items() if k in TrainState.__dataclass_fields__})


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.log = self.root / "train_log.jsonl"
        self.done = self.root / "done.json"
        self.resume = self.root / "resume"
        self.branch_point = self.root / "branch_point"  # the trunk's state where the current cooldown branch left it

    @staticmethod
    def of(out: str | Path, arm: str, seed: int) -> "RunDir":
        """The run folder of (arm, seed) inside a comparison's output folder."""
        return RunDir(Path(out) / "runs" / arm / f"seed{seed}")

    @staticmethod
    def locate(path: str | Path) -> tuple[Path, "RunDir | None"]:
        """(milestone folder, its run folder if known) for a milestone folder, or a run folder (its
        last milestone)."""
        path = Path(path)
        if (path / "model.safetensors").is_file():
            return path, RunDir(path.parent.parent) if path.parent.name == "checkpoints" else None
        run = RunDir(path)
        done = run.checkpoints()
        if not done:
            raise FileNotFoundError(f"{path}: neither a checkpoint (model.safetensors) nor a run folder with "
                                    "checkpoints/samples_*")
        return Path(done[-1]["path"]), run

    def milestone(self, samples: int) -> Path:
        return self.root / "checkpoints" / f"samples_{samples:010d}"

    def find_resume(self) -> Path | None:
        """The newest complete resume point, if any."""
        return latest_point(self.resume)

    def find_branch_point(self) -> Path | None:
        return latest_point(self.branch_point)

    def checkpoints(self) -> list[dict]:
        out = []
        for folder in sorted((self.root / "checkpoints").glob("samples_*")):
            if folder.name.endswith((".tmp", ".old")) or not (folder / "train_state.json").is_file():
                continue
            st = read_json(folder / "train_state.json")
            out.append({"milestone": st["milestone"], "samples_seen": st["samples_seen"], "step": st["step"],
                        "path": str(folder), "train_loss": st.get("last_loss"), "wall_s": st.get("wall_s"),
                        "train_s": st.get("path_s", st.get("wall_s"))})
        return out


def save_weights(folder: Path, weights: dict[str, torch.Tensor], state: TrainState, extra: dict[str, Any] | None = None,
                 config: Path | None = None) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "model.safetensors"))
    write_json_atomic(tmp / "train_state.json", {**state.to_json(), **(extra or {})})
    if config is not None and config.is_file():
        shutil.copy(config, tmp / "config.yaml")
    swap_in(tmp, folder)


def load_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: not a checkpoint (no model.safetensors)")
    return load_file(str(folder / "model.safetensors")), read_json(folder / "train_state.json")


_POINT = re.compile(r"update_(\d{9})(\.old)?")  # a complete point; .old: a crash hit between swap_in's renames


def latest_point(parent: Path) -> Path | None:
    """The newest complete point in ``parent`` (``update_<N>`` with its train_state.json; half-written
    ``.tmp`` folders are never candidates). A folder of an earlier version, ``parent`` itself or
    ``<parent>.old`` holding train_state.json, when there is none."""
    points = []
    for folder in parent.glob("update_*") if parent.is_dir() else ():
        if (m := _POINT.fullmatch(folder.name)) and (folder / "train_state.json").is_file():
            points.append((int(m.group(1)), m.group(2) is None, folder))
    if points:
        return max(points)[2]
    for folder in (parent, parent.with_name(parent.name + ".old")):
        if (folder / "train_state.json").is_file():
            return folder
    return None


def save_point(accelerator, parent: Path, state: TrainState, write: Callable[[Path], None]) -> Path:
    """Every process writes its part (``write(folder)``: the layout's model, optimizer, schedule and
    RNG states, sharded under FSDP2) into a folder named for this save alone,
    ``update_<N>.<token>.tmp``: no process ever writes into a folder another one deleted and made
    again (on a network filesystem, a stale file handle on the other node). Once every process has
    written, rank 0 adds train_state.json, renames it to ``update_<N>`` and removes the older points
    and any half-written folder of a crashed save."""
    final = parent / f"update_{state.updates:09d}"
    token = processes.on_main(lambda: uuid.uuid4().hex[:8])
    tmp = parent / f"{final.name}.{token}.tmp"
    if accelerator.is_main_process:
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / "train_state.json", state.to_json())
        swap_in(tmp, final)  # the same update saved again (a branch's end, then the trunk restored): replaced whole
        _prune(parent, final)
    accelerator.wait_for_everyone()
    return final


def _prune(parent: Path, keep: Path) -> None:
    """Everything in ``parent`` but ``keep``: older points, crashed saves' folders, an earlier version's files."""
    for entry in parent.iterdir():
        if entry == keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def save_resume(accelerator, run: RunDir, state: TrainState, write: Callable[[Path], None],
                folder: Path | None = None) -> None:
    """A resume point of ``run`` (``save_point``), or with ``folder`` = ``run.branch_point`` the
    branch point of a cooldown branch."""
    save_point(accelerator, folder or run.resume, state, write)


def load_resume(folder: Path, read: Callable[[Path], None]) -> TrainState:
    """Load a resume point (``read(folder)``: the layout's loader, which checks that every trainable
    weight is in it) and return its training state."""
    read(folder)
    return TrainState.from_json(read_json(folder / "train_state.json"))


# ---- one process at a time in a folder ------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def folder_lock(folder: Path, what: str = "run"):
    """Hold ``folder/.lock`` (pid and host) while working in ``folder``; refuse if a live process
    holds it, take over a stale one (its process is gone)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid, host = lock.read_text().split()
            except (OSError, ValueError):
                pid, host = "0", ""
            if host == socket.gethostname() and _alive(int(pid)) and int(pid) != os.getpid():
                raise ConfigError(f"{folder}: in use by another {what} (pid {pid}); wait for it or use another --out")
            if host and host != socket.gethostname():
                raise ConfigError(f"{folder}: locked by a process on {host} (pid {pid}); remove {lock} if it is gone")
            lock.unlink(missing_ok=True)  # stale: its process ended without removing it
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        try:
            if lock.read_text() == me:
                lock.unlink()
        except OSError:
            pass
