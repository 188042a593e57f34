"""Trackers (log.trackers) through accelerate: training scalars by optimizer step, evaluation rows by
samples seen, the resolved config as hyperparameters; TensorBoard plus a recording tracker registered
with accelerate's generic interface, and wandb offline where it is installed."""
import importlib.util
import json

import pytest
from accelerate.tracking import GeneralTracker, register_tracker_class

from experiments.cli import main
from shared.config import ConfigError
from shared.tracking import names
from tests.conftest import SMOKE


class Recording(GeneralTracker):
    """Keeps what it is given, in memory."""

    name = "recording"
    requires_logging_directory = False
    runs: list = []

    def __init__(self, run_name: str):
        super().__init__()
        self.run_name, self.config, self.rows, self.finished = run_name, None, [], False
        Recording.runs.append(self)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict):
        self.config = dict(values)

    def log(self, values: dict, step=None, **kwargs):
        self.rows.append((step, dict(values)))

    def finish(self):
        self.finished = True


def test_trackers_are_checked_by_name(smoke_cfg):
    assert names(smoke_cfg()) == ["tensorboard"]
    with pytest.raises(ConfigError, match="log.trackers: unknown tracker 'tensorbored'"):
        names(smoke_cfg("log.trackers=[tensorbored]"))
    if importlib.util.find_spec("aim") is None:
        with pytest.raises(ConfigError, match=r"aim is not installed \(pip install 'jepa-vs-vlm\[aim\]'\)"):
            names(smoke_cfg("log.trackers=[aim]"))


@pytest.mark.slow
def test_a_smoke_run_logs_to_every_configured_tracker(tmp_path, cache_dir, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    register_tracker_class(Recording)
    Recording.runs.clear()
    wandb = importlib.util.find_spec("wandb") is not None
    monkeypatch.setenv("WANDB_SILENT", "true")
    trackers = ["tensorboard", "recording"] + (["wandb"] if wandb else [])
    out = tmp_path / "se"
    assert main(["sample-efficiency", "-c", str(SMOKE), "-o", str(out), f"cache_dir={cache_dir}", "arms=[jepa]",
                 "train.milestones=[32,64]", "train.log_every=1", "eval.max_clips=8", "eval.phrasings=1",
                 f"log.trackers=[{','.join(trackers)}]", "log.offline=true"]) == 0
    run = out / "runs" / "jepa" / "seed0"
    train, ev = Recording.runs
    assert (train.run_name, ev.run_name) == ("se/jepa/seed0/train", "se/jepa/seed0/eval")
    assert train.finished and ev.finished
    # the resolved config as hyperparameters (precision resolved, not "auto")
    assert train.config["train.milestones"] == "[32, 64]" and train.config["arm_name"] == "jepa"
    assert train.config["train.mixed_precision"] in ("no", "bf16") and ev.config == train.config
    # training by step, evaluation by samples seen
    assert [s for s, _ in train.rows] == [1, 2]
    assert set(train.rows[0][1]) == {"train/loss", "train/lr", "train/samples_per_s", "train/samples_seen"}
    assert [v["train/samples_seen"] for _, v in train.rows] == [32, 64]  # effective batch 32
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in ev.rows] == [32, 64] == [r["samples_seen"] for r in metrics]
    assert ev.rows[1][1]["eval/cider"] == metrics[1]["cider"] and ev.rows[1][1]["eval/top5"] == metrics[1]["top5"]
    # TensorBoard: the same, in the run folder
    scalars = {}
    for phase in ("train", "eval"):
        acc = EventAccumulator(str(run / phase))
        acc.Reload()
        scalars.update({tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]})
    assert scalars["train/loss"] == [1, 2] and scalars["eval/cider"] == [32, 64]
    if wandb:  # one offline run per phase, in the run folder
        offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
        assert len(offline) == 2 and all(any((run / "wandb" / d).glob("*.wandb")) for d in offline)
