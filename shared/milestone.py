"""One milestone checkpoint -> the arm it holds, ready to evaluate: the one loader of the suite.

A milestone folder (``checkpoints/samples_<N>/``) describes itself: ``model.safetensors`` (the
trainable weights), ``train_state.json`` (samples seen, step) and ``config.yaml`` (the run's
resolved config, headed by ``arm_name``). ``load_arm`` reads these, builds the arm from that config
(or from a pipeline the caller already prepared, checked to be the same training config), loads the
weights and sets the progress, so the arm evaluates as the run's own evaluation did.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from shared import processes
from shared.arm import Arm
from shared.config import Config, ConfigError, config_from_dict, parse_override
from shared.config.loader import set_dotted
from shared.files import read_json
from shared.pipeline import Pipeline, prepare
from shared.precision import Runtime
from shared.training.checkpoint import RunDir, load_weights
from shared.training.resume import check_same_config


@dataclass(frozen=True)
class Milestone:
    folder: Path  # the milestone folder (model.safetensors, train_state.json, config.yaml)
    arm_name: str
    state: dict  # train_state.json: samples_seen, step, milestone, seed...
    config_path: Path  # the resolved config it was trained under
    run: RunDir | None  # its run folder, when it sits in one

    @property
    def samples_seen(self) -> int | None:
        return self.state.get("samples_seen")

    @staticmethod
    def find(path: str | Path) -> "Milestone":
        """A milestone folder, or a run folder (its last milestone)."""
        folder, run = RunDir.locate(path)
        state = read_json(folder / "train_state.json") if (folder / "train_state.json").is_file() else {}
        config = folder / "config.yaml"
        if not config.is_file() and run is not None:  # milestones written before they carried their config
            config = run.config
        if not config.is_file():
            raise FileNotFoundError(f"{folder}: no config.yaml beside the weights (nor in a run folder above it)")
        raw = yaml.safe_load(config.read_text()) or {}
        name = raw.get("arm_name") or state.get("arm")
        if not name:
            raise ConfigError(f"{config}: names no arm (arm_name)")
        return Milestone(folder, name, state, config, run)

    def config(self, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """The run's resolved config (``overrides`` on top, e.g. ``cache_dir=...`` on another machine)."""
        raw = yaml.safe_load(self.config_path.read_text()) or {}
        raw.pop("arm_name", None)
        for item in overrides:
            set_dotted(raw, *parse_override(item))
        try:
            return config_from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{self.config_path}: {e}") from None

    def weights(self) -> dict[str, torch.Tensor]:
        return load_weights(self.folder)[0]


def load_arm(checkpoint: str | Path | Milestone, prepared: Pipeline | None = None, device=None,
             overrides: list[str] | tuple[str, ...] = (), evaluation: bool = True, reuse: Arm | None = None,
             runtime: Runtime | None = None) -> Arm:
    """The arm of ``checkpoint`` (a milestone folder, a run folder, or a ``Milestone``), its trained
    weights loaded, its progress (samples seen) set, in eval mode and, with ``evaluation``, its
    evaluation prepared (e.g. the JEPA arm's Y-decoder fitted on what it saw).

    ``prepared``: a pipeline already built (the comparison's, or a command's config): the arm is built
    from it after checking that its training config is the milestone's (precision may differ);
    without it, the milestone's own config is prepared (no features encoded) under ``runtime`` (the
    command's, shared/precision.py: resolve_runtime). ``reuse``: an arm of the
    same name built from ``prepared`` (the previous milestone's), loaded instead of building another
    (a 1B-parameter arm per milestone costs seconds at paper scale).
    """
    m = checkpoint if isinstance(checkpoint, Milestone) else Milestone.find(checkpoint)
    if prepared is None:
        if runtime is None:
            raise ValueError("load_arm: give the pipeline the arm is built from, or the runtime to prepare one under")
        prepared = prepare(m.config(overrides), runtime, splits=())
    else:  # the weights only fit the config they were trained under
        check_same_config(m.config_path.parent, prepared.cfg, m.arm_name, evaluating=True)
    if m.arm_name not in prepared.cfg.arm:
        raise ConfigError(f"{m.folder}: arm {m.arm_name!r} has no section in this config ({sorted(prepared.cfg.arm)})")
    if reuse is not None and reuse.name == m.arm_name:
        arm = reuse
    else:
        with processes.state().local_main_process_first():  # a node reads the base weights once (trainee.py)
            arm = prepared.seeded_arm(m.arm_name, device)
    arm.load_trainable_state_dict(m.weights())
    arm.set_progress(m.samples_seen)
    arm.eval()
    if evaluation:
        with processes.state().main_process_first():  # what it fits and caches (a Y-decoder) is written once
            arm.prepare_evaluation()
    return arm
