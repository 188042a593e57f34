import json

import pytest

from experiments.cli import main
from shared.evaluation.latency import summarize, time_stages
from tests.conftest import PAPER, SMOKE

STAGE_FIELDS = {"mean_ms", "p50_ms", "p95_ms", "n"}


def test_stage_timer_reports_every_stage():
    import time

    import torch

    stages = [("a", lambda x: (time.sleep(0.002), x + 1)[1]), ("b", lambda x: (time.sleep(0.004), x * 2)[1])]
    per, totals = time_stages(stages, 1, repeats=5, warmup=1, device=torch.device("cpu"))
    assert [len(v) for v in per.values()] == [5, 5] and len(totals) == 5
    assert summarize(per["b"])["mean_ms"] > summarize(per["a"])["mean_ms"] >= 2
    assert set(summarize(totals)) == STAGE_FIELDS


@pytest.mark.slow
def test_latency_json_schema_and_stages_add_up(tmp_path, cache_dir):
    out = tmp_path / "lat"
    assert main(["latency", "--config", str(SMOKE), "--out", str(out), f"cache_dir={cache_dir}",
                 "latency.repeats=5", "--train-steps", "2"]) == 0
    r = json.loads((out / "latency.json").read_text())
    assert {"device", "dtype", "frames", "arms", "encoder_ms", "threads", "versions"} <= set(r)
    assert r["frames"] == 4 and set(r["encoder_ms"]) == STAGE_FIELDS
    assert set(r["arms"]) == {"jepa", "vlm"}
    for name, arm in r["arms"].items():
        stages = arm["stages"]
        assert set(stages) == {"query_embedding", "encoder_predictor", "decoder"}
        for s in stages.values():
            assert set(s) >= STAGE_FIELDS and s["n"] == 5 and 0 < s["mean_ms"] <= s["p95_ms"] * 1.0001 + 1e-9
        total = sum(s["mean_ms"] for s in stages.values())
        # the stages cover the whole inference: their sum is the end-to-end time, up to timer overhead
        assert total == pytest.approx(arm["total_ms"], rel=0.05, abs=0.5), name
        assert stages["encoder_predictor"]["mean_ms"] >= arm["x_encoder_in_stage_ms"]
    s = r["streaming"]["jepa"]
    assert s["caption_ms"] > s["embed_ms"] > 0 and s["caption_over_embed"] > 1
    assert s["new_frames_per_hop"] == 1  # smoke: 4 frames per 2 s window, a 0.5 s hop
    assert s["embed_ms_overlapping"] > s["embed_ms_cached_frames"]  # plus the new frames' encoding
    t = r["training"]
    assert set(t["arms"]) == {"jepa", "vlm"} and t["peak_flops"]["bfloat16"] > 0 and t["peak_flops"]["float32"] > 0
    # MFU is against the peak of the dtype that ran (auto: bf16 only where the CPU has native bf16)
    assert t["peak_dtype"] == r["dtype"] == {"bf16": "bfloat16", "no": "float32"}[r["precision"]["resolved"]]
    for a in t["arms"].values():
        assert a["samples_per_s"] > 0 and 0 < a["mfu"] < 1 and a["profile_top"]
    assert (out / "latency.png").is_file() and (out / "latency.md").is_file()


@pytest.mark.slow
def test_latency_runs_on_paper_architectures_with_random_weights(tmp_path, cache_dir):
    out = tmp_path / "paper"
    assert main(["latency", "--config", str(PAPER), "--out", str(out), "--random-weights", "--train-steps", "0",
                 f"cache_dir={cache_dir}", "data.source=synthetic", "data.synthetic.train_clips=64",
                 "data.synthetic.val_clips=4", "data.synthetic.test_clips=4", "data.frames=1", "latency.frames=1",
                 "latency.repeats=1", "latency.warmup=0", "latency.caption_tokens=2",
                 # fp32: under CPU autocast every call re-casts 1.7B random weights, which is not what is tested
                 "train.mixed_precision=no"]) == 0
    r = json.loads((out / "latency.json").read_text())
    assert r["arms"]["jepa"]["params"]["trainable_params"] > 4e8
    assert r["arms"]["vlm"]["params"]["trainable_params"] > 1.2e9
