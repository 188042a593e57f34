"""The run folder's one owner: where milestones and resume points live, and what a checkpoint carries."""
import pytest
import torch

from shared.training.checkpoint import RunDir, TrainState, load_weights, save_point, save_weights


def test_milestones_are_listed_in_order_and_describe_themselves(tmp_path):
    run = RunDir(tmp_path / "runs" / "jepa" / "seed0")
    run.root.mkdir(parents=True)
    run.config.write_text("arm_name: jepa\nseed: 0\n")
    w = {"head.weight": torch.arange(6.0).view(2, 3)}
    for m in (1024, 64, 256):
        save_weights(run.milestone(m), w, TrainState(step=m // 32, samples_seen=m, last_loss=1.0 / m),
                     {"milestone": m, "arm": "jepa", "seed": 0}, config=run.config)
    listed = run.checkpoints()
    assert [c["milestone"] for c in listed] == [64, 256, 1024]
    assert listed[0]["step"] == 2 and listed[0]["train_loss"] == 1 / 64
    weights, state = load_weights(listed[-1]["path"])
    assert torch.equal(weights["head.weight"], w["head.weight"]) and state["samples_seen"] == 1024
    # the resolved config travels with the weights: a checkpoint copied elsewhere still says what it is
    assert (run.milestone(1024) / "config.yaml").read_text() == run.config.read_text()


def test_a_half_written_milestone_is_not_listed(tmp_path):
    run = RunDir(tmp_path)
    save_weights(run.milestone(64), {"w": torch.ones(1)}, TrainState(step=1, samples_seen=64), {"milestone": 64})
    (run.root / "checkpoints" / "samples_0000000128.tmp").mkdir()  # a crash while writing the next one
    (run.root / "checkpoints" / "samples_0000000192").mkdir()  # a folder without its state
    assert [c["milestone"] for c in run.checkpoints()] == [64]


class _OneProcess:
    """What save_point asks of an Accelerator, for one process."""

    is_main_process = True

    def wait_for_everyone(self):
        pass


def test_each_save_writes_a_fresh_folder_renamed_when_complete_and_older_points_are_pruned(tmp_path):
    run, written = RunDir(tmp_path), []

    def write(folder):
        written.append(folder)
        assert folder.is_dir() and folder.name.endswith(".tmp")  # made by rank 0 before anyone writes
        (folder / "weights.bin").write_bytes(b"x")

    (run.resume / "update_000000006.0badc0de.tmp").mkdir(parents=True)  # a save a crash cut short
    for updates in (4, 8, 8):  # 8 twice: a branch's end, then the trunk state restored at the same update
        save_point(_OneProcess(), run.resume, TrainState(step=updates, updates=updates), write)
    assert len(set(written)) == 3  # never a folder name used before, even for the same update
    assert [p.name for p in run.resume.iterdir()] == ["update_000000008"]  # older point and debris pruned
    assert run.find_resume() == run.resume / "update_000000008"
    assert (run.find_resume() / "weights.bin").is_file()


def test_the_newest_complete_point_is_resumed_never_a_half_written_one(tmp_path):
    run = RunDir(tmp_path)
    assert run.find_resume() is None
    for name in ("update_000000004", "update_000000012.1234abcd.tmp", "update_000000016"):
        (run.resume / name).mkdir(parents=True)
    (run.resume / "update_000000004" / "train_state.json").write_text('{"step": 4}')
    (run.resume / "update_000000012.1234abcd.tmp" / "train_state.json").write_text('{"step": 12}')
    assert run.find_resume() == run.resume / "update_000000004"  # 16 has no state yet: incomplete
    (run.resume / "update_000000008.old").mkdir()  # a crash between swap_in's two renames
    (run.resume / "update_000000008.old" / "train_state.json").write_text('{"step": 8}')
    assert run.find_resume() == run.resume / "update_000000008.old"


def test_a_resume_point_of_the_earlier_layout_is_still_found(tmp_path):
    """Before step-named points: one ``resume/`` folder, ``resume.old`` after a crash between renames."""
    run = RunDir(tmp_path)
    old = tmp_path / "resume.old"
    old.mkdir()
    (old / "train_state.json").write_text('{"step": 4}')
    assert run.find_resume() == old
    run.resume.mkdir()
    (run.resume / "train_state.json").write_text('{"step": 8}')
    assert run.find_resume() == run.resume


def test_train_state_round_trips_through_json():
    s = TrainState(step=3, samples_seen=96, milestones_done=(64,), wall_s=1.5, last_loss=0.25)
    assert TrainState.from_json({**s.to_json(), "unknown_future_field": 1}) == s


def test_a_checkpoint_is_located_from_its_folder_or_its_run_folder(tmp_path):
    run = RunDir.of(tmp_path / "out", "jepa", 2)
    assert run.root == tmp_path / "out" / "runs" / "jepa" / "seed2"
    for m in (64, 128):
        save_weights(run.milestone(m), {"w": torch.ones(1)}, TrainState(samples_seen=m), {"milestone": m})
    ckpt, found = RunDir.locate(run.root)
    assert ckpt == run.milestone(128) and found.root == run.root  # a run folder: its last milestone
    ckpt, found = RunDir.locate(run.milestone(64))
    assert ckpt == run.milestone(64) and found.root == run.root
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        RunDir.locate(tmp_path / "out")
