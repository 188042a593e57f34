"""The fairness controls: the Y-decoder's budget, the target space, the classification candidates."""
import dataclasses

import numpy as np
import pytest
import torch


def jepa_at(prepared, samples: int, cache, *overrides):
    from shared.config import load_config
    from tests.conftest import SMOKE

    cfg = load_config(SMOKE, [f"cache_dir={cache}", *overrides])
    prep = dataclasses.replace(prepared, cfg=cfg)
    arm = prep.seeded_arm("jepa", "cpu").eval()
    arm.set_progress(samples)
    arm.prepare_evaluation()
    return prep, arm


def test_the_decoder_learns_only_the_captions_seen_by_the_checkpoint(smoke_prepared, tmp_path):
    from jepa_arm.seen_decoder import captions_digest

    prep, first = jepa_at(smoke_prepared, 64, tmp_path / "a")
    _, second = jepa_at(smoke_prepared, 160, tmp_path / "a")  # continues the 64-sample fit
    _, scratch = jepa_at(smoke_prepared, 160, tmp_path / "b")  # fits 160 samples from nothing
    assert first.decoder_meta["samples"] == 64 and second.decoder_meta["resumed_from"] == 64
    for arm, n in ((first, 64), (second, 160)):  # exactly positions [0, n) of the training order, in order
        assert arm.decoder_meta["captions_sha256"] == captions_digest(prep.seen_captions(0, n)).hex()
    assert captions_digest(prep.seen_captions(0, 161)).hex() != second.decoder_meta["captions_sha256"]
    a, b = second.decoder.state_dict(), scratch.decoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # continuing == fitting at once
    assert second.evaluation_info() == {"decoder_params": second.decoder_meta["decoder_params"],
                                        "decoder_budget": "seen", "decoder_samples": 160}


def test_the_decoder_is_fitted_anew_when_the_target_space_changes(smoke_prepared, tmp_path):
    prep, arm = jepa_at(smoke_prepared, 64, tmp_path, "jepa.shared_dim=16")  # a trainable head into the space
    before = arm.decoder_meta["captions_sha256"], arm._decoder_key
    with torch.no_grad():
        arm.y_head.weight.add_(0.1)  # as training would move it
    arm.set_progress(128)
    arm.prepare_evaluation()
    assert arm._decoder_key[0] != before[1][0]  # another space
    assert arm.decoder_meta["resumed_from"] == 0 and arm.decoder_meta["samples"] == 128


def test_corpus_budget_is_the_ablation(smoke_prepared, tmp_path):
    _, arm = jepa_at(smoke_prepared, 64, tmp_path, "jepa.y_decoder.budget=corpus")
    assert arm.evaluation_info()["decoder_budget"] == "corpus"
    assert arm.evaluation_info()["decoder_samples"] == 40 * 32  # smoke: 40 steps x 32 before any checkpoint


def test_phrasings_canonical_first_same_forms_for_every_label():
    from shared.data import synthetic
    from shared.evaluation.evaluate import EvalSet

    p = synthetic.phrasings(5, 4, level=4)
    assert p[0] == synthetic.class_texts()[5] and len(set(p)) == 4
    assert synthetic.phrasings(5, 4, level=0) == p[:1]  # level 0 has one phrasing per meaning
    ev = EvalSet("x", None, [["a0", "a1"], ["b0"], ["c0", "c1", "c2"]], 3)
    assert ev.canonical_only().candidates == ["a0", "b0", "c0"]
    # phrasing j of every label is the same sentence form (template and synonym positions)
    forms = synthetic.forms(4, 2)
    assert len(set(forms)) == 4 and forms[0] == (0, 0, 0, 0)
    for j, form in enumerate(forms):
        for label in range(synthetic.NUM_CLASSES):
            assert synthetic.phrasings(label, 4, 2)[j] == synthetic.phrase(synthetic.Meaning.from_label(label), form)


def test_a_template_cannot_make_a_label_win():
    """Scores = an effect of the sentence form (any size, any sign) + the label's own evidence: the
    label ranking is the evidence's, whatever the form effects; a maximum over labels worded in
    different forms (the old scoring) lets the form decide."""
    from shared.data import synthetic
    from shared.evaluation.evaluate import EvalSet

    k, labels = 4, synthetic.NUM_CLASSES
    ev = EvalSet("x", None, [synthetic.phrasings(i, k, 2) for i in range(labels)], 1)
    rng = np.random.default_rng(0)
    evidence = rng.normal(size=labels)
    for _ in range(20):
        form_effect = rng.normal(scale=10.0, size=k)
        scores = (evidence[:, None] + form_effect[None, :]).reshape(1, -1)
        mean, _ = ev.per_label(scores)
        assert mean.argmax() == evidence.argmax()
        assert np.allclose(mean[0] - mean[0].mean(), evidence - evidence.mean())
    # the old draw: each label its own forms from its own stream, best of them
    drawn = rng.integers(0, 6, size=(labels, k))
    form_effect = rng.normal(scale=10.0, size=6)
    old = (evidence[:, None] + form_effect[drawn]).max(axis=1)
    assert old.argmax() != evidence.argmax()


def test_a_random_target_space_has_no_pretrained_weights(smoke_prepared):
    from jepa_arm.config import YEncoderConfig
    from jepa_arm.y_encoder import YEncoder

    pretrained = YEncoder(YEncoderConfig())
    random = YEncoder(YEncoderConfig(weights="random"), tokenizer=smoke_prepared.tokenizer)
    assert random.fingerprint() != pretrained.fingerprint() and random.tokenizer is smoke_prepared.tokenizer
    assert random(["a red circle moves left"]).shape == (1, pretrained.dim)


def test_controls_are_named_in_the_audit(smoke_prepared):
    from shared.registry import arm_class

    lines = arm_class("jepa").controls({"y_encoder": {"kind": "minilm", "weights": "random"},
                                         "y_decoder": {"kind": "trained", "budget": "seen"}})
    assert "no text knowledge" in lines[0] and "saw up to it" in lines[1]
    captions = arm_class("jepa").controls({"y_encoder": {"weights": "captions"}})
    assert "pretrained on the training captions alone" in captions[0]
    assert arm_class("vlm").controls({}) == []


@pytest.mark.slow
def test_the_report_names_every_control(tmp_path, cache_dir):
    from experiments.cli import main
    from tests.conftest import SMOKE

    out = tmp_path / "run"
    assert main(["sample-efficiency", "-c", str(SMOKE), "-o", str(out), f"cache_dir={cache_dir}",
                 "jepa.y_encoder.weights=random", "lm.weights=null", "train.milestones=[64,128]"]) == 0
    report = (out / "report.md").read_text()
    assert "## Controls" in report and "no text knowledge" in report and "top-5 % phrasings" in report
    audit = (out / "control_audit.md").read_text()
    assert "What each arm gets besides its prediction target" in audit
