"""Checkpoints: trainable weights (safetensors) plus a train-state JSON, written atomically.

- ``checkpoints/samples_<N>/``: one per milestone, kept for evaluation.
- ``resume/``: the latest resume point (weights, optimizer, scheduler, RNG), replaced atomically.
Frozen parts (encoder, token embeddings, frozen Y-encoder) are rebuilt from the config, not saved.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from shared.runinfo import read_json, write_json_atomic


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    samples_seen: int = 0
    milestones_done: tuple[int, ...] = ()
    wall_s: float = 0.0  # training time, accumulated across resumes
    last_loss: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones_done"] = list(self.milestones_done)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> "TrainState":
        d = dict(d)
        d["milestones_done"] = tuple(d.get("milestones_done", ()))
        return TrainState(**{k: v for k, v in d.items() if k in TrainState.__dataclass_fields__})


def milestone_dir(run_dir: Path, milestone: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"samples_{milestone:010d}"


def _write_dir(final: Path, write) -> None:
    """Write into ``final.tmp`` then swap it in, so ``final`` is always complete or absent."""
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save_weights(folder: Path, weights: dict[str, torch.Tensor], state: TrainState, extra: dict[str, Any] | None = None) -> None:
    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        write_json_atomic(tmp / "train_state.json", {**state.to_json(), **(extra or {})})

    _write_dir(Path(folder), write)


def save_resume(run_dir: Path, weights: dict[str, torch.Tensor], state: TrainState, optimizer, scheduler) -> None:
    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        write_json_atomic(tmp / "train_state.json", state.to_json())

    _write_dir(Path(run_dir) / "resume", write)


def find_resume(run_dir: Path) -> Path | None:
    """The resume folder, or the previous one if a crash hit between the two renames."""
    for name in ("resume", "resume.old"):
        folder = Path(run_dir) / name
        if (folder / "train_state.json").is_file() and (folder / "optimizer.pt").is_file():
            return folder
    return None


def load_resume(folder: Path, optimizer, scheduler) -> tuple[dict[str, torch.Tensor], TrainState]:
    blob = torch.load(folder / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    return load_file(str(folder / "model.safetensors")), TrainState.from_json(read_json(folder / "train_state.json"))


def load_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: not a checkpoint (no model.safetensors)")
    return load_file(str(folder / "model.safetensors")), read_json(folder / "train_state.json")
