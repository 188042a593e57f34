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
