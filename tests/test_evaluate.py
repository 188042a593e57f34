"""The arm-agnostic evaluator on a scripted arm whose every answer is known in advance."""
import dataclasses

import numpy as np
import pytest
import torch

from shared.evaluation.evaluate import EvalSet, combine, eval_sets, evaluate
from shared.evaluation.metrics import cider
from tests.toy_arm import ToyArm, ToyConfig


class ScriptedArm(ToyArm):
    """Captions every clip with one fixed text; ranks the candidates in their listed order."""

    def caption(self, visual, queries, max_new_tokens):
        return ["a red square moves left"] * len(queries)

    def score_candidates(self, visual, queries, candidates):
        return -torch.arange(len(candidates), dtype=torch.float32).expand(len(queries), -1)


@pytest.fixture
def scripted(smoke_prepared):
    prepared = dataclasses.replace(smoke_prepared, cfg=dataclasses.replace(
        smoke_prepared.cfg, arm={**smoke_prepared.cfg.arm, "toy": ToyConfig()}))
    evalset = eval_sets(prepared)[0].canonical_only()
    return prepared, ScriptedArm(prepared.context("cpu")), evalset


def test_metrics_of_a_scripted_arm_are_the_metrics_of_its_answers(scripted):
    prepared, arm, evalset = scripted
    out = evaluate(arm, prepared, evalset)
    clips = [evalset.source.clip(i) for i in range(evalset.n)]
    labels = np.asarray([c.label for c in clips])
    refs = [list(c.captions) for c in clips]
    assert out["cider"] == pytest.approx(cider(["a red square moves left"] * evalset.n, refs)[0])
    # candidates ranked in order: label k is in the top 5 exactly when k < 5
    assert out["top1"] == pytest.approx(np.mean(labels == 0))
    assert out["top5"] == pytest.approx(np.mean(labels < 5))
    # per clip, the rank of the true label: what intervals over clips resample
    assert [e["rank"] for e in out["examples"]] == labels.tolist()
    # and its label, which clusters the clips for those intervals
    assert [e.get("label", -1) for e in out["examples"]] == labels.tolist()
    assert np.mean([e["cider"] for e in out["examples"]]) == pytest.approx(out["cider"])
    assert "recall1" not in out and "top5_phrasings" not in out  # no embeddings, one phrasing per label
    assert [e["id"] for e in out["examples"]] == [c.id for c in clips]
    assert 0 < out["top5"] < 1 and out["cider"] > 0  # the check is not a trivial 0 == 0


def test_meaning_accuracy_reads_the_captions_back_clip_by_clip(scripted, monkeypatch):
    """Synthetic data: the caption read by the grammar against each clip's meaning, per clip and overall."""
    from shared.data.synthetic import Meaning
    from shared.evaluation.intervals import per_clip_values

    prepared, arm, evalset = scripted
    clips = [evalset.source.clip(i) for i in range(evalset.n)]
    truth = [Meaning.from_label(c.label) for c in clips]
    # clip i is captioned with its own meaning when i is even, with another colour's when i is odd
    other = {"red": "blue", "green": "red", "blue": "green"}
    texts = [f"a {m.colour if i % 2 == 0 else other[m.colour]} {m.shape} {'moves left' if m.action == 'left' else 'rises'}"
             for i, m in enumerate(truth)]
    monkeypatch.setattr(arm, "caption", lambda visual, queries, max_new_tokens, it=iter(texts): [next(it) for _ in queries])
    out = evaluate(arm, prepared, evalset)
    action_right = np.array([m.action in ("left", "up") for m in truth], float)
    even = np.arange(evalset.n) % 2 == 0
    assert out["meaning_colour"] == pytest.approx(np.mean(even))
    assert out["meaning_shape"] == 1.0
    assert out["meaning_action"] == pytest.approx(action_right.mean())
    assert out["meaning"] == pytest.approx(np.mean(even * action_right))
    assert [e["meaning"] for e in out["examples"]] == (even * action_right).astype(int).tolist()
    assert per_clip_values(out["examples"], "meaning")[""] == {c.id: float(v) for c, v in zip(clips, even * action_right)}
    assert per_clip_values(out["examples"], "meaning_shape")[""] == {c.id: 1.0 for c in clips}
    assert 0 < out["meaning"] < 1  # not a trivial 0 == 0


def test_the_fixed_caption_scores_the_meaning_accuracy_of_its_one_meaning(scripted):
    """"a red square moves left" for every clip is right exactly on the red-square-left clips."""
    from shared.data.synthetic import Meaning

    prepared, arm, evalset = scripted
    labels = np.array([evalset.source.clip(i).label for i in range(evalset.n)])
    truth = [Meaning.from_label(int(x)) for x in labels]
    out = evaluate(arm, prepared, evalset)
    assert out["meaning"] == pytest.approx(np.mean(labels == Meaning("red", "square", "left").label))
    assert out["meaning_colour"] == pytest.approx(np.mean([m.colour == "red" for m in truth]))
    assert out["meaning_action"] == pytest.approx(np.mean([m.action == "left" for m in truth]))
    assert out["examples"][0]["meaning_read"] == ["red", "square", "left"]


def test_synthetic_baselines_add_meaning_reference_points(scripted):
    from shared.evaluation.evaluate import baselines

    prepared, _, evalset = scripted
    base = baselines(prepared, evalset)
    assert base["human_ceiling_meaning"] == 1.0  # every reference reads back as its clip's meaning
    assert base["template_colour_meaning"] <= base["template_colour_shape_meaning"] < 1
    assert base["most_frequent_caption_cider"] < base["template_colour_shape_cider"] < base["human_ceiling_cider"]
    assert set(base["template_fixed"]) == {"colour", "shape", "action"}


def test_a_manifest_source_gets_no_meaning_metric(scripted, tmp_path):
    """Free-text captions: no reader, so neither evaluation nor baselines report meaning accuracy."""
    import json

    from PIL import Image

    from shared.data.sources import ManifestSource, manifest_dataset
    from shared.evaluation.evaluate import baselines

    prepared, arm, _ = scripted
    lines = []
    for i, c in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.fromarray(np.full((40, 40, 3), c, np.uint8)).save(tmp_path / f"c{i}.png")
        lines.append(json.dumps({"id": f"c{i}", "media": f"c{i}.png", "captions": ["a red square moves left", "a frame"],
                                 "label": f"l{i}", "split": "test"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    ds = manifest_dataset(str(tmp_path / "m.jsonl"), prepared.cfg)
    source = ds.split("test")
    assert isinstance(source, ManifestSource) and source.caption_reader is None
    prepared.features.prepare(source, desc="encode manifest")
    evalset = EvalSet.of("m", source, ds.label_phrasings(1), 0)
    out = evaluate(arm, prepared, evalset)
    assert "cider" in out and not any(k.startswith("meaning") for k in out)
    assert not any(k.startswith("meaning") for e in out["examples"] for k in e)
    assert not any("meaning" in k or k.startswith("template") for k in baselines(prepared, evalset))


def test_phrasings_score_each_label_by_the_mean_of_its_phrasings():
    evalset = EvalSet("s", source=None, phrasings=[["a", "a2"], ["b"], ["c", "c2", "c3"]], n=0)
    scores = np.array([[0.1, 0.9, 0.5, 0.2, 0.3, 0.7]])
    mean, canonical = evalset.per_label(scores)
    assert np.allclose(mean, [[0.5, 0.5, 0.4]]) and canonical.tolist() == [[0.1, 0.5, 0.2]]
    assert evalset.candidates == ["a", "a2", "b", "c", "c2", "c3"] and evalset.label_texts == ["a", "b", "c"]


def test_combine_averages_declared_metrics_over_sets_and_sums_timings():
    m = combine({"x": {"cider": 1.0, "top5": 0.2, "eval_s": 3.0}, "y": {"cider": 3.0, "eval_s": 1.0}})
    assert m["cider"] == 2.0 and m["top5"] == 0.2 and m["eval_s"] == 4.0
    assert m["sets"] == {"x": {"cider": 1.0, "top5": 0.2}, "y": {"cider": 3.0}}
    assert "sets" not in combine({"x": {"cider": 1.0}})


def test_an_empty_evaluation_set_is_refused():
    with pytest.raises(ValueError, match="'none' holds no clips"):
        EvalSet.of("none", [], [], 10)


def test_label_rank_agrees_with_top_k_on_ties():
    from shared.evaluation.evaluate import label_rank
    from shared.evaluation.metrics import top_k_accuracy

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(200, 12)).astype(float)  # many ties
    labels = rng.integers(0, 12, size=200)
    ranks = label_rank(scores, labels)
    for k in (1, 3, 5):
        assert np.mean(ranks < k) == pytest.approx(top_k_accuracy(scores, labels, k))


def test_decoder_ceiling_scores_against_the_other_references(scripted):
    """A perfect decoder (decode(encode(x)) == x) scores the annotator ceiling, not its own input."""
    from shared.evaluation.evaluate import baselines

    prepared, arm, evalset = scripted
    arm.reconstruct_texts = lambda texts, max_new_tokens: list(texts)
    arm.capabilities = frozenset({"reconstruct_texts"})
    out = evaluate(arm, prepared, evalset)
    assert out["decoder_ceiling_cider"] == pytest.approx(baselines(prepared, evalset)["human_ceiling_cider"])


def test_captions_are_cut_in_the_shared_tokenizers_unit(smoke_prepared):
    from shared.evaluation.evaluate import cap_length

    tok = smoke_prepared.tokenizer
    long = "a red circle moves left and a blue square moves right"
    n = len(tok(long, add_special_tokens=False)["input_ids"])
    assert cap_length([long, "a red circle"], tok, n) == [long, "a red circle"]
    (cut,) = cap_length([long], tok, 4)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) == 4 and long.startswith(cut)
