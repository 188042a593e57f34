import json

import numpy as np
import torch
import pytest

from experiments.cli import main
from shared.evaluation.segmentation import adaptive_segments, decode_points, nearest_decoded, uniform_segments
from shared.data.streams import window_times
from tests.conftest import SMOKE


def planted_stream(lengths, dim=8, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(lengths), dim))
    return np.concatenate([m + noise * rng.normal(size=(n, dim)) for m, n in zip(means, lengths)])


def test_adaptive_segments_find_planted_boundaries_and_stay_contiguous():
    emb = planted_stream([5, 9, 3, 7])
    assert adaptive_segments(emb, 4) == [(0, 5), (5, 14), (14, 17), (17, 24)]
    assert uniform_segments(24, 4) == [(0, 6), (6, 12), (12, 18), (18, 24)]
    for n in (1, 2, 7, 24, 30):  # any count: contiguous, covering, never more segments than windows
        segs = adaptive_segments(emb, n)
        assert segs[0][0] == 0 and segs[-1][1] == 24 and len(segs) == min(n, 24)
        assert all(a < b and b == c for (a, b), (c, _) in zip(segs, segs[1:] + [(24, 24)]))


def test_decode_points_exact_and_mean():
    emb = np.arange(12, dtype=float).reshape(6, 2)
    times = np.arange(6) * 0.5
    t, e = decode_points([(0, 2), (2, 6)], emb, times, "exact")
    assert t.tolist() == [0.0, 1.5] and e.tolist() == [[0, 1], [6, 7]]  # middle windows 0 and 3
    _, e = decode_points([(0, 2), (2, 6)], emb, times, "mean")
    assert e.tolist() == [[1, 2], [7, 8]]
    with pytest.raises(ValueError, match="pooling"):
        decode_points([(0, 6)], emb, times, "max")


def test_annotations_match_the_nearest_decode():
    assert nearest_decoded(np.array([1.0, 5.0, 9.0]), np.array([0.0, 2.9, 3.1, 8.0, 20.0])).tolist() == [0, 0, 1, 2, 2]


def test_windows_cover_the_stream_inside_the_video():
    centres, times = window_times(10.0, window_s=2.0, hop_s=0.5, frames=4)
    assert len(centres) == 20 and times.shape == (20, 4)
    assert times.min() >= 0 and times.max() < 10.0
    assert np.allclose(times[10], centres[10] + np.array([-0.75, -0.25, 0.25, 0.75]))


@pytest.mark.slow
def test_selective_decoding_run_writes_results_and_resumes(tmp_path, cache_dir, capsys):
    out = tmp_path / "sel"
    args = ["selective-decoding", "-c", str(SMOKE), "-o", str(out), f"cache_dir={cache_dir}", "train.milestones=[64]",
            "selective.frequencies_hz=[1,0.25]"]
    assert main(args) == 0  # no --checkpoint: trains the JEPA arm into OUT/runs/jepa/seed0 first
    run = out / "runs" / "jepa" / "seed0"
    assert (run / "checkpoints" / "samples_0000000064" / "model.safetensors").is_file()
    rows = [json.loads(l) for l in (out / "selective_decoding.jsonl").read_text().splitlines()]
    assert {(r["strategy"], r["pooling"], r["target_hz"]) for r in rows} == {
        (s, p, hz) for s in ("uniform", "adaptive") for p in ("exact", "mean") for hz in (1.0, 0.25)}
    for r in rows:
        assert r["annotations"] == 4 and r["cider"] >= 0
        assert r["decodes"] == (16 if r["target_hz"] == 1.0 else 4)  # the smoke stream lasts 16.x s
    meta = json.loads((out / "selective_meta.json").read_text())
    assert meta["samples_seen"] == 64 and meta["windows"] == 33 and "decoder_ceiling_cider" in meta
    for name in ("selective_report.md", "selective_decoding.png", "selective_decoding.pdf", "config.yaml"):
        assert (out / name).is_file(), name
    assert "| 0.25 | 4 |" in (out / "selective_report.md").read_text()

    (out / "selective_report.md").unlink()
    assert main(["report", "--out", str(out)]) == 0  # redrawn from the files alone
    assert "| 0.25 | 4 |" in (out / "selective_report.md").read_text()

    assert main(args) == 0  # resumes: nothing recomputed, nothing appended
    assert [json.loads(l) for l in (out / "selective_decoding.jsonl").read_text().splitlines()] == rows
    # the same --out under another setup is refused, naming what differs
    capsys.readouterr()
    assert main([*args, "selective.hop_s=0.25"]) == 2
    assert "another setup (differs at hop_s)" in capsys.readouterr().err
    # an explicit checkpoint (a run folder: its last milestone) gives the same results in another --out
    other = tmp_path / "from-checkpoint"
    assert main([*args[:4], str(other), *args[5:], "--checkpoint", str(run)]) == 0
    assert [json.loads(l)["cider"] for l in (other / "selective_decoding.jsonl").read_text().splitlines()] == \
        [r["cider"] for r in rows]
    # several checkpoints: one folder each, and the spread of the decodes saved across them
    several = tmp_path / "several"
    assert main([*args[:4], str(several), *args[5:], "--checkpoint", str(run), "--checkpoint", str(run)]) == 0
    summary = (several / "selective_summary.md").read_text()
    assert summary.count("| 64 |") == 4  # two checkpoints x two poolings
    assert sorted(p.name for p in several.iterdir() if p.is_dir())[0].startswith("0-")
    # a checkpoint trained under another config does not fit this one: refused with the differing key
    capsys.readouterr()
    assert main([*args[:4], str(tmp_path / "other"), *args[5:], "--checkpoint", str(run), "lm.hidden_size=32"]) == 2
    assert "lm.hidden_size" in capsys.readouterr().err


def test_window_features_gathered_from_distinct_frames_equal_per_window_encoding(tmp_path, smoke_cfg):
    from shared.data.streams import load_streams
    from shared.features.encoder import FrozenEncoder
    from shared.features.stream_windows import stream_window_features

    # fp32: what is tested is the gathering; bf16 kernels (oneDNN on AMX) round differently with the
    # number of frames in a batch (up to 0.03 here), which would hide nothing and fail bitwise equality
    cfg = smoke_cfg(f"cache_dir={tmp_path}", "encoder.dtype=float32")
    stream = load_streams(cfg)[0]
    encoder = FrozenEncoder(cfg.encoder)
    centres, feats = stream_window_features(stream, encoder, cfg)
    _, times = window_times(stream.duration, cfg.selective.window_s, cfg.selective.hop_s, cfg.data.frames)
    size = cfg.encoder.image_size
    direct = encoder.encode_clips(stream.read_frames(times.reshape(-1), size).reshape(*times.shape, size, size, 3))
    assert feats.shape == direct.shape and len(centres) == len(feats)
    assert torch.equal(feats, direct)
    again = stream_window_features(stream, encoder, cfg)[1]  # from the cache file
    assert torch.equal(again, feats) and len(list((tmp_path / "features" / "streams").glob("*.safetensors"))) == 1


def test_matched_rate_is_interpolated_between_grid_points():
    from experiments.selective_report import matched_ratio

    rows = [{"strategy": "uniform", "pooling": "mean", "rate_hz": 1.0, "cider": 0.5},
            {"strategy": "uniform", "pooling": "mean", "rate_hz": 0.5, "cider": 0.3}]
    rows += [{"strategy": "adaptive", "pooling": "mean", "rate_hz": hz, "cider": c}
             for hz, c in ((0.1, 0.2), (0.2, 0.4), (0.4, 0.6), (1.0, 0.7))]
    m = matched_ratio(rows, "mean", 1.0)
    # 0.5 lies halfway between 0.4 (at 0.2 Hz) and 0.6 (at 0.4 Hz): halfway in log-rate, 0.2 * sqrt(2) Hz
    assert m["bound"] == "interpolated" and m["adaptive_hz"] == pytest.approx(0.2 * 2 ** 0.5)
    assert m["ratio"] == pytest.approx(1 / (0.2 * 2 ** 0.5))
    assert matched_ratio(rows, "mean", 0.5)["bound"] == "interpolated"  # 0.3: between 0.1 and 0.2 Hz
    easy = [dict(r, cider=r["cider"] + 1) if r["strategy"] == "adaptive" else r for r in rows]
    assert matched_ratio(easy, "mean", 1.0) == {"uniform_hz": 1.0, "adaptive_hz": 0.1, "ratio": 10.0, "bound": "at_least"}
    hard = [dict(r, cider=0.0) if r["strategy"] == "adaptive" else r for r in rows]
    assert matched_ratio(hard, "mean", 1.0) is None
