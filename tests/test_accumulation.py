"""Gradient accumulation under FSDP2 in 2 gloo processes (tests/accum_driver.py): gradients are
reduce-scattered once per optimizer step, on the last micro-step, not on every micro-step, with
the loss and gradients unchanged (to float rounding: the sum is reduced instead of each part)."""
import pytest
import torch

from tests.test_distributed import launch_nodes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accumulated(tmp_path_factory, cache_dir, smoke_prepared):
    out = tmp_path_factory.mktemp("accum")  # smoke_prepared: the feature cache is filled before the launch
    driver = ["-m", "tests.accum_driver", str(out), str(cache_dir)]
    for node in launch_nodes([driver, driver]):  # 2 nodes x 1 process on localhost
        assert node.returncode == 0, node.stderr[-4000:]
    return torch.load(out / "accumulation.pt")


@pytest.mark.parametrize("arm", ["jepa", "vlm"])
def test_fsdp2_reduces_gradients_once_per_optimizer_step(accumulated, arm):
    last, before = accumulated[(arm, "last")], accumulated[(arm, "before")]
    units = last["units"]
    assert units >= 2  # the arm's blocks and its root: each reduce-scatters its own gradients
    assert before["reduce_scatters"] == 2 * units  # before: every micro-step of the 2
    assert last["reduce_scatters"] == units  # now: the last one only
    assert last["loss"] == pytest.approx(before["loss"], rel=1e-6)
    assert sorted(last["grads"]) == sorted(before["grads"]) and len(last["grads"]) > 4
    for name, g in before["grads"].items():
        assert g.abs().sum() > 0, name
        assert torch.allclose(last["grads"][name], g, rtol=1e-5, atol=1e-7), name
