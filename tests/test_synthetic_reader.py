"""The synthetic benchmark's captions read back into their meaning: every phrasing, and partial ones."""
import itertools
from dataclasses import astuple

import numpy as np
import pytest

from shared.data import synthetic as syn
from shared.data.synthetic_reader import READER, Reading, normalise, read_meaning


def test_every_phrasing_the_grammar_can_produce_reads_back_as_its_meaning():
    """144 meanings x every (colour word, shape word, verb phrase, template) of level 4: 86,400 captions."""
    lim = syn.LEVELS[4]
    all_forms = list(itertools.product(*(range(lim[k]) for k in ("colour", "shape", "action", "template"))))
    assert len(all_forms) == 600
    wrong = [(text, read_meaning(text)) for label in range(syn.NUM_CLASSES)
             for m in [syn.Meaning.from_label(label)] for form in all_forms
             if read_meaning(text := syn.phrase(m, form)) != astuple(m)]
    assert not wrong, wrong[:5]


def test_sampled_captions_and_label_texts_read_back():
    for label, text in enumerate(syn.class_texts()):
        assert read_meaning(text).meaning() == syn.Meaning.from_label(label)
    for i in range(50):
        clip = syn.make_clip(0, "test", i, 4, 5)
        assert {read_meaning(c).meaning() for c in clip.captions} == {clip.scene.meaning}


@pytest.mark.parametrize("text, expected", [
    ("a red circle", ("red", "circle", None)),
    ("moving left", (None, None, "left")),
    ("", (None, None, None)),
    ("   ", (None, None, None)),
    ("plus sign", (None, "cross", None)),
    ("a crimson", ("red", None, None)),
    ("is spinning", (None, None, "spin")),
    ("a red circle is moving", ("red", "circle", None)),  # truncated: no direction
    ("a red circle to the left", ("red", "circle", "left")),  # a bare direction where no verb phrase is
    ("the box turns around", (None, "square", "spin")),
    ("the box turns another colour", (None, "square", "recolour")),
    ("a navy block jumps up and down", ("blue", "square", "bounce")),  # "up", "down" inside the phrase
    ("a lime dot flashes on and off", ("green", "circle", "blink")),
])
def test_partial_captions_are_read_attribute_by_attribute(text, expected):
    assert read_meaning(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("A RED Circle,   moving LEFT!!", ("red", "circle", "left")),
    ("a red three - sided shape falls .", ("red", "triangle", "down")),
    ("the green three-sided-shape materializes", ("green", "triangle", "appear")),
    ("an azure disk is traveling left", ("blue", "circle", "left")),
    ("a blue cube changes color", ("blue", "square", "recolour")),
    ("a scarlet plus-sign rises", ("red", "cross", "up")),
])
def test_spacing_punctuation_case_and_spelling_do_not_matter(text, expected):
    assert read_meaning(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("a red and blue circle moves left", (None, "circle", "left")),
    ("a red circle and a square", ("red", None, None)),
    ("a red circle moves left and falls", ("red", "circle", None)),
    ("a red circle moves left then right", ("red", "circle", None)),  # bare directions disagree too
    ("a red crimson circle drifts leftward and moves left", ("red", "circle", "left")),  # one value, twice
    ("a red circle rises up", ("red", "circle", "up")),  # a bare direction that agrees
    ("a red circle falls up", ("red", "circle", None)),  # a verb phrase and a bare direction that disagree
])
def test_an_attribute_named_with_two_values_reads_as_none(text, expected):
    assert read_meaning(text) == expected


def test_reading_helpers():
    assert normalise("The Three-Sided shape, Emerald!") == ["the", "three", "sided", "shape", "emerald"]
    assert Reading("red", None, "left").meaning() is None
    assert READER.truth(syn.Meaning("blue", "cross", "spin").label) == ("blue", "cross", "spin")
    assert READER.caption(("blue", "cross", "spin")) == syn.canonical_caption(syn.Meaning("blue", "cross", "spin"))
    assert READER.read("a blue cross spins") == ("blue", "cross", "spin")


def test_meaning_accuracy_counts_exact_and_per_attribute():
    from shared.evaluation.metrics import meaning_accuracy

    labels = [syn.Meaning("red", "circle", "left").label, syn.Meaning("blue", "square", "spin").label, -1]
    got = meaning_accuracy(READER, ["a red circle moves left", "a blue circle", "anything"], labels)
    assert got["meaning"][:2].tolist() == [1.0, 0.0] and np.isnan(got["meaning"][2])
    assert got["meaning_colour"][:2].tolist() == [1.0, 1.0]
    assert got["meaning_shape"][:2].tolist() == [1.0, 0.0]
    assert got["meaning_action"][:2].tolist() == [1.0, 0.0]
