import numpy as np
import pytest

from shared.evaluation.metrics import cider, recall_at_k, top_k_accuracy

PREDS = ["a red square moves left", "a blue circle", "the green cross blinks quickly", "a dog"]
REFS = [["a red square moves left", "the red box slides to the left"],
        ["a blue circle grows", "a blue disc gets bigger", "the blue circle grows"],
        ["a green cross blinks", "the green plus flashes"],
        ["a red triangle falls", "a red wedge sinks"]]


def test_cider_equals_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFS)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(PREDS)})
    expected, expected_each = Cider().compute_score(gts, res)
    score, each = cider(PREDS, REFS)
    assert score == pytest.approx(expected) and np.allclose(each, expected_each)
    assert each[0] > each[1] > 0 and each[3] == 0


def test_cider_is_corpus_level():
    # the same prediction scores differently depending on the rest of the corpus (IDF)
    alone, _ = cider(PREDS[:1], REFS[:1])
    _, in_corpus = cider(PREDS, REFS)
    assert alone == 0.0 and in_corpus[0] > 1.0


def test_cider_rejects_bad_input():
    with pytest.raises(ValueError, match="2 predictions for 1"):
        cider(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        cider(["a"], [[]])


def test_cider_keeps_the_terminal_quiet_and_raises_java_errors(capfd, monkeypatch):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from shared.evaluation import ptb

    PTBTokenizer().tokenize({0: [{"caption": "a red square"}]})  # pycocoevalcap's own: java's line on fd 2
    assert "PTBTokenizer tokenized" in capfd.readouterr().err
    cider(PREDS, REFS)
    seen = capfd.readouterr()
    assert seen.out == "" and seen.err == ""
    # a java that fails: its own message, not an empty tokenization scored as 0
    monkeypatch.setattr(ptb, "COMMAND", [*ptb.COMMAND[:3], "edu.stanford.nlp.process.NoSuchTokenizer", *ptb.COMMAND[4:]])
    with pytest.raises(ptb.PTBError, match="(?s)exit status 1.*NoSuchTokenizer"):
        cider(PREDS, REFS)


def test_top_k_on_hand_made_scores():
    scores = np.array([[0.1, 0.5, 0.4, 0.0],   # label 2 is 2nd
                       [0.9, 0.05, 0.03, 0.02],  # label 0 is 1st
                       [0.4, 0.3, 0.2, 0.1]])  # label 3 is last
    labels = [2, 0, 3]
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(scores, labels, 4) == pytest.approx(1.0)
    assert top_k_accuracy(scores, labels, 5) == pytest.approx(1.0)  # k beyond the classes


def test_recall_at_k():
    sim = np.array([[0.9, 0.1, 0.3], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3]])
    assert recall_at_k(sim, [0, 1, 2], 1) == pytest.approx(2 / 3)
    assert recall_at_k(sim, [0, 1, 2], 2) == pytest.approx(1.0)


def test_top_1_with_two_classes():
    scores = [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]
    assert top_k_accuracy(scores, [1, 1, 0], 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, [1, 0, 1], 1) == pytest.approx(1.0)


def test_a_new_metric_is_its_declaration_and_its_values():
    """Declared once, a metric is carried by rows, averaged over sets and seeds, and tabled in the report."""
    from experiments.report import aggregate, results_table
    from experiments.sample_efficiency import metrics_row
    from shared.evaluation.evaluate import combine
    from shared.evaluation.metrics import METRICS, Metric

    METRICS.append(Metric("top3", "top-3 %", percent=True))
    try:
        m = combine({"a": {"cider": 1.0, "top3": 0.5}, "b": {"cider": 2.0, "top3": 0.7}})
        assert m["top3"] == pytest.approx(0.6) and m["sets"]["b"]["top3"] == 0.7
        ckpt = {"step": 1, "samples_seen": 64, "milestone": 64}
        rows = [metrics_row("jepa", seed, ckpt, dict(m, top3=0.2 * (seed + 1)), 10, []) for seed in (0, 1)]
        assert [r["top3"] for r in rows] == [0.2, 0.4]
        agg = aggregate(rows)
        assert agg[("jepa", 64)]["top3"] == pytest.approx((0.3, 0.2, 0.4))
        header, _, row = results_table(agg, ["jepa"], [64])
        assert "top-3 %" in header and "30.0 (20.0–40.0)" in row
    finally:
        METRICS.pop()
