"""What a run on several nodes needs beyond the layouts (tests/test_distributed.py): one run.log,
written by rank 0, other ranks' warnings named by rank; each node's weights read first by its own
first process. (Step-named resume points: tests/test_checkpoint.py.)"""
import contextlib
import dataclasses
import logging

from accelerate import PartialState

from experiments.cli import setup_logging
from shared.config import load_config
from tests.conftest import SMOKE


def _log_lines(tmp_path, monkeypatch, capsys, rank: str):
    monkeypatch.setenv("RANK", rank)
    out = tmp_path / f"rank{rank}"
    setup_logging(out)
    logging.getLogger("shared.training.loop").info("train jepa seed 0")
    logging.getLogger("shared.training.loop").warning("a slow node")
    logging.shutdown()
    monkeypatch.delenv("RANK")
    setup_logging()  # the default again for the tests that follow
    return out, capsys.readouterr().err


def test_rank_0_alone_writes_run_log_and_the_others_print_only_warnings_with_their_rank(tmp_path, monkeypatch, capsys):
    out, err = _log_lines(tmp_path, monkeypatch, capsys, "0")
    logged = (out / "run.log").read_text()
    assert "INFO shared.training.loop: train jepa seed 0" in logged and "a slow node" in logged
    assert "train jepa seed 0" in err and "[rank" not in err
    out, err = _log_lines(tmp_path, monkeypatch, capsys, "3")
    assert not (out / "run.log").exists()
    assert "train jepa seed 0" not in err  # no INFO duplicates
    assert "[rank 3] WARNING shared.training.loop: a slow node" in err


def test_the_arm_is_built_under_the_nodes_local_main_process_first(smoke_prepared, tmp_path, monkeypatch):
    """A node's first process reads the base weights before its other processes (one read per node,
    not per GPU); per node, not globally: the first process of every node starts at once."""
    from shared.pipeline import Pipeline
    from shared.training.loop import train_arm

    inside, built_inside = [], []
    local_first = PartialState.local_main_process_first

    @contextlib.contextmanager
    def watched(self):
        with local_first(self):
            inside.append(True)
            try:
                yield
            finally:
                inside.pop()

    build = Pipeline.seeded_arm

    def seeded_arm(self, *args, **kwargs):
        built_inside.append(bool(inside))
        return build(self, *args, **kwargs)

    monkeypatch.setattr(PartialState, "local_main_process_first", watched)
    monkeypatch.setattr(Pipeline, "seeded_arm", seeded_arm)
    cfg = load_config(SMOKE, [f"cache_dir={smoke_prepared.cfg.cache_dir}", "plugins=[tests.toy_arm]"])
    train_arm(dataclasses.replace(smoke_prepared, cfg=cfg), "toy", tmp_path / "run", stop_at_samples=32, progress=False)
    assert built_inside == [True]
