"""Every multi-process layout on this CPU, before a GPU hour is spent: FSDP2 and DDP in 2 gloo
processes launched as 2 nodes x 1 process on localhost, against one process (tests/dist_driver.py
runs the scenarios; one launch serves every assertion here)."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from shared.arm import build_arm
from shared.training.checkpoint import RunDir
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_nodes(args: list[list[str]], timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """``torchrun`` once per node (args[i] for node i), 1 process each, rendezvous on 127.0.0.1."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(args)),
                               "--node_rank", str(rank), "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
                               "--master_port", str(port), *a], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank, a in enumerate(args)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """2 nodes x 1 process, then one process (in this one; it also resumes the 2-process run cross_2)."""
    from tests.dist_driver import runs as one_process

    out = tmp_path_factory.mktemp("dist")
    driver = ["-m", "tests.dist_driver", str(out), str(cache_dir)]
    for node in launch_nodes([driver, driver]):
        assert node.returncode == 0, node.stderr[-4000:]
    one_process(out, str(cache_dir))
    return out


def weights(folder, milestone=512):
    return load_file(str(folder / "checkpoints" / f"samples_{milestone:010d}" / "model.safetensors"))


def logged(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def close(a, b, atol):
    return sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


@pytest.mark.parametrize("arm", ["jepa", "vlm"])
def test_fsdp2_two_processes_give_the_loss_and_gradients_of_one(runs, arm):
    one, two = torch.load(runs / f"grads_{arm}_1.pt"), torch.load(runs / f"grads_{arm}_2.pt")
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert sorted(one["grads"]) == sorted(two["grads"]) and len(one["grads"]) > 4
    for name, g in one["grads"].items():  # every trainable tensor, gathered whole from its shards
        assert g.abs().sum() > 0, name
        assert torch.allclose(two["grads"][name], g, rtol=1e-5, atol=1e-7), name


def test_fsdp2_two_processes_train_like_one(runs):
    """Whole runs: the same losses and weights; the VLM too (its output layer tied to the token table)."""
    one, two = runs / "fsdp2_1" / "runs" / "jepa" / "seed0", runs / "fsdp2_2" / "runs" / "jepa" / "seed0"
    for a, b in zip(logged(one), logged(two), strict=True):
        assert a["samples_seen"] == b["samples_seen"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert close(weights(one), weights(two), atol=1e-5)
    for milestone in (128, 256):  # each the end of a cooldown branch off the sharded trunk
        assert close(weights(runs / "vlm_1", milestone), weights(runs / "vlm_2", milestone), atol=1e-5)
    assert [r.get("branch") for r in logged(runs / "vlm_2")] == [r.get("branch") for r in logged(runs / "vlm_1")]
    for r in (runs / "fsdp2_2", runs / "ddp_2"):
        info = json.loads((r / "runs" / "jepa" / "seed0" / "precision.json").read_text())
        assert info["layouts"][0]["processes"] == 2 and info["recipe"]["gradient_reduction"] == "float32"


def test_fsdp2_resumes_on_two_and_on_one_process(runs):
    """Sharded resume points, resumed on the processes that wrote them (bit for bit), and on one
    process (torch distributed checkpoint reshards the two shards into one)."""
    full_two, full_one = runs / "fsdp2_2" / "runs" / "jepa" / "seed0", runs / "fsdp2_1" / "runs" / "jepa" / "seed0"
    resumed = weights(runs / "part_2")
    assert all(torch.equal(resumed[k], v) for k, v in weights(full_two).items())
    assert [r["loss"] for r in logged(runs / "part_2")] == [r["loss"] for r in logged(full_two)]
    assert len(list(RunDir(runs / "part_2").find_resume().glob("__*_0.distcp"))) == 2  # one shard file per process
    across = runs / "cross_2"
    layouts = json.loads((across / "precision.json").read_text())["layouts"]
    assert [(r["processes"], r["from_step"]) for r in layouts] == [(2, 0), (1, 4)]
    assert close(weights(across), weights(full_one), atol=1e-5)
    for a, b in zip(logged(across), logged(full_one), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_fsdp2_milestone_is_one_full_safetensors_file(runs, smoke_prepared):
    """Gathered from the shards into one file: every trainable tensor at full shape, no frozen one,
    loadable into an arm built on one process."""
    folder = runs / "fsdp2_2" / "runs" / "jepa" / "seed0" / "checkpoints" / f"samples_{512:010d}"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.safetensors", "train_state.json"]
    saved = load_file(str(folder / "model.safetensors"))
    arm = build_arm("jepa", smoke_prepared.context())
    own = {n: p for n, p in arm.named_parameters() if p.requires_grad}
    assert sorted(saved) == sorted(own)
    assert all(saved[n].shape == p.shape for n, p in own.items())
    arm.load_trainable_state_dict(saved)


def test_ddp_and_fsdp2_give_the_same_metrics_within_tolerance(runs):
    """The same recipe under both layouts (fp32 here): weights within 1e-5 after 16 steps, losses to
    1e-5 relative, and the same evaluation: CIDEr within 1e-3, classification and retrieval equal."""
    ddp, fsdp2 = runs / "ddp_2", runs / "fsdp2_2"
    assert close(weights(ddp / "runs" / "jepa" / "seed0"), weights(fsdp2 / "runs" / "jepa" / "seed0"), atol=1e-5)
    for a, b in zip(metrics(ddp), metrics(fsdp2), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["cider"] == pytest.approx(b["cider"], abs=1e-3) and a["cider"] > 0
        assert (a["top1"], a["top5"], a["recall1"]) == (b["top1"], b["top5"], b["recall1"])


def test_two_nodes_on_localhost_give_the_metrics_of_one_process(runs):
    for a, b in zip(metrics(runs / "fsdp2_1"), metrics(runs / "fsdp2_2"), strict=True):
        assert (a["milestone"], a["top1"], a["top5"], a["recall1"]) == (b["milestone"], b["top1"], b["top5"], b["recall1"])
        assert a["cider"] == pytest.approx(b["cider"], abs=1e-3) and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_a_refusal_on_rank_0_ends_every_rank(runs):
    errors = [json.loads((runs / f"locked_{rank}.json").read_text())["error"] for rank in (0, 1)]
    assert all(e and "in use by another training" in e for e in errors)


def test_a_node_that_sees_another_run_folder_is_a_clear_error_not_a_hang(runs):
    for rank in (0, 1):
        seen = json.loads((runs / f"folder_{rank}.json").read_text())
        assert seen["error"] and "rank 1 on" in seen["error"] and "cannot read the token rank 0 wrote" in seen["error"]
        assert seen["waited_s"] < 30  # the 5 s grace for a network filesystem, not a collective's timeout


def test_the_process_group_timeout_is_the_configs(runs):
    """Set after the group exists (as the commands do: the group is made when the data is prepared):
    a collective one rank joins 4 s late fails after the configured 1.8 s, with torch's timeout error."""
    early = json.loads((runs / "timeout_0.json").read_text())
    assert early["error"] and "Timed out" in early["error"]
    assert 1.5 < early["waited_s"] < 3.9
