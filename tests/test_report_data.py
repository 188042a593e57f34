"""The report and the model cards describe the data that ran: a manifest by its path, clips per
split, labels and captions per clip, with none of the synthetic benchmark's sentences; a warning
where an evaluation rests on fewer label clusters than an interval can carry."""
import json

import numpy as np
import pytest
from PIL import Image

from experiments.cli import main
from shared.config import to_dict
from shared.data.report import DataSections, evaluation_card_lines, few_clips_warning, metric_clips
from shared.data.report_sources import card_lines
from shared.evaluation.intervals import MIN_CLUSTERS
from shared.report_sections import RunFiles
from tests.conftest import SMOKE

# sentences only the synthetic benchmark may bring (shared/data/synthetic_report.py)
SYNTHETIC = ("synthetic benchmark", "few meanings", "benchmark's grammar", "benchmark's own references",
             "phrasings per label", "template saying", "colour × shape × action")


def data(labels: int, unlabelled: int = 0, clips: int | None = None) -> dict:
    clips = clips or labels + unlabelled
    return {"source": "manifest", "manifest": "m.jsonl", "labels": labels,
            "splits": {"train": {"clips": 100, "labels": labels, "unlabelled": 0, "captions_per_clip": [1, 1.5, 2]}},
            "eval": {"test": {"split": "test", "clips": clips, "labels": labels, "unlabelled": unlabelled}}}


def test_the_few_clips_warning_counts_the_clusters_the_bootstrap_resamples():
    assert few_clips_warning(data(MIN_CLUSTERS - 1, clips=500))  # 500 clips of 29 labels: 29 clusters
    assert few_clips_warning(data(MIN_CLUSTERS)) is None
    assert few_clips_warning(data(MIN_CLUSTERS - 5, unlabelled=5)) is None  # an unlabelled clip is a cluster of one
    assert few_clips_warning({}) is None  # a run from before the data record: nothing to say
    assert "29 label clusters" in few_clips_warning(data(29, clips=500)) and "500 clips" in few_clips_warning(data(29, clips=500))
    run = RunFiles({}, [], {}, {"data": data(3)}, ["a"], [0], [1])
    assert DataSections().warnings(run) and not DataSections().warnings(RunFiles({}, [], {}, {"data": data(40)}, ["a"], [0], [1]))
    assert metric_clips("top5", data(3, unlabelled=2)) == 3 and metric_clips("cider", data(3, unlabelled=2)) == 5


def test_a_card_names_every_evaluation_set_in_one_sentence():
    two = data(40)
    two["eval"]["val"] = {"split": "val", "clips": 12, "labels": 6, "unlabelled": 0}
    (line,) = evaluation_card_lines(two)
    assert line.startswith("The metrics below are measured on evaluation sets `test` (40 clips, 40 labels, the `test` "
                           "split), `val` (12 clips, 6 labels, the `val` split), averaged over the sets;")
    assert evaluation_card_lines({}) == []


def still(path, colour):
    Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(path)


@pytest.fixture(scope="module")
def manifest_comparison(tmp_path_factory, cache_dir):
    """A smoke comparison on a 16-clip manifest of still images: 4 labels, 12 train, 2 val, 2 test clips."""
    root = tmp_path_factory.mktemp("manifest-report")
    colours = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 200, 30), "grey": (120, 120, 120)}
    lines = []
    for i in range(16):
        name = list(colours)[i % 4]
        still(root / f"c{i}.png", colours[name])
        lines.append({"id": f"c{i}", "media": f"c{i}.png", "label": f"{name} frame",
                      "captions": [f"a {name} frame", f"a still {name} picture"][: 1 + i % 2],
                      "split": "train" if i < 12 else "val" if i < 14 else "test"})
    manifest = root / "tiny.jsonl"
    manifest.write_text("".join(json.dumps(l) + "\n" for l in lines))
    out = root / "se"
    assert main(["sample-efficiency", "-c", str(SMOKE), "-o", str(out), f"cache_dir={cache_dir}", "data.source=manifest",
                 f"data.manifest.path={manifest}", "train.milestones=[32]", "data.workers=0"]) == 0
    return out, manifest


@pytest.mark.slow
def test_a_manifest_comparison_reports_its_own_data(manifest_comparison, tmp_path):
    out, manifest = manifest_comparison
    report = (out / "report.md").read_text()
    assert f"manifest `{manifest}`: 12 train / 2 val / 2 test clips; 4 labels; 1–2 captions per clip (mean 1.5)" in report
    assert "Few clips" in report and "2 clips in 2 label clusters" in report
    assert not [s for s in SYNTHETIC if s in report], [s for s in SYNTHETIC if s in report]
    assert "no top-k over phrasings" in report and "top-5 % phrasings" not in report
    # the model card names the data and what each metric rests on
    assert main(["export", "--checkpoint", str(out / "runs" / "vlm" / "seed0"), "--out", str(tmp_path / "vlm")]) == 0
    card = (tmp_path / "vlm" / "README.md").read_text()
    assert f"Manifest `{manifest}`: 12 train / 2 val / 2 test clips, 4 labels" in card
    assert "measured on evaluation set `test` (2 clips, 2 labels, the `test` split)" in card and "Few clips" in card
    assert "| CIDEr |" in card and card.count(" | 2 |") >= 2  # CIDEr and top-5 each on 2 clips
    assert not [s for s in SYNTHETIC if s in card]


def test_a_synthetic_card_describes_the_benchmark_from_its_config(smoke_cfg):
    cfg = smoke_cfg()
    lines = card_lines({}, to_dict(cfg))  # an export outside a comparison folder: the config alone
    assert lines == ["The synthetic benchmark with few meanings: 192 train / 24 val / 48 test clips, 144 labels "
                     "(colour × shape × action), 3 captions per clip worded by its grammar at paraphrase level 2 "
                     f"(seed {cfg.data.synthetic.seed})."]
