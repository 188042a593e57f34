"""Experiment trackers (``log.trackers``), through accelerate's tracker classes.

Each (arm, seed) run logs two tracker runs: ``train`` (loss, learning rate, samples/s and samples
seen, by optimizer step; the loop passes them to the Accelerator's ``log_with``) and ``eval`` (each
evaluated milestone's metrics, with samples seen as the step axis), both with the run's resolved
config as hyperparameters. TensorBoard writes into the run folder (``train/``, ``eval/``); wandb
too (``wandb/``, offline with ``log.offline``); the others follow their own settings (MLFLOW_*,
COMET_*, trackio's and aim's defaults). Every tracker but TensorBoard is an optional extra
(``pip install 'jepa-vs-vlm[wandb]'``). A tracker class registered with accelerate's
``register_tracker_class`` (e.g. by a plugin) is accepted by its name.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker

from shared.config import Config, ConfigError, flatten, to_dict

# tracker -> (module it needs, pip extra of this project)
EXTRAS = {"tensorboard": ("tensorboard", None), "wandb": ("wandb", "wandb"), "trackio": ("trackio", "trackio"),
          "aim": ("aim", "aim"), "mlflow": ("mlflow", "mlflow"), "comet_ml": ("comet_ml", "comet")}
ALIASES = {"comet": "comet_ml"}


def names(cfg: Config) -> list[str]:
    """The configured trackers, checked: known to accelerate and installed."""
    out = []
    for raw in cfg.log.trackers:
        name = ALIASES.get(raw, raw)
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(f"log.trackers: unknown tracker {raw!r}; accelerate knows {sorted(LOGGER_TYPE_TO_CLASS)}")
        module, extra = EXTRAS.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            hint = f"pip install 'jepa-vs-vlm[{extra}]'" if extra else f"pip install {module}"
            raise ConfigError(f"log.trackers: {raw} is not installed ({hint})")
        out.append(name)
    return list(dict.fromkeys(out))


def run_label(run_dir: Path) -> str:
    """``<comparison folder>/<arm>/seed<k>`` for a comparison's run folder, else the folder's name."""
    run_dir = Path(run_dir).absolute()
    if run_dir.parent.parent.name == "runs":
        return f"{run_dir.parents[2].name}/{run_dir.parent.name}/{run_dir.name}"
    return run_dir.name


def open_trackers(cfg: Config, run_dir: Path, phase: str) -> list[GeneralTracker]:
    """Tracker objects (not started) for one phase ("train" or "eval") of the run in ``run_dir``."""
    run_dir, label, out = Path(run_dir), run_label(run_dir), []
    name_of_run = f"{label}/{phase}"
    for name in names(cfg):
        cls = LOGGER_TYPE_TO_CLASS[name]
        if name == "tensorboard":
            out.append(cls(phase, str(run_dir)))
        elif name == "wandb":
            run_dir.mkdir(parents=True, exist_ok=True)
            stable = hashlib.sha1(f"{run_dir.absolute()}|{phase}".encode()).hexdigest()[:16]  # a resume continues it
            kwargs = {"name": name_of_run, "group": label, "dir": str(run_dir), "id": stable, "resume": "allow"}
            out.append(cls(cfg.log.project, **kwargs, **({"mode": "offline"} if cfg.log.offline else {})))
        elif name == "mlflow":
            out.append(cls(experiment_name=cfg.log.project, run_name=name_of_run, tags={"group": label}))
        elif name == "comet_ml":
            out.append(cls(cfg.log.project, **({"online": False} if cfg.log.offline else {})))
        elif name == "trackio":
            out.append(cls(cfg.log.project, name=name_of_run, group=label))
        elif cls.requires_logging_directory:  # aim, and registered trackers: accelerate's own convention
            out.append(cls(name_of_run, str(run_dir)))
        else:
            out.append(cls(name_of_run))
    return out


def hyperparameters(cfg: Config, **extra: Any) -> dict[str, Any]:
    """The resolved config as flat ``section.key`` values trackers accept (numbers, text, booleans)."""
    flat = {**flatten(to_dict(cfg)), **extra}
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in flat.items()}


def train_values(row: dict) -> dict[str, float]:
    return {f"train/{k}": row[k] for k in ("loss", "lr", "samples_per_s", "samples_seen")}


def eval_values(row: dict) -> dict[str, float]:
    """A metrics row's numbers (per evaluation set too), under ``eval/``."""
    skip = {"seed", "step", "milestone"}
    out = {f"eval/{k}": v for k, v in row.items()
           if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, metrics in (row.get("sets") or {}).items():
        out.update({f"eval/{name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
    return out


class EvalLog:
    """The ``eval`` tracker run of one (arm, seed): started on first use, one point per milestone."""

    def __init__(self, cfg: Config, run_dir: Path, arm_name: str):
        self.trackers = open_trackers(cfg, run_dir, "eval")
        self.config = hyperparameters(cfg, arm_name=arm_name)
        self.started = False

    def log(self, row: dict) -> None:
        if not self.started:
            for t in self.trackers:
                t.start()
                t.store_init_configuration(self.config)
            self.started = True
        for t in self.trackers:
            t.log(eval_values(row), step=row["samples_seen"])

    def finish(self) -> None:
        if self.started:
            for t in self.trackers:
                t.finish()
