from collections import defaultdict

import numpy as np
import pytest

from shared.data import synthetic as syn


def test_generator_is_deterministic():
    a = syn.make_clip(7, "train", 3, paraphrase=3, n_captions=5)
    b = syn.make_clip(7, "train", 3, paraphrase=3, n_captions=5)
    assert a == b
    times = np.linspace(0.05, 0.95, 6)
    assert np.array_equal(syn.render(a.scene, times, 32), syn.render(b.scene, times, 32))
    c = syn.make_clip(8, "train", 3, paraphrase=3, n_captions=5)
    assert c.scene != a.scene


def test_labels_cover_144_meanings_and_roundtrip():
    assert syn.NUM_CLASSES == 144
    for label in range(syn.NUM_CLASSES):
        assert syn.Meaning.from_label(label).label == label
    texts = syn.class_texts()
    assert len(set(texts)) == 144 and texts[0] == "a red circle moves left"


def _surface_forms(level: int, n: int = 600) -> tuple[dict, list]:
    forms, scenes = defaultdict(set), []
    for i in range(n):
        clip = syn.make_clip(0, "train", i, paraphrase=level, n_captions=5)
        forms[clip.scene.meaning].update(clip.captions)
        scenes.append(clip.scene)
    return forms, scenes


def test_paraphrase_knob_adds_surface_forms_and_keeps_meanings():
    per_level = {level: _surface_forms(level) for level in range(5)}
    mean_forms = [np.mean([len(v) for v in per_level[k][0].values()]) for k in range(5)]
    assert mean_forms[0] == 1.0  # one canonical phrasing per meaning
    assert all(b > a for a, b in zip(mean_forms, mean_forms[1:])), mean_forms
    # the knob changes words only: the same scenes (videos and labels) at every level
    assert all(per_level[k][1] == per_level[0][1] for k in range(5))
    # level 0 captions are exactly the class texts
    for meaning, forms in per_level[0][0].items():
        assert forms == {syn.canonical_caption(meaning)}


def test_captions_mention_the_meaning_at_high_variability():
    for i in range(200):
        clip = syn.make_clip(1, "test", i, paraphrase=4, n_captions=5)
        m = clip.scene.meaning
        for cap in clip.captions:
            assert any(w in cap for w in syn.COLOUR_WORDS[m.colour]), cap
            assert any(w in cap for w in syn.SHAPE_WORDS[m.shape]), cap
            assert any(v in cap or g in cap for v, g in syn.ACTION_WORDS[m.action]), cap


def _centroid_x(frame: np.ndarray, background) -> float:
    diff = np.abs(frame.astype(int) - np.array(background)).sum(-1) > 60
    return float(np.nonzero(diff)[1].mean())


@pytest.mark.parametrize("action, sign", [("left", -1), ("right", 1)])
def test_rendered_motion_follows_the_action(action, sign):
    rng = np.random.default_rng(0)
    scene = syn.sample_scene(rng, syn.Meaning("red", "square", action))
    frames = syn.render(scene, np.array([0.1, 0.9]), 64)
    dx = _centroid_x(frames[1], scene.background) - _centroid_x(frames[0], scene.background)
    assert sign * dx > 5


def test_streams_have_timestamped_consecutive_events():
    s = syn.make_stream(0, 0, n_events=6, paraphrase=2)
    starts = [e.start for e in s.events]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert all(e.duration > 0 and e.caption for e in s.events)
    frames = s.render(np.array([0.5, s.duration - 0.1]), 32)
    assert frames.shape == (2, 32, 32, 3)
    assert syn.make_stream(0, 0, 6, 2) == s
