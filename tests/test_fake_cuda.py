"""Every forward path a GPU run takes, run on fake CUDA on a machine without one.

Under ``FakeTensorMode`` tensors carry a device, a shape and a dtype but no values: a CPU-only machine
creates them on ``"cuda"``, runs forwards, and an operation mixing a CUDA tensor with a CPU one raises
``FakeTensorDeviceMismatchError``, as it would on a GPU. Each module is built the way a GPU run
builds it (on the device, or on the host and moved, as the code does), so a tensor the code leaves
on the host shows up here. Three things the mode cannot do are stood in for, each as narrowly as it can be:

- ``allow_non_fake_inputs``: weights loaded from disk (``from_pretrained``, safetensors) are real
  host tensors; the mode converts them to fake ones on their own device (CPU), so moving them is
  tested and mixing them unmoved still raises.
- ``Module._apply`` (``.to``, ``.float``, ``to_empty``) swaps each parameter for its converted copy
  with ``torch.utils.swap_tensors``, which refuses a fake tensor (the mode holds a weak reference to
  it). The stand-in puts each converted tensor in the module's parameter and buffer tables instead,
  tied parameters kept tied: the same placement, by another route.
- timm's PE calls ``.item()`` while it is built (data-dependent: fake tensors hold no value), so the
  PE model alone is built on ``meta`` and materialised with ``to_empty`` on the device it was asked
  for, which is where timm puts it under ``torch.device(device)``. ``FrozenEncoder``'s own code (its
  normalisation buffers, dtype and moves) runs as written: materialising the whole encoder would
  move its buffers too and hide the fault these tests were written for (buffers left on the host).

What cannot run at all is named where it is skipped: backward passes (need a real device),
anything that reads values (``.item()``, ``.tolist()``, ``bool()`` of a tensor, hashing weights),
so generation loops stop at their first stopping check and text decoding of generated ids fails;
those tests check that everything before that point ran on the device.
"""
from __future__ import annotations

import contextlib
import dataclasses
from unittest import mock

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode, unset_fake_temporarily

from shared.features import encoder as encoder_module
from shared.features.encoder import FrozenEncoder
from shared.features.visual import VisualFeatures
from tests.conftest import SMOKE, resolved

CUDA = torch.device("cuda")
_create_pe_model = encoder_module.create_pe_model


def _apply_by_replacing(self, fn, recurse=True):
    """``Module._apply`` without ``swap_tensors``: each parameter and buffer replaced by ``fn`` of it."""
    done, keep = {}, []
    for m in self.modules() if recurse else [self]:
        for table, is_param in ((m._parameters, True), (m._buffers, False)):
            for k, t in table.items():
                if t is None:
                    continue
                if id(t) not in done:
                    keep.append(t)  # ids stay unique while the old tensors are alive
                    with torch.no_grad():
                        out = fn(t)
                    done[id(t)] = nn.Parameter(out, requires_grad=t.requires_grad) if is_param and out is not t else out
                table[k] = done[id(t)]
    return self


def _pe_via_meta(cfg, device="cpu"):
    if torch.device(device).type == "meta":
        return _create_pe_model(cfg, device)
    with unset_fake_temporarily():  # timm's init reads a value (.item()) even on meta
        model = _create_pe_model(cfg, "meta")
    return model.to_empty(device=device)  # no weights, as in the GPU check (encoder.weights=null)


@contextlib.contextmanager
def fake_cuda():
    with FakeTensorMode(allow_non_fake_inputs=True), \
            mock.patch.object(nn.Module, "_apply", _apply_by_replacing), \
            mock.patch.object(encoder_module, "create_pe_model", _pe_via_meta):
        yield


def on_cuda(*tensors) -> bool:
    return all(t.device.type == "cuda" for t in tensors)


def placement(module: nn.Module) -> dict[str, str]:
    """Parameters and buffers not on CUDA, by name."""
    return {n: str(t.device) for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type != "cuda"}


def until_values_are_read(fn):
    """Run ``fn``; a stop at the first read of a value (a stopping check, decoding ids to text) is
    where fake tensors end, not a fault. A device mismatch before it still fails the test."""
    try:
        return fn()
    except DataDependentOutputException:
        return None


# ---- the frozen encoder ----------------------------------------------------------------------
def test_the_encoder_built_on_the_device_encodes_frames_there(smoke_cfg):
    """The GPU check's way (experiments/describe/gpu_check.py): built with the device, never moved.
    Its normalisation buffers were once registered on the host: this is the test that caught it."""
    cfg = resolved(smoke_cfg("encoder.features=online"))
    with fake_cuda():
        encoder = FrozenEncoder.from_config(cfg, device=CUDA)
        assert placement(encoder) == {} and encoder.device.type == "cuda"
        frames = torch.randint(0, 256, (2, cfg.data.frames, 32, 32, 3), dtype=torch.uint8, device=CUDA)
        out = encoder.encode_clips(frames)
        assert on_cuda(out) and out.shape == (2, encoder.tokens_per_clip(cfg.data.frames), encoder.dim)
        features = VisualFeatures(cfg, encoder)  # online: no weights hashed
        assert features.device.type == "cuda"
        from shared.arm import Batch

        batch = features.ready(Batch(ids=["a", "b"], queries=["q"] * 2, captions=["c"] * 2, frames=frames), CUDA)
        assert on_cuda(batch.visual)


def test_the_encoder_built_on_the_host_and_moved_encodes_frames_on_the_device(smoke_cfg):
    """The pipeline's way (shared/pipeline.py): built on the host, moved; frames from the loader on the host."""
    cfg = resolved(smoke_cfg())
    with fake_cuda():
        encoder = FrozenEncoder.from_config(cfg).to(CUDA)
        assert placement(encoder) == {}
        frames = torch.randint(0, 256, (1, cfg.data.frames, 32, 32, 3), dtype=torch.uint8)  # host (pinned) memory
        assert on_cuda(encoder.encode_clips(frames))


def test_a_host_tensor_meeting_cuda_weights_raises():
    """The mode does catch what a GPU would: a CPU input to CUDA weights."""
    with fake_cuda():
        layer = nn.Linear(4, 4, device=CUDA)
        with pytest.raises(Exception, match="device"):
            layer(torch.zeros(2, 4))
