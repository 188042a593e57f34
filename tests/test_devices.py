"""Everything an arm builds lives on its context's device; the commands run on a GPU where there is one."""
import pytest
import torch

from shared.arm import build_arm


@pytest.mark.parametrize("name", ["jepa", "vlm"])
def test_every_tensor_an_arm_builds_is_on_the_context_device(smoke_prepared, name):
    """Built on the meta device, any parameter or buffer created elsewhere (e.g. a Linear without
    device=) would show up on the CPU: on a GPU it would be a device mismatch."""
    arm = build_arm(name, smoke_prepared.context("meta"))
    elsewhere = [n for n, t in [*arm.named_parameters(), *arm.named_buffers()] if t.device.type != "meta"]
    assert elsewhere == []


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_commands_run_on_cuda(tmp_path, cache_dir):
    from experiments.cli import main
    from tests.conftest import SMOKE

    common = ["-c", str(SMOKE), f"cache_dir={cache_dir}"]
    for features in ("cache", "online"):
        assert main(["sample-efficiency", *common, "-o", str(tmp_path / features), f"encoder.features={features}"]) == 0
    assert main(["latency", *common, "-o", str(tmp_path / "lat"), "--train-steps", "2"]) == 0
    assert main(["selective-decoding", *common, "-o", str(tmp_path / "sel"),
                 "--checkpoint", str(tmp_path / "cache" / "runs" / "jepa" / "seed0")]) == 0


@pytest.mark.parametrize("name", ["jepa", "vlm"])
def test_compile_and_checkpointing_switches_reach_every_transformer_layer(smoke_prepared, name):
    arm = build_arm(name, smoke_prepared.context("cpu"))
    arm.compile_layers()
    arm.enable_activation_checkpointing()
    layers = [m for m in arm.modules() if type(m).__name__ == "LlamaDecoderLayer"]
    assert layers and all(m._compiled_call_impl is not None for m in layers)
    assert all(m.is_activation_checkpointing for m in arm.modules() if hasattr(m, "is_activation_checkpointing")
               and any(p.requires_grad for p in m.parameters()))
