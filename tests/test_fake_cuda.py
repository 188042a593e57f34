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
    with unset_fake_temporarily():  # timm's init reads a value (.item()) even on meta
        model = _create_pe_model(cfg, "meta")
    # no weights, as in the GPU check (encoder.weights=null)
    return model if torch.device(device).type == "meta" else model.to_empty(device=device)


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


# ---- the arms ---------------------------------------------------------------------------------
CANDIDATES = ["a red circle moves left", "a blue square moves right", "a red circle"]


@pytest.fixture(scope="module")
def jepa_text_cache(smoke_prepared):
    """The JEPA arm's target cache, filled on the host: its folder is named by a hash of the Y-encoder's
    weights (values fake tensors do not have) and filling it embeds every training caption. The arm on
    fake CUDA reads its rows from it and moves them to the device, as a GPU run does."""
    arm = smoke_prepared.seeded_arm("jepa", "cpu")
    arm.prepare_training()
    return arm._text_cache


@pytest.fixture(scope="module")
def host_batch(smoke_prepared):
    """Three training clips' cached features, read on the host (the loader's work: its sampler
    draws a seed with .item()); the tests move it to the device as the loop does."""
    return smoke_prepared.batch("train", [0, 1, 2])


def cuda_batch(prepared, batch):
    return prepared.features.ready(dataclasses.replace(batch), CUDA)


@pytest.mark.parametrize("name", ["jepa", "vlm"])
def test_each_arm_built_on_the_device_computes_its_training_loss_there(smoke_prepared, jepa_text_cache, host_batch, name):
    """The loop builds the arm with the accelerator's device (``prepared.seeded_arm(name, device)``):
    the base LM and the Y-encoder load their caption-pretrained weights on the host and move."""
    with fake_cuda():
        arm = smoke_prepared.seeded_arm(name, CUDA)
        assert placement(arm) == {}
        if name == "jepa":
            arm._text_cache = jepa_text_cache
        batch = cuda_batch(smoke_prepared, host_batch)
        assert on_cuda(arm(batch), arm(batch, part="loss_sum"))
        if arm.has("coupled_loss"):  # GradCache's path: embeddings per micro-batch, the loss over all
            parts = arm(batch, part="embeddings")
            assert on_cuda(*parts.values(), arm.coupled_loss(parts, batch.captions))


def test_the_jepa_text_side_runs_on_the_device(smoke_prepared, host_batch):
    """The Y-encoder in the step (a trainable or uncached one) and the Y-decoder's forward, its loss
    (what its fit computes before the backward, which needs a real device) and its generation."""
    from jepa_arm.y_decoder import TrainedDecoder

    with fake_cuda():
        arm = smoke_prepared.seeded_arm("jepa", CUDA)
        assert on_cuda(arm.y_encoder(CANDIDATES))
        dc = arm.arm_cfg.y_decoder
        # built on the host and moved, as load_or_train does (its fit reads the loss: .item())
        decoder = TrainedDecoder(arm.y_encoder.dim, arm.tokenizer, dc, arm.cfg.lm.attn_implementation).to(CUDA)
        assert placement(decoder) == {}
        emb = arm.y_encoder(CANDIDATES)
        assert on_cuda(emb, decoder.loss(emb, CANDIDATES))
        arm._set_decoder(decoder)
        arm._decode_scale = 1.0
        heads = _count_head_rows(decoder.lm.lm_head)
        with _first_steps_of_generate(decoder.lm):  # the ids' text is read from their values
            until_values_are_read(lambda: arm.caption(cuda_batch(smoke_prepared, host_batch).visual,
                                                      host_batch.queries, 4))
        assert len(heads) == 2


def _first_steps_of_generate(model: nn.Module):
    """A stand-in for ``model.generate`` that runs its first steps on what the arm hands it: the prefill
    and one greedy token on its cache. (transformers' generate checks its special-token tensors with
    ``.any()`` before any forward, and asks "is every sequence finished?" after each token: values.)"""

    def generate(inputs_embeds, attention_mask, max_new_tokens, **_):
        assert on_cuda(inputs_embeds, attention_mask)
        out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([attention_mask, torch.ones_like(token)], dim=1)
        model(input_ids=token, attention_mask=mask, cache=out.cache, use_cache=True)
        return token

    return mock.patch.object(model, "generate", generate)


def _count_head_rows(head: nn.Module) -> list:
    rows = []
    head.register_forward_hook(lambda m, i, out: rows.append(out.shape[:-1]))
    return rows


def _on_the_host(fn):
    """``fn`` run outside the mode: host bookkeeping built from token-id lists (the candidates' trie:
    ``nonzero`` has a value-dependent shape) gives real CPU tensors, as in a GPU run; the code moves them."""

    def run(*args, **kwargs):
        with unset_fake_temporarily():
            return fn(*args, **kwargs)
    return run


def test_vlm_scoring_and_generation_run_on_the_device(smoke_prepared, host_batch):
    import vlm_arm.arm as vlm_module

    with fake_cuda(), mock.patch.object(vlm_module, "_trie_tables", _on_the_host(vlm_module._trie_tables)), \
            mock.patch.object(vlm_module, "build_trie", _on_the_host(vlm_module.build_trie)):
        arm = smoke_prepared.seeded_arm("vlm", CUDA).eval()
        batch = cuda_batch(smoke_prepared, host_batch)
        scores = arm.score_candidates(batch.visual, batch.queries, CANDIDATES)
        assert scores.shape == (3, len(CANDIDATES))
        rows = _count_head_rows(arm.lm.get_output_embeddings())
        with _first_steps_of_generate(arm.lm):
            until_values_are_read(lambda: arm.caption(batch.visual, batch.queries, 4))
        assert len(rows) == 2


# ---- the latency stages ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["jepa", "vlm"])
def test_the_latency_stages_run_on_the_device(smoke_prepared, host_batch, name):
    """experiments/latency.py: the X-encoder (built on the host and moved, as the pipeline does) on a
    host video, then the arm's stages in order, each on the previous one's output."""
    from experiments.latency import inference
    from jepa_arm.arm import JepaArm
    from jepa_arm.y_decoder import TrainedDecoder

    prepared = dataclasses.replace(smoke_prepared, runtime=dataclasses.replace(smoke_prepared.runtime, device=CUDA))
    video = torch.randint(0, 256, (2, prepared.cfg.latency.frames, 32, 32, 3), dtype=torch.uint8).numpy()
    # the JEPA decoder's cache key hashes the Y-encoder's weights (values): a fixed key stands in
    with fake_cuda(), mock.patch.object(JepaArm, "_space", lambda self: "fake"):
        encoder = FrozenEncoder.from_config(prepared.cfg).to(CUDA)
        arm = prepared.seeded_arm(name, CUDA).eval()
        generating = contextlib.nullcontext()
        if name == "jepa":
            dc = arm.arm_cfg.y_decoder
            arm._set_decoder(TrainedDecoder(arm.y_encoder.dim, arm.tokenizer, dc, arm.cfg.lm.attn_implementation))
            arm._decoder_key, arm._decode_scale = ("fake", None), 1.0
            generating = _first_steps_of_generate(arm.decoder.lm)
        stages = dict(inference(prepared, encoder, arm, 2, 3))
        assert list(stages)[0] == "x_encoder"
        state = video
        with generating:
            for stage, fn in stages.items():
                if stage == "decoder":  # its forwards run; the tokens' text is read from their values
                    until_values_are_read(lambda: fn(state))
                else:
                    state = fn(state)
                    assert on_cuda(*[t for t in (state if isinstance(state, tuple) else (state,))
                                     if isinstance(t, torch.Tensor)]), stage


# ---- the GPU check's own builders -----------------------------------------------------------------
def test_the_gpu_checks_builders_put_everything_on_the_device(cache_dir):
    """experiments/describe/gpu_check.py as it builds each row on a GPU: the online encoder built with
    the device, each arm built by its stand-in pipeline, random frames made on the device; each arm's
    forward (the loss, and the embeddings GradCache's path takes) on what the encoder gives."""
    from experiments.describe.gpu_check import _StandIn, check_setup, random_batch

    with fake_cuda():
        s = check_setup(str(SMOKE), [f"cache_dir={cache_dir}"], device=CUDA)
        assert placement(s.features.encoder) == {}
        for name in s.cfg.arms:
            arm = _StandIn(s.cfg, s.ctx).seeded_arm(name, s.device)
            assert placement(arm) == {}, name
            batch = s.features.ready(random_batch(s.cfg, s.ctx, 2, 8, s.device), s.device)
            assert on_cuda(batch.visual, arm(batch)), name
            if arm.has("coupled_loss"):
                assert on_cuda(*arm(batch, part="embeddings").values())
