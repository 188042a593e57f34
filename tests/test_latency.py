import json

import pytest

from experiments.cli import main
from shared.profiling.latency import ratio_spread, summarize, time_stages
from tests.conftest import PAPER, SMOKE

STAGE_FIELDS = {"mean_ms", "std_ms", "p50_ms", "p90_ms", "p99_ms", "n", "times_ms"}


def check_stats(s: dict, n: int, where: str) -> None:
    """The field's summary of one measurement: every repeat kept, percentiles ordered and inside them."""
    assert set(s) == STAGE_FIELDS, where
    assert s["n"] == n == len(s["times_ms"]), where
    assert min(s["times_ms"]) <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= max(s["times_ms"]), where
    assert s["std_ms"] >= 0 and min(s["times_ms"]) <= s["mean_ms"] <= max(s["times_ms"]), where


def test_stage_timer_reports_every_stage():
    import time

    import torch

    stages = [("a", lambda x: (time.sleep(0.002), x + 1)[1]), ("b", lambda x: (time.sleep(0.004), x * 2)[1])]
    per, totals = time_stages(stages, 1, repeats=5, warmup=1, device=torch.device("cpu"))
    assert [len(v) for v in per.values()] == [5, 5] and len(totals) == 5
    assert summarize(per["b"])["mean_ms"] > summarize(per["a"])["mean_ms"] >= 2
    check_stats(summarize(totals), 5, "totals")


def test_summary_percentiles_and_ratio_spread():
    s = summarize([float(x) for x in range(1, 101)])
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"]) == pytest.approx((50.5, 90.1, 99.01))
    assert s["times_ms"][0] == 1.0 and s["std_ms"] == pytest.approx(29.011, abs=1e-3)
    r = ratio_spread([10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 2.0, 4.0])
    assert r["ratio"] == pytest.approx(25.0 / 2.0) and r["n"] == 4
    assert r["p10"] == pytest.approx(10.0) and r["p90"] == pytest.approx(13.5)  # per repeat: 10, 10, 15, 10


@pytest.mark.slow
def test_latency_json_schema_and_stages_add_up(tmp_path, cache_dir, monkeypatch):
    from tests.test_sample_efficiency import probe_counter

    out = tmp_path / "lat"
    probes = probe_counter(monkeypatch)
    assert main(["latency", "--config", str(SMOKE), "--out", str(out), f"cache_dir={cache_dir}",
                 "latency.repeats=5", "--train-steps", "2"]) == 0
    assert len(probes) == 1  # the command's one decision serves every stage, arm and training step
    r = json.loads((out / "latency.json").read_text())
    assert {"device", "dtype", "frames", "arms", "encoder_ms", "threads", "versions", "warmup", "repeats",
            "batch_sizes", "sweep_repeats", "precision"} <= set(r)
    assert r["frames"] == 4 and r["warmup"] == 1 and r["repeats"] == 5 and r["threads"] >= 1
    assert r["precision"]["resolved"] in ("no", "bf16") and r["batch_sizes"] == [1, 2]
    check_stats(r["encoder_ms"], 5, "encoder")
    assert set(r["arms"]) == {"jepa", "vlm"}
    for name, arm in r["arms"].items():
        stages = arm["stages"]
        assert set(stages) == {"query_embedding", "encoder_predictor", "decoder"}
        for k, s in stages.items():
            check_stats(s, 5, f"{name} {k}")
        total = sum(s["mean_ms"] for s in stages.values())
        # the stages cover the whole inference: their sum is the end-to-end time, up to timer overhead
        assert total == pytest.approx(arm["total_ms"], rel=0.05, abs=0.5), name
        assert stages["encoder_predictor"]["mean_ms"] >= arm["x_encoder_in_stage_ms"]
        # the batch sweep: every stage at every configured batch size (1 is the run above)
        assert set(arm["batch_sweep"]) == {"1", "2"}
        for b, sweep in arm["batch_sweep"].items():
            n = 5 if b == "1" else r["sweep_repeats"]
            assert sweep["repeats"] == n
            for k, s in {**sweep["stages"], "total": sweep["total"]}.items():
                check_stats(s, n, f"{name} batch {b} {k}")
        d = arm["decoding"]
        assert d["tokens"] == r["caption_tokens"] == 4
        check_stats(d["ttft"], 5, f"{name} ttft")
        check_stats(d["tpot"], 5, f"{name} tpot")
        check_stats(d["e2e"], 5, f"{name} end to end")
        assert d["ttft"]["p50_ms"] > 0 and d["e2e"] == arm["total"]  # TTFT from its own 1-token runs
    jepa = r["arms"]["jepa"]  # an embedding arm: its embedding, and one decode of it by the Y-decoder
    check_stats(jepa["embedding"], 5, "jepa embedding")
    assert jepa["decode"] == jepa["stages"]["decoder"] and "embedding" not in r["arms"]["vlm"]
    s = r["streaming"]["jepa"]
    assert s["caption_ms"] > s["embed_ms"] > 0 and s["caption_over_embed"] > 1
    spread = s["caption_over_embed_spread"]
    assert spread["n"] == 5 and spread["p10"] <= spread["p90"] and spread["ratio"] == s["caption_over_embed"]
    assert s["new_frames_per_hop"] == 1  # smoke: 4 frames per 2 s window, a 0.5 s hop
    assert s["embed_ms_overlapping"] > s["embed_ms_cached_frames"]  # plus the new frames' encoding
    t = r["training"]
    assert set(t["arms"]) == {"jepa", "vlm"} and t["peak_flops"]["bfloat16"] > 0 and t["peak_flops"]["float32"] > 0
    # MFU is against the peak of the dtype that ran (auto: bf16 only where the CPU has native bf16)
    assert t["peak_dtype"] == r["dtype"] == {"bf16": "bfloat16", "no": "float32"}[r["precision"]["resolved"]]
    for a in t["arms"].values():
        assert a["samples_per_s"] > 0 and 0 < a["mfu"] < 1 and a["profile_top"] and a["batch"] == 16
        assert 0 < a["matmul_share"] < 1 and ("explanation" in a) == (a["matmul_share"] < 0.5)
    assert (out / "latency.png").is_file()
    md = (out / "latency.md").read_text()
    assert "| jepa | 2 | 3 |" in md and "p50 / p90" in md and "TTFT" in md and "matrix products" in md
    assert "p10-p90" in md


@pytest.fixture
def shallow_paper(monkeypatch) -> list[str]:
    """paper.yaml's architectures at their widths with 2 blocks each: the overrides, and the two stacks
    without a config key (SONAR's encoder and decoder, PE-Core's ViT) cut the same way for this test."""
    import timm

    from jepa_arm import y_encoder

    sonar_class, sonar = y_encoder.ARCHITECTURES["sonar"]
    monkeypatch.setitem(y_encoder.ARCHITECTURES, "sonar", (sonar_class, {**sonar, "encoder_layers": 2,
                                                                         "decoder_layers": 2, "vocab_size": 4096}))
    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: create(*a, **k, depth=2))
    return ["lm.num_layers=2", "jepa.layers=[1,2]", "lm.vocab_size=null", "encoder.image_size=168"]


@pytest.mark.slow
def test_latency_runs_on_paper_architectures_with_random_weights(tmp_path, cache_dir, shallow_paper):
    """paper.yaml's model classes run through every stage, TTFT/TPOT and the batch sweep: PE-Core
    ViT-L/14 (Eva), the Llama of Llama-3.2-1B's widths (hidden 2048, 32 query heads over 8 KV heads of
    64, MLP 8192), SONAR's encoder and decoder (M2M100: d_model 1024, 16 heads, FFN 8192), the 1536-d
    shared heads, and the paper's token shape (144 visual tokens of 1024 channels per frame). Cut
    instead: depth (2 blocks per stack; the JEPA predictor the upper LM layer), the vocabularies (the
    random-weight captions tokenizer's for the LM, 4096 for SONAR) and the encoder's input (168 px:
    a 12 x 12 patch grid, what pool_grid=12 keeps of the paper's 24 x 24). A stack of identical blocks
    or a longer table runs the same code; building and initialising 4B parameters in fp32 was 100 s
    and 17 GB of this process. The full-size parameter counts are asserted on the meta device
    (test_jepa_arm.py::test_paper_parameter_counts_on_meta_device); here, that what ran is exactly
    the architecture the meta device counts for the same settings."""
    from experiments.describe import describe
    from experiments.latency import RANDOM_WEIGHTS
    from shared.config import load_config
    from shared.precision import resolve_runtime

    data = ["data.source=synthetic", "data.synthetic.train_clips=64", "data.synthetic.val_clips=4",
            "data.synthetic.test_clips=4", "data.frames=1", f"cache_dir={cache_dir}",
            # fp32: under CPU autocast every call re-casts the random weights, which is not what is tested
            "train.mixed_precision=no"]
    out = tmp_path / "paper"
    assert main(["latency", "--config", str(PAPER), "--out", str(out), "--random-weights", "--train-steps", "0",
                 "latency.frames=1", "latency.repeats=1", "latency.warmup=0", "latency.caption_tokens=2",
                 "latency.batch_sizes=[1,2]", "latency.sweep_repeats=1", *data, *shallow_paper]) == 0
    r = json.loads((out / "latency.json").read_text())
    cfg = load_config(PAPER, [*RANDOM_WEIGHTS, *data, *shallow_paper])
    counted = describe(cfg, resolve_runtime(cfg))["arms"]
    for name in ("jepa", "vlm"):
        a = r["arms"][name]
        assert a["params"] == counted[name], name
        assert set(a["batch_sweep"]) == {"1", "2"} and a["decoding"]["tpot"]["n"] == 1
        assert a["stages"]["decoder"]["p50_ms"] > 0
    assert r["arms"]["vlm"]["params"]["trainable_params"] > 1.2e8  # two 2048-wide Llama blocks and the projector
    assert "embedding" in r["arms"]["jepa"] and r["frames"] == 1
