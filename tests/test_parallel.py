"""Layouts and what every layout must keep: frozen parts frozen, GradCache exact with dropout, one
numeric recipe (in process, one process; the multi-process runs are in tests/test_distributed.py)."""
import dataclasses
import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from shared.arm import Batch, build_arm
from shared.config import ConfigError, load_config
from shared.evaluation.audit import audit
from shared.training import step as step_module
from shared.training.checkpoint import RunDir
from shared.training.loop import train_arm
from shared.training.resume import ResumeClock
from shared.training.parallel import micro_layout
from shared.training.step import coupled_step
from tests.conftest import SMOKE
from tests.test_audit import fake_run


def test_the_effective_batch_is_split_over_processes_then_micro_batches():
    assert micro_layout(128, 16, 1) == (16, 8)  # one GPU: 8 micro-steps of 16
    assert micro_layout(128, 16, 8) == (16, 1)
    assert micro_layout(128, 16, 16) == (8, 1)  # a share smaller than the micro-batch runs in one pass
    assert micro_layout(32, 16, 16) == (2, 1)
    with pytest.raises(ConfigError, match="cannot be split over 3 processes"):
        micro_layout(128, 16, 3)
    with pytest.raises(ConfigError, match="not a multiple of train.micro_batch=16"):
        micro_layout(80, 16, 2)


def test_frozen_modules_stay_in_eval_mode_whatever_train_is_called_on(smoke_prepared, smoke_cfg):
    """A frozen Y-encoder computing targets in the step (cache off, as at paper scale) must not drop
    out: its targets then match evaluation's, and two calls give the same targets."""
    cfg = smoke_cfg("jepa.y_encoder.cache=false", "jepa.y_encoder.weights=random")  # MiniLM's architecture: dropout
    torch.manual_seed(0)
    arm = build_arm("jepa", dataclasses.replace(smoke_prepared.context(), cfg=cfg))
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in arm.y_encoder.modules())  # else nothing to test
    wrapper = nn.Sequential(arm)  # a wrapper's train() reaches the arm through its children
    wrapper.train()
    frozen = arm.frozen_modules()
    assert arm.y_encoder in frozen and arm.predictor.lm.embed_tokens in frozen
    assert all(not m.training for f in frozen for m in f.modules())
    assert arm.training and arm.predictor.lm.layers[0].training  # the trainable parts do train
    texts = ["a red square moves left", "the blue circle grows"]
    assert torch.equal(arm.target_embeddings(texts), arm.target_embeddings(texts))


class _DropoutEmbedder(nn.Module):
    """A coupled loss whose embeddings pass through dropout (as a trainable Y-encoder's would)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Linear(16, 4))
        self.targets = nn.Parameter(torch.randn(64, 4))

    def forward(self, batch, part="embeddings"):
        rows = torch.tensor([int(i) for i in batch.ids])
        return {"pred": self.net(batch.visual), "target": self.targets[rows]}

    def coupled_loss(self, parts, captions):
        logits = nn.functional.normalize(parts["pred"], dim=-1) @ nn.functional.normalize(parts["target"], dim=-1).T
        return nn.functional.cross_entropy(logits / 0.1, torch.arange(len(logits)))


def _gradcache_gradients(model, batches):
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(1)
    model.zero_grad()
    loss = coupled_step(accelerator, model, model, batches)
    return loss, [p.grad.clone() for p in model.parameters()]


def test_gradcache_replays_the_dropout_of_its_first_pass(monkeypatch):
    torch.manual_seed(0)
    model = _DropoutEmbedder().train()
    batches = [Batch(ids=[str(i) for i in range(k, k + 8)], queries=[""] * 8, captions=[str(i) for i in range(k, k + 8)],
                       visual=torch.randn(8, 6)) for k in (0, 8)]
    # the reference: the loss over both micro-batches at once, the same dropout draws in the same order
    torch.manual_seed(1)
    parts = [model(b) for b in batches]
    ref = model.coupled_loss({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, [])
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    loss, grads = _gradcache_gradients(model, batches)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert all(torch.allclose(g, r, atol=1e-6) for g, r in zip(grads, ref_grads))
    # without the replay the second pass draws other masks: the gradient is not the loss's
    monkeypatch.setattr(step_module.RngState, "restore", lambda self: None)
    _, unreplayed = _gradcache_gradients(model, batches)
    assert not all(torch.allclose(g, r, atol=1e-6) for g, r in zip(unreplayed, ref_grads))


def test_ddp_and_fsdp2_compute_one_recipe_in_bf16(smoke_prepared):
    """One process, bf16: DDP's autocast over fp32 weights and FSDP2's (fp32 gather, fp32 reductions,
    the same autocast) give the first step's gradients to float rounding; a pure-bf16 FSDP policy
    (bf16 norms and gathers) would not."""
    from tests.dist_driver import first_step, smoke

    prepared = dataclasses.replace(smoke_prepared, cfg=smoke(smoke_prepared.cfg.cache_dir, "train.mixed_precision=bf16"))
    ddp = first_step(prepared, "jepa", "ddp", prepared.cfg.cache_path / "scratch")
    fsdp2 = first_step(prepared, "jepa", "fsdp2", prepared.cfg.cache_path / "scratch")
    assert ddp["loss"] == pytest.approx(fsdp2["loss"], rel=1e-6)
    assert sorted(ddp["grads"]) == sorted(fsdp2["grads"])
    for name, g in ddp["grads"].items():
        assert torch.allclose(g, fsdp2["grads"][name], rtol=1e-4, atol=1e-6), name


def test_a_resume_point_is_resumed_under_its_own_layout_only(smoke_prepared, tmp_path):
    cfg = load_config(SMOKE, [f"cache_dir={smoke_prepared.cfg.cache_dir}", "plugins=[tests.toy_arm]",
                              "train.mixed_precision=no", "train.parallel=fsdp2"])
    prepared = dataclasses.replace(smoke_prepared, cfg=cfg)
    train_arm(prepared, "toy", tmp_path / "run", stop_at_samples=96, progress=False)
    assert (RunDir(tmp_path / "run").find_resume() / ".metadata").is_file()  # a torch distributed checkpoint
    ddp = dataclasses.replace(prepared, cfg=load_config(SMOKE, [f"cache_dir={cfg.cache_dir}", "plugins=[tests.toy_arm]",
                                                                "train.mixed_precision=no", "train.parallel=ddp"]))
    with pytest.raises(ConfigError, match="written under train.parallel=fsdp2: resume with that setting"):
        train_arm(ddp, "toy", tmp_path / "run", progress=False)
    assert train_arm(prepared, "toy", tmp_path / "run", progress=False).completed
    info = json.loads((tmp_path / "run" / "precision.json").read_text())
    assert info["recipe"]["gradient_reduction"] == "float32"
    assert [(r["layout"], r["processes"], r["from_step"]) for r in info["layouts"]] == [("fsdp2", 1, 0)]


def test_resume_points_by_wall_time_are_decided_at_log_steps(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("shared.training.resume.time.perf_counter", lambda: now[0])
    cfg = load_config(SMOKE, ["train.resume_every=0", "train.resume_every_min=1", "train.log_every=5"])
    clock = ResumeClock(cfg.train)
    now[0] = 59.0
    assert not clock.due(5)
    now[0] = 61.0
    assert not clock.due(6) and clock.due(10)  # read at log steps only: every rank decides at the same step
    clock.saved()
    assert not clock.due(15)
    steps = ResumeClock(load_config(SMOKE, ["train.resume_every=4"]).train)
    assert steps.due(8) and not steps.due(9)


def test_the_audit_compares_recipes_not_layouts(tmp_path):
    recipe = {"compute": "bfloat16 autocast", "master_weights": "float32", "optimizer_states": "float32",
              "gradient_reduction": "float32"}
    runs = []
    for arm, layout, r in (("jepa", "ddp", recipe), ("vlm", "fsdp2", recipe)):
        run = fake_run(tmp_path / arm, arm)
        (run / "precision.json").write_text(json.dumps({"recipe": r, "layouts": [
            {"layout": layout, "processes": 8, "from_step": 0}]}))
        runs.append(run)
    assert audit(runs)["ok"]
    (runs[1] / "precision.json").write_text(json.dumps({"recipe": {**recipe, "compute": "bfloat16"}, "layouts": []}))
    result = audit(runs)
    assert not result["ok"] and [d["key"] for d in result["differences"]] == ["precision.recipe"]
