"""Paired bootstrap intervals: what they say about an arm difference, and that they can say "ties"."""
import json

import numpy as np
import pytest

from shared.evaluation.intervals import Difference, arm_difference, paired_difference, per_clip_values


def test_identical_arms_tie_and_a_uniform_gain_leads():
    rng = np.random.default_rng(0)
    x = {"": rng.random(100)}
    same = paired_difference([x], [x], resamples=200)
    assert same.diff == 0 and same.lo == same.hi == 0 and same.verdict() == "ties"
    better = paired_difference([{"": x[""] + 1}], [x], resamples=200)
    assert better.diff == pytest.approx(1) and better.lo == pytest.approx(1) and better.verdict() == "leads"
    assert better.verdict(higher_is_better=False) == "trails"


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(100):
        a = rng.normal(0.3, 1.0, size=80)
        b = a - 0.3 + rng.normal(0, 0.5, size=80)  # true paired difference 0.3
        d = paired_difference([{"": a}], [{"": b}], resamples=400, seed=int(rng.integers(1 << 30)))
        hits += d.lo <= 0.3 <= d.hi
    assert 85 <= hits <= 100


def test_seeds_that_disagree_widen_the_interval_past_zero():
    rng = np.random.default_rng(2)
    base = rng.random(200)
    seeds_a = [{"": base + 0.2}, {"": base - 0.2}, {"": base + 0.25}]
    seeds_b = [{"": base}] * 3
    one = paired_difference(seeds_a[:1], seeds_b[:1], resamples=300)
    assert one.verdict() == "leads"  # within one seed, every clip moved the same way
    three = paired_difference(seeds_a, seeds_b, resamples=300)
    assert three.lo < 0 < three.hi and three.verdict() == "ties" and three.seeds == 3


def test_unpaired_input_is_refused():
    with pytest.raises(ValueError, match="same clips"):
        paired_difference([{"": np.zeros(3)}], [{"": np.zeros(4)}])


def test_per_clip_values_from_predictions(tmp_path):
    examples = [{"id": "a", "cider": 0.5, "rank": 0, "rank_phrasings": 7, "set": "s"},
                {"id": "b", "cider": 1.5, "rank": 6, "rank_phrasings": 2, "set": "s"},
                {"id": "c", "cider": 1.0, "rank": -1, "set": "s"}]
    assert per_clip_values(examples, "cider") == {"s": {"a": 0.5, "b": 1.5, "c": 1.0}}
    assert per_clip_values(examples, "top5") == {"s": {"a": 1.0, "b": 0.0}}
    assert per_clip_values(examples, "top5_phrasings") == {"s": {"a": 0.0, "b": 1.0}}
    folder = tmp_path / "predictions"
    folder.mkdir()
    for arm, shift in (("x", 0.0), ("y", 1.0)):
        rows = [dict(e, cider=e["cider"] + shift) for e in examples]
        (folder / f"{arm}-seed0-{64:010d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = arm_difference(tmp_path, "x", "y", [0], 64, "cider")
    assert isinstance(d, Difference) and d.diff == pytest.approx(-1.0) and d.verdict() == "trails"
    assert arm_difference(tmp_path, "x", "y", [0, 1], 64, "cider") is None  # seed 1 was not run


def test_per_clip_meaning_values_are_read_under_their_own_key():
    """Meaning accuracy (synthetic data): 1/0 per clip under "meaning" and "meaning_<attribute>";
    clips without it (no label, or free-text data) are left out."""
    examples = [{"id": "a", "meaning": 1, "meaning_colour": 1, "set": "s"},
                {"id": "b", "meaning": 0, "meaning_colour": 1, "set": "s"},
                {"id": "c", "cider": 1.0, "set": "s"}]
    assert per_clip_values(examples, "meaning") == {"s": {"a": 1.0, "b": 0.0}}
    assert per_clip_values(examples, "meaning_colour") == {"s": {"a": 1.0, "b": 1.0}}
    assert per_clip_values(examples, "meaning_shape") == {}
    assert per_clip_values([{"id": "x", "meaning_read": ["red", None, None]}], "meaning_read") == {}
