import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from shared.data.order import TrainOrder
from shared.training.checkpoint import RunDir
from shared.training.loop import train_arm
from shared.training.schedule import MilestonePlan, trunk_factor


@pytest.fixture
def toy(smoke_prepared):
    """The smoke data with the toy arm registered; fp32 so results can be compared bit for bit."""
    import dataclasses

    from shared.config import load_config
    from tests.conftest import SMOKE

    def make(*overrides):
        cfg = load_config(SMOKE, [f"cache_dir={smoke_prepared.cfg.cache_dir}", "plugins=[tests.toy_arm]",
                                  "train.mixed_precision=no", "train.milestones=[64,128,192,256]", *overrides])
        return dataclasses.replace(smoke_prepared, cfg=cfg)

    return make


def weights(run_dir, milestone):
    return load_file(str(run_dir / "checkpoints" / f"samples_{milestone:010d}" / "model.safetensors"))


def test_checkpoints_at_sample_milestones(toy, tmp_path):
    result = train_arm(toy("train.milestones=[40,64,100,256]"), "toy", tmp_path / "run", progress=False)
    assert result.completed
    got = [(c["milestone"], c["samples_seen"], c["step"]) for c in result.checkpoints]
    # effective batch 32: the first step at or past each milestone
    assert got == [(40, 64, 2), (64, 64, 2), (100, 128, 4), (256, 256, 8)]
    for name in ("config.yaml", "versions.json", "data_order.json", "train_log.jsonl", "done.json"):
        assert (tmp_path / "run" / name).is_file(), name
    state = json.loads((tmp_path / "run" / "checkpoints" / "samples_0000000100" / "train_state.json").read_text())
    assert state["samples_seen"] == 128 and state["step"] == 4
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_resume_equals_uninterrupted_run(toy, tmp_path):
    full = train_arm(toy(), "toy", tmp_path / "full", progress=False)
    part = train_arm(toy(), "toy", tmp_path / "part", stop_at_samples=96, progress=False)
    assert not part.completed and [c["milestone"] for c in part.checkpoints] == [64]
    resumed = train_arm(toy(), "toy", tmp_path / "part", progress=False)
    assert resumed.completed and full.completed
    for m in (64, 128, 256):
        a, b = weights(tmp_path / "full", m), weights(tmp_path / "part", m)
        assert all(torch.equal(a[k], b[k]) for k in a), m
    log_a = [r["loss"] for r in map(json.loads, (tmp_path / "full" / "train_log.jsonl").read_text().splitlines())]
    log_b = [r["loss"] for r in map(json.loads, (tmp_path / "part" / "train_log.jsonl").read_text().splitlines())]
    assert log_a == log_b


def test_same_seed_same_result_other_seed_other_order(toy, tmp_path):
    train_arm(toy(), "toy", tmp_path / "a", progress=False)
    train_arm(toy(), "toy", tmp_path / "b", progress=False)
    a, b = weights(tmp_path / "a", 256), weights(tmp_path / "b", 256)
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_arm(toy("seed=1"), "toy", tmp_path / "c", progress=False)
    order = [json.loads((tmp_path / d / "data_order.json").read_text())["sha256"] for d in "ac"]
    assert order[0] != order[1]


def test_effective_batch_is_independent_of_micro_batch(toy, tmp_path):
    from tests.toy_arm import ToyArm

    ToyArm.seen_ids.clear()
    train_arm(toy("train.micro_batch=32"), "toy", tmp_path / "big", progress=False)
    big = [i for b in ToyArm.seen_ids for i in b]
    ToyArm.seen_ids.clear()
    train_arm(toy("train.micro_batch=8"), "toy", tmp_path / "small", progress=False)
    small = [i for b in ToyArm.seen_ids for i in b]
    assert big == small and len(big) == 256  # same samples in the same order, 4 x 8 accumulated per step
    a, b = weights(tmp_path / "big", 256), weights(tmp_path / "small", 256)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_resume_refuses_another_config(toy, tmp_path):
    train_arm(toy(), "toy", tmp_path / "run", stop_at_samples=64, progress=False)
    with pytest.raises(ValueError, match=r"trained with another config \(differs at train.lr\)"):
        train_arm(toy("train.lr=0.5"), "toy", tmp_path / "run", progress=False)
    # evaluation-only settings may change between invocations
    assert train_arm(toy("eval.max_clips=7"), "toy", tmp_path / "run", progress=False).completed

    # a key the run recorded that this version no longer has (nothing reads it) does not block a
    # resume; a key this version has that the run did not record does
    saved = tmp_path / "run" / "config.yaml"
    raw = yaml.safe_load(saved.read_text())
    raw["data"]["synthetic"]["retired_knob"] = 8.0
    saved.write_text(yaml.safe_dump(raw))
    assert train_arm(toy(), "toy", tmp_path / "run", progress=False).completed
    del raw["train"]["grad_clip"]
    saved.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"differs at train.grad_clip"):
        train_arm(toy(), "toy", tmp_path / "run", progress=False)


def test_train_order_is_a_pure_function_of_seed():
    a, b = TrainOrder(3, [2] * 10), TrainOrder(3, [2] * 10)
    ca, pa = a.take(5, 30)
    cb, pb = b.take(5, 30)
    assert (ca == cb).all() and (pa == pb).all()
    first_epoch, _ = a.take(0, 10)
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert a.digest(40) == b.digest(40) != TrainOrder(4, [2] * 10).digest(40)


def test_schedule_warms_up_then_decays(smoke_cfg):
    t = smoke_cfg("train.warmup_frac=0.1", "train.min_lr_ratio=0.1", "train.schedule=cosine").train
    f = [trunk_factor(s, 100, t) for s in range(100)]
    assert f[0] < f[5] < f[9] == pytest.approx(1.0)
    assert f[50] < f[20] and f[-1] == pytest.approx(0.1, abs=1e-3)
    const = [trunk_factor(s, 100, smoke_cfg("train.warmup_frac=0.1").train) for s in range(100)]
    assert const[9:] == [1.0] * 91  # the default: the paper's constant rate after warm-up
    wsd = [trunk_factor(s, 100, smoke_cfg("train.schedule=wsd", "train.decay_frac=0.2").train) for s in range(100)]
    assert wsd[79] == 1.0 and wsd[80] == 1.0 and wsd[81] < 1.0 and wsd[99] == pytest.approx(0.05)


def test_cooldown_plan_branches_end_at_each_milestone(smoke_cfg):
    t = smoke_cfg("train.milestones=[64,128,256]", "train.milestone_cooldown=0.25").train  # 2, 4, 8 steps
    plan = MilestonePlan.of(t)
    assert [(b.milestone, b.start, b.end) for b in plan.branches] == [(64, 1, 2), (128, 3, 4), (256, 6, 8)]
    assert plan.trunk_end == 6 and plan.updates == 6 + 1 + 1 + 2
    assert MilestonePlan.of(smoke_cfg().train).branches == ()
    with pytest.raises(ValueError, match="milestone_cooldown needs train.schedule=constant"):
        smoke_cfg("train.milestone_cooldown=0.2", "train.schedule=cosine")


def _lrs(run_dir):
    return [(r["update"], r["step"], r.get("branch"), r["lr"])
            for r in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines())]


def test_cooldown_milestone_equals_a_run_decayed_there(toy, tmp_path):
    """Each milestone of a cooldown run is bitwise the model of a separate run that follows the same
    trunk and decays over the same steps (schedule wsd, stopping at that milestone): the branch
    point's state, the data positions and the rates are restored exactly."""
    cool = ["train.milestone_cooldown=0.25", "train.log_every=1", "train.warmup_frac=0.1"]
    result = train_arm(toy(*cool), "toy", tmp_path / "cool", progress=False)
    assert result.completed and [c["milestone"] for c in result.checkpoints] == [64, 128, 192, 256]
    assert [c["samples_seen"] for c in result.checkpoints] == [64, 128, 192, 256]
    for m in (128, 256):
        alone = train_arm(toy("train.schedule=wsd", "train.decay_frac=0.25", f"train.milestones=[{m}]",
                              "train.warmup_frac=0.1"), "toy", tmp_path / f"wsd{m}", progress=False)
        assert alone.completed
        a, b = weights(tmp_path / "cool", m), weights(tmp_path / f"wsd{m}", m)
        assert all(torch.equal(a[k], b[k]) for k in a), m
    # the trunk is unaffected by its branches: its state at 6 steps equals a constant-rate run's
    plain = train_arm(toy("train.milestones=[192]", "train.warmup_frac=0.1"), "toy", tmp_path / "plain",
                      progress=False)
    assert plain.completed
    lrs = _lrs(tmp_path / "cool")
    # branches (start, end): (1, 2), (3, 4), (4, 6), (6, 8); positions go back after each branch
    assert [r[1] for r in lrs] == [1, 2, 2, 3, 4, 4, 5, 6, 5, 6, 7, 8]
    assert [r[2] for r in lrs] == [None, 64, None, None, 128, None, 192, 192, None, None, 256, 256]
    assert [r[0] for r in lrs] == list(range(1, 13))
    assert lrs[-1][3] == 0.0 and lrs[-2][3] > 0  # the rate after the last branch update: decayed to zero
    schedule = json.loads((tmp_path / "cool" / "schedule.json").read_text())
    assert schedule["updates"] == len(lrs) == 12
    trunk = load_file(str(RunDir(tmp_path / "cool").find_branch_point() / "model.safetensors"))
    straight = weights(tmp_path / "plain", 192)
    assert all(torch.equal(trunk[k], straight[k]) for k in straight)


def test_resume_inside_a_cooldown_branch_is_exact(toy, tmp_path):
    cool = ["train.milestone_cooldown=0.5", "train.log_every=1", "train.resume_every=1"]
    full = train_arm(toy(*cool), "toy", tmp_path / "full", progress=False)
    # branches (1, 2), (2, 4), (3, 6), (4, 8): updates trunk 1, branch 2, trunk 2, branch 3 4, trunk 3,
    # branch 4 5 6: stopping after 8 updates leaves the run inside the branch of 192
    part = train_arm(toy(*cool), "toy", tmp_path / "part", stop_at_samples=8 * 32, progress=False)
    assert not part.completed
    state = json.loads((RunDir(tmp_path / "part").find_resume() / "train_state.json").read_text())
    assert state["branch"] == 192 and state["step"] == 5 and state["updates"] == 8
    resumed = train_arm(toy(*cool), "toy", tmp_path / "part", progress=False)
    assert resumed.completed and full.completed
    for m in (64, 128, 192, 256):
        a, b = weights(tmp_path / "full", m), weights(tmp_path / "part", m)
        assert all(torch.equal(a[k], b[k]) for k in a), m
    assert _lrs(tmp_path / "full") == _lrs(tmp_path / "part")


def torchrun(args: list[str], nproc: int = 2, timeout: int = 600):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
                             if nproc > 1 else []), "-m", "experiments", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume(tmp_path, cache_dir):
    """The effective batch is split over processes (gloo on CPU) instead of accumulated: same samples,
    same losses (InfoNCE over the whole effective batch either way), same weights up to the
    all-reduce's float rounding; a two-process run stopped and resumed equals an uninterrupted one."""
    from tests.conftest import SMOKE

    args = ["train", "-c", str(SMOKE), "--arm", "jepa", f"cache_dir={cache_dir}", "train.mixed_precision=no"]
    torchrun([*args, "-o", str(tmp_path / "one")], nproc=1)
    torchrun([*args, "-o", str(tmp_path / "two")])
    torchrun([*args, "-o", str(tmp_path / "part"), "--stop-after", "96"])
    torchrun([*args, "-o", str(tmp_path / "part")])
    logs = {d: [json.loads(l) for l in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
            for d in ("one", "two", "part")}
    assert len(logs["two"]) == len(logs["one"]) == 4  # written once, by the main process
    for a, b in zip(logs["one"], logs["two"]):
        assert a["samples_seen"] == b["samples_seen"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    a, b, c = weights(tmp_path / "one", 256), weights(tmp_path / "two", 256), weights(tmp_path / "part", 256)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert all(torch.equal(b[k], c[k]) for k in b)  # resumed under DDP == uninterrupted under DDP
    assert [r["loss"] for r in logs["two"]] == [r["loss"] for r in logs["part"]]


@pytest.mark.slow
def test_distributed_evaluation_writes_the_rows_of_one_process(tmp_path, cache_dir):
    """Trained once, evaluated by 1 and by 2 processes (each a half of the clips, gathered): the same
    metrics rows, written once."""
    import shutil

    from tests.conftest import SMOKE

    args = ["sample-efficiency", "-c", str(SMOKE), f"cache_dir={cache_dir}", "train.milestones=[64,128]"]
    torchrun([*args, "-o", str(tmp_path / "one")], nproc=1)
    shutil.copytree(tmp_path / "one" / "runs", tmp_path / "two" / "runs")  # the same checkpoints
    torchrun([*args, "-o", str(tmp_path / "two")])
    rows = {d: [json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("one", "two")}
    assert len(rows["two"]) == len(rows["one"]) == 4
    for a, b in zip(rows["one"], rows["two"]):
        assert (a["arm"], a["milestone"]) == (b["arm"], b["milestone"])
        for key in ("cider", "top1", "top5", "recall1"):
            assert a.get(key) == pytest.approx(b.get(key), abs=1e-6), (a["arm"], key)


def test_a_nan_loss_ends_the_run_with_one_line_and_keeps_good_checkpoints(tmp_path, capsys, cache_dir):
    from experiments.cli import main
    from tests.conftest import SMOKE

    out = tmp_path / "run"
    # milestones every step (batch 32); the loss turns NaN at step 3 (2 micro-batches of 16 a step)
    code = main(["train", "-c", str(SMOKE), "--arm", "toy", "-o", str(out), f"cache_dir={cache_dir}",
                 "plugins=[tests.toy_arm]", "toy.nan_after=4", "train.milestones=[32,64,96,128]", "train.log_every=1"])
    err = capsys.readouterr().err
    assert code == 3 and "training loss is nan by step 3" in err and "Traceback" not in err
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == ["samples_0000000032", "samples_0000000064"]  # nothing written after the loss went bad
    assert all(torch.isfinite(t).all() for t in weights(out, 64).values())


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_is_taken_over(toy, tmp_path):
    import os

    from shared.config import ConfigError

    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(f"{os.getppid()} {__import__('socket').gethostname()}")  # a live process
    with pytest.raises(ConfigError, match=r"in use by another training \(pid"):
        train_arm(toy(), "toy", run, progress=False)
    (run / ".lock").write_text(f"999999999 {__import__('socket').gethostname()}")  # its process is gone
    assert train_arm(toy(), "toy", run, progress=False).completed
    assert not (run / ".lock").exists()


def test_each_arms_model_is_freed_before_the_next_arm_trains(smoke_prepared, tmp_path, monkeypatch):
    """Accelerate's ``prepare`` keeps the model (``_models``) and binds an autocast forward to it, a
    reference cycle: the loop frees the accelerator's references and collects when an arm's training
    ends (shared/training/release.py), so the next arm is built with the last one's model gone, and no
    help from the caller."""
    import weakref

    import shared.training.loop as loop

    models, alive_at_build = [], []
    build = loop.build_trainee

    def build_and_watch(*args, **kwargs):
        alive_at_build.append([ref() is not None for ref in models])
        trainee = build(*args, **kwargs)
        models.append(weakref.ref(trainee.model))
        return trainee

    monkeypatch.setattr(loop, "build_trainee", build_and_watch)
    for name in ("jepa", "vlm"):
        train_arm(smoke_prepared, name, tmp_path / name, stop_at_samples=32, progress=False)
    assert alive_at_build == [[], [False]]
    assert models[1]() is None
