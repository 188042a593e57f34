"""One smoke comparison, three front doors: its checkpoints load into the arm its evaluation scored
(one milestone loader); the exported folders, reloaded with plain transformers (the code of
docs/export.md), give the arm's logits (VLM) and predictions (JEPA); and it logged to every
configured tracker (TensorBoard, a recording tracker registered with accelerate, wandb offline
where installed): training by step, evaluation by samples seen, the resolved config."""
import importlib.util
import json
import re

import pytest
import torch
from accelerate.tracking import register_tracker_class

from experiments.cli import main
from shared.config import ConfigError
from shared.milestone import Milestone
from shared.milestone import load_arm as load_milestone
from shared.precision import resolve_runtime
from tests.conftest import ROOT, SMOKE
from tests.test_tracking import Recording


WANDB = importlib.util.find_spec("wandb") is not None


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    register_tracker_class(Recording)
    Recording.runs.clear()
    trackers = ["tensorboard", "recording"] + (["wandb"] if WANDB else [])
    # a cache of its own: a run in bf16 fills the text-embedding cache that other tests compare against fp32
    out = tmp_path_factory.mktemp("export") / "se"
    cache = tmp_path_factory.mktemp("export-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        assert main(["sample-efficiency", "-c", str(SMOKE), "-o", str(out), f"cache_dir={cache}",
                     "train.milestones=[32,64]", "train.log_every=1", "eval.phrasings=1", "eval.max_clips=16",
                     f"log.trackers=[{','.join(trackers)}]", "log.offline=true"]) == 0
    return out


def load_arm(checkpoint, **kwargs):
    """shared.milestone.load_arm as a command calls it: under a runtime resolved for the milestone's config
    (when no pipeline is given)."""
    if kwargs.get("prepared") is None:
        m = checkpoint if isinstance(checkpoint, Milestone) else Milestone.find(checkpoint)
        kwargs["runtime"] = resolve_runtime(m.config(), kwargs.get("device"))
    return load_milestone(checkpoint, **kwargs)


def docs_code() -> dict:
    code = re.search(r"^```python\n(.*?)^```$", (ROOT / "docs" / "export.md").read_text(), re.S | re.M).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/export.md", "exec"), namespace)  # noqa: S102 - the guide's own code
    return namespace


@pytest.mark.slow
def test_load_arm_gives_the_arm_the_comparison_evaluated(comparison):
    from shared.evaluation.evaluate import eval_sets, evaluate
    from shared.pipeline import prepare

    m = Milestone.find(comparison / "runs" / "jepa" / "seed0")  # a run folder: its last milestone
    assert m.arm_name == "jepa" and m.samples_seen == 64 and m.folder.name == "samples_0000000064"
    arm = load_arm(m)
    assert not arm.training and arm.samples_seen == 64
    assert all(torch.equal(p, m.weights()[n]) for n, p in arm.named_parameters() if p.requires_grad)
    # evaluated again from the loaded arm: the row the comparison wrote
    prep = prepare(m.config(), resolve_runtime(m.config()))
    row = [json.loads(l) for l in (comparison / "metrics.jsonl").read_text().splitlines()
           if json.loads(l)["arm"] == "jepa" and json.loads(l)["samples_seen"] == 64][0]
    again = evaluate(load_arm(m.folder, prepared=prep), prep, eval_sets(prep)[0].canonical_only())
    assert (again["cider"], again["top5"]) == (row["cider"], row["top5"])
    # the next milestone loaded into the same arm object (as the comparison's evaluation does)
    first = Milestone.find(m.run.milestone(32))
    reused = load_arm(first, prepared=prep, reuse=arm, evaluation=False)
    assert reused is arm and arm.samples_seen == 32
    assert all(torch.equal(p, first.weights()[n]) for n, p in arm.named_parameters() if p.requires_grad)
    # a pipeline of another training config does not fit the weights: refused, naming the key
    with pytest.raises(ConfigError, match="lm.hidden_size"):
        load_arm(m, prepared=prepare(m.config(["lm.hidden_size=32"]), resolve_runtime(m.config()), splits=()))


@pytest.mark.slow
def test_exported_vlm_gives_the_arms_logits(comparison, tmp_path):
    out = tmp_path / "vlm"
    assert main(["export", "--checkpoint", str(comparison / "runs" / "vlm" / "seed0"), "--out", str(out)]) == 0
    assert (out / "lm" / "model.safetensors").is_file() and (out / "lm" / "tokenizer.json").is_file()
    arm = load_arm(comparison / "runs" / "vlm" / "seed0", evaluation=False, device="cpu")
    g = torch.Generator().manual_seed(0)
    visual = torch.randn(1, arm.ctx.visual_tokens, arm.ctx.visual_dim, generator=g)
    query, caption = arm.cfg.data.query, "a red circle moves to the left"
    with torch.no_grad():
        x, mask = arm.prefix(visual, [query])
        ids, _ = arm._ids([caption], eos=True)
        expected = arm.lm(inputs_embeds=torch.cat([x, arm.embed_ids(ids)], dim=1)).logits
    got = docs_code()["vlm_logits"](out, visual, query, caption)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "64 samples seen" in card and "| CIDEr |" in card and "vit_pe_core_tiny_patch16_384" in card
    # the data it was trained on, and the clips its metrics rest on: eval.max_clips=16, too few for intervals
    assert "The synthetic benchmark with few meanings: 192 train / 24 val / 48 test clips" in card
    assert re.search(r"measured on evaluation set `test` \(16 clips, \d+ labels, the `test` split\)", card) and "Few clips" in card
    info = json.loads((out / "export.json").read_text())
    assert info["samples_seen"] == 64 and info["metrics"]["arm"] == "vlm" and info["encoder"]["frames"] == 4


@pytest.mark.slow
def test_exported_jepa_predictor_gives_the_arms_predictions(comparison, tmp_path):
    out = tmp_path / "jepa"
    ckpt = comparison / "runs" / "jepa" / "seed0" / "checkpoints" / "samples_0000000032"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    arm = load_arm(ckpt, evaluation=False, device="cpu")
    visual = torch.randn(1, arm.ctx.visual_tokens, arm.ctx.visual_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = arm.predict(visual, [arm.cfg.data.query])
    got = docs_code()["jepa_prediction"](out, visual, arm.cfg.data.query)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert "32 samples seen" in (out / "README.md").read_text()
    assert json.loads((out / "export.json").read_text())["samples_seen"] == 32


def test_the_commands_of_docs_export_parse():
    import shlex

    from experiments.cli import build_parser

    commands = [l for l in (ROOT / "docs" / "export.md").read_text().splitlines() if l.startswith("python -m experiments export")]
    assert len(commands) == 2
    for command in commands:
        args = build_parser("export").parse_args(shlex.split(command.split("#")[0])[3:])
        assert args.command == "export" and args.export_dir.name in ("vlm", "jepa")


@pytest.mark.slow
def test_the_comparison_logged_to_every_configured_tracker(comparison):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {r.run_name: r for r in Recording.runs}
    assert sorted(runs) == [f"se/{a}/seed0/{p}" for a in ("jepa", "vlm") for p in ("eval", "train")]
    train, ev = runs["se/jepa/seed0/train"], runs["se/jepa/seed0/eval"]
    assert train.finished and ev.finished
    # the resolved config as hyperparameters (precision resolved, not "auto")
    assert train.config["train.milestones"] == "[32, 64]" and train.config["arm_name"] == "jepa"
    assert train.config["train.mixed_precision"] in ("no", "bf16") and ev.config == train.config
    # training by optimizer step (effective batch 32), evaluation by samples seen
    assert [s for s, _ in train.rows] == [1, 2] and [v["train/samples_seen"] for _, v in train.rows] == [32, 64]
    assert set(train.rows[0][1]) == {"train/loss", "train/lr", "train/samples_per_s", "train/samples_seen"}
    metrics = [r for r in map(json.loads, (comparison / "metrics.jsonl").read_text().splitlines()) if r["arm"] == "jepa"]
    assert [s for s, _ in ev.rows] == [32, 64] == [r["samples_seen"] for r in metrics]
    assert ev.rows[1][1]["eval/cider"] == metrics[1]["cider"] and ev.rows[1][1]["eval/top5"] == metrics[1]["top5"]
    # TensorBoard: the same, in the run folder
    run = comparison / "runs" / "jepa" / "seed0"
    scalars = {}
    for phase in ("train", "eval"):
        acc = EventAccumulator(str(run / phase))
        acc.Reload()
        scalars.update({tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]})
    assert scalars["train/loss"] == [1, 2] and scalars["eval/cider"] == [32, 64]
    if WANDB:  # one offline run per phase, in the run folder
        offline = sorted((run / "wandb").glob("offline-run-*"))
        assert len(offline) == 2 and all(any(d.glob("*.wandb")) for d in offline)


@pytest.mark.slow
def test_a_random_target_space_is_exported_and_embeds_as_the_arm(tmp_path, cache_dir):
    """The default target space (a frozen random encoder) is no published model: it travels with the export."""
    from transformers import AutoModel, AutoTokenizer

    run = tmp_path / "run"
    assert main(["train", "-c", str(SMOKE), "--arm", "jepa", "-o", str(run), f"cache_dir={cache_dir}",
                 "train.milestones=[32]", "jepa.y_encoder.weights=random"]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "x")]) == 0
    model = AutoModel.from_pretrained(tmp_path / "x" / "y_encoder").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "x" / "y_encoder")
    texts = ["a red circle moves left", "a blue square spins around"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        mask = enc["attention_mask"].unsqueeze(-1).float()
        got = torch.nn.functional.normalize((model(**enc).last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1)
        expected = load_arm(run, evaluation=False, device="cpu").y_encoder(texts)
    assert torch.allclose(got, expected, atol=1e-6)
    assert json.loads((tmp_path / "x" / "export.json").read_text())["y_encoder"]["exported"] == "y_encoder"
