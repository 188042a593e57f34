import json

import pytest

from experiments.cli import main
from experiments.compare_runs import compare
from tests.conftest import SMOKE

ROW_FIELDS = {"arm", "seed", "step", "samples_seen", "cider", "top1", "top5", "train_loss", "trainable_params", "wall_s"}


def probe_counter(monkeypatch) -> list:
    """Every call of the hardware probe from now on (shared/precision.py decides once per command)."""
    from shared import precision

    calls, real = [], precision.probe
    monkeypatch.setattr(precision, "probe", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.slow
def test_smoke_run_writes_every_file_and_resumes(tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "se"
    args = ["sample-efficiency", "--config", str(SMOKE), "--out", str(out), f"cache_dir={cache_dir}"]
    probes = probe_counter(monkeypatch)
    assert main(args) == 0
    # one probe for the whole command: encoding, two arms' training, the evaluations and Y-decoder fits
    # at four milestones all receive the runtime it resolved
    assert len(probes) == 1
    for name in ("metrics.jsonl", "baselines.json", "control_audit.json", "control_audit.md", "report.md",
                 "sample_efficiency.png", "sample_efficiency.pdf", "parameters.png", "summary.json", "config.yaml",
                 "versions.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4  # two arms x four milestones
    for r in rows:
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert 0 <= r["top5"] <= 1 and r["top1"] <= r["top5"] and r["cider"] >= 0
    assert {r["arm"] for r in rows} == {"jepa", "vlm"}
    jepa = [r for r in rows if r["arm"] == "jepa"]
    assert "recall1" in jepa[0] and "decoder_ceiling_cider" in jepa[0]
    # synthetic data: captions read back into their meaning, exact and per attribute, in every row
    assert all(0 <= r["meaning"] <= min(r["meaning_colour"], r["meaning_shape"], r["meaning_action"]) <= 1 for r in rows)
    audit = json.loads((out / "control_audit.json").read_text())["0"]
    assert audit["ok"], audit["differences"]
    report = (out / "report.md").read_text()
    assert "| 256 | jepa |" in report and "14.9" in report and "Control audit" in report
    assert "meaning %" in report and "read back by the benchmark's grammar" in report
    assert "true colour and shape with the most frequent training action" in report
    # the synthetic benchmark's own sentences, with the data it ran: 48 test clips of 44 labels, enough for intervals
    assert "synthetic benchmark with few meanings: 192 train / 24 val / 48 test clips, 144 labels" in report
    assert "4 phrasings per label" in report and "benchmark's own references" in report and "Few clips" not in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["eval"]["test"] == {"split": "test", "clips": 48, "labels": 44, "unlabelled": 0,
                                               "captions_per_clip": [3, 3.0, 3]}
    base = json.loads((out / "baselines.json").read_text())
    assert base["human_ceiling_meaning"] == 1.0 and "template_colour_shape_cider" in base
    preds = (out / "predictions").glob("vlm-seed0-*.jsonl")
    assert len(list(preds)) == 4
    # where the time went: phases that add up to the invocation, a row per (arm, seed, milestone), in the report
    timings = json.loads((out / "timings.json").read_text())
    (first,) = timings["invocations"]
    assert {"train jepa seed 0", "evaluate vlm seed 0", "report and figures"} <= set(first["phases"])
    assert 0.8 * first["total_s"] <= sum(first["phases"].values()) <= first["total_s"] + 0.01
    assert len(timings["milestones"]) == 8 and all(
        {"train_s", "load_and_prepare_s", "eval_s"} <= set(r) for r in timings["milestones"].values())
    assert "## Where the time went" in report and "| train jepa seed 0 |" in report

    # re-running the same command redoes nothing: no new rows, same numbers, no arm built for the contract
    import shared.contract

    checked = []
    monkeypatch.setattr(shared.contract, "check_arm", lambda prepared, name, *a: checked.append(name))
    assert main(args) == 0 and checked == []
    again = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert again == rows and len(probes) == 2
    timings = json.loads((out / "timings.json").read_text())
    assert len(timings["invocations"]) == 2 and len(timings["milestones"]) == 8  # the resume's phases added

    # the same command into a fresh folder: the same results, weights and predictions included
    fresh = tmp_path / "se-again"
    assert main([*args[:4], str(fresh), *args[5:]]) == 0
    counts, diffs = compare(out, fresh)
    assert diffs == [] and counts["weights"] == 8 and counts["predictions"] > 0


@pytest.mark.slow
def test_paraphrase_sweep_adds_a_figure(tmp_path, cache_dir):
    out = tmp_path / "sweep"
    args = ["sample-efficiency", "--config", str(SMOKE), "--out", str(out), f"cache_dir={cache_dir}",
            "data.synthetic.paraphrase=0,4", "train.milestones=[64,128]"]
    assert main(args) == 0
    assert (out / "paraphrase_sweep.png").is_file() and (out / "sweep.md").is_file()
    assert (out / "paraphrase=0" / "report.md").is_file() and (out / "paraphrase=4" / "report.md").is_file()
    rows = [json.loads(l) for l in (out / "sweep.jsonl").read_text().splitlines()]
    assert {r["paraphrase"] for r in rows} == {0, 4} and len(rows) == 2 * 2 * 2


@pytest.mark.slow
def test_several_evaluation_sets_are_averaged(tmp_path, cache_dir):
    import numpy as np
    from PIL import Image

    sets = []
    for name, colours in (("reds", [(200, 30, 30), (150, 20, 20)]), ("blues", [(30, 30, 200), (20, 20, 150), (60, 60, 250)]),
                          ("greens", [(30, 200, 30), (20, 150, 20)])):
        lines = []
        for i, c in enumerate(colours):
            Image.fromarray(np.full((40, 40, 3), c, np.uint8)).save(tmp_path / f"{name}{i}.png")
            lines.append(json.dumps({"id": f"{name}{i}", "media": f"{name}{i}.png", "captions": [f"a {name[:-1]} image", "a still frame"],
                                     "label": f"{name[:-1]} {i % 2}", "split": "test"}))
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        sets.append(str(tmp_path / f"{name}.jsonl"))
    out = tmp_path / "se"
    # reds on both tasks, blues classification only, greens captioning only (tagged as section 4.4 tags its sets)
    assert main(["sample-efficiency", "--config", str(SMOKE), "--out", str(out), f"cache_dir={cache_dir}",
                 f"eval.sets=[{sets[0]}, {{manifest: {sets[1]}, task: classify}}, {{manifest: {sets[2]}, task: caption}}]",
                 "train.milestones=[32,64]"]) == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        assert set(r["sets"]) == {"reds", "blues", "greens"}
        assert "cider" not in r["sets"]["blues"] and "top5" not in r["sets"]["greens"]
        assert r["cider"] == np.mean([r["sets"][s]["cider"] for s in ("reds", "greens")])
        assert r["top5"] == np.mean([r["sets"][s]["top5"] for s in ("reds", "blues")]) == 1.0  # <= 5 labels per set
    base = json.loads((out / "baselines.json").read_text())
    assert set(base["sets"]) == {"reds", "blues", "greens"} and base["eval_clips"] == 7
    assert "human_ceiling_cider" not in base["sets"]["blues"] and "chance_top5" not in base["sets"]["greens"]
    assert "Per evaluation set" in (out / "report.md").read_text()
    # free-text captions: no meaning accuracy, no meaning reference points
    assert not any(k.startswith("meaning") for r in rows for k in r)
    assert not any("meaning" in k or k.startswith("template") for b in (base, *base["sets"].values()) for k in b)
