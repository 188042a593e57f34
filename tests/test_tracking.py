"""Trackers (log.trackers) are checked by name; evaluation rows become tracker values; the recording
tracker that test_export.py registers with accelerate's generic interface (its smoke comparison logs
to it, to TensorBoard and to wandb offline where installed)."""
import importlib.util

import pytest
from accelerate.tracking import GeneralTracker

from shared.config import ConfigError
from shared.tracking import eval_values, names

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


def test_evaluation_rows_become_numbers_per_set():
    row = {"arm": "jepa", "seed": 0, "step": 2, "samples_seen": 64, "milestone": 64, "cider": 0.5, "top5": None,
           "sets": {"msrvtt": {"cider": 0.4, "top5": 0.2}}}
    assert eval_values(row) == {"eval/samples_seen": 64, "eval/cider": 0.5, "eval/msrvtt/cider": 0.4,
                                "eval/msrvtt/top5": 0.2}
