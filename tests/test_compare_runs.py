"""``compare-runs`` finds what differs between two output folders, and only that."""
import json
import shutil

import torch
from safetensors.torch import save_file

from experiments.cli import main
from experiments.compare_runs import compare, differences


def make_output(root):
    rows = [{"arm": a, "seed": 0, "milestone": m, "cider": 0.1 * m, "top5": 0.5, "eval_s": 1.0 * m}
            for a in ("jepa", "vlm") for m in (64, 128)]
    root.mkdir(parents=True)
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "baselines.json").write_text(json.dumps({"chance_top5": 0.05, "eval_clips": 48}))
    (root / "control_audit.json").write_text(json.dumps({"0": {"ok": True, "shared": {"train.lr": 0.001},
                                                                "runs": [str(root / "runs")]}}))
    ckpt = root / "runs" / "jepa" / "seed0" / "checkpoints" / "samples_0000000064"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.arange(4.0)}, str(ckpt / "model.safetensors"))
    return root


def test_identical_folders_compare_equal_whatever_their_timings_and_paths(tmp_path):
    a = make_output(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    rows = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    (b / "metrics.jsonl").write_text("".join(json.dumps(dict(r, eval_s=9.9)) + "\n" for r in reversed(rows)))
    (b / "control_audit.json").write_text((a / "control_audit.json").read_text().replace("/a/", "/b/"))
    counts, diffs = compare(a, b)
    assert diffs == [] and counts["metrics.jsonl"] == 4 and counts["weights"] == 1
    assert main(["compare-runs", str(a), str(b)]) == 0


def test_a_changed_metric_weight_missing_row_or_file_is_reported(tmp_path, capsys):
    a = make_output(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    lines = (b / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"top5": 0.5', '"top5": 0.51')
    (b / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # and the last row dropped
    save_file({"w": torch.tensor([0.0, 1.0, 2.0, 3.001])}, str(next(b.rglob("model.safetensors"))))
    (b / "baselines.json").unlink()
    _, diffs = compare(a, b)
    assert any("metrics.jsonl" in d and "top5: 0.5 vs 0.51" in d for d in diffs)
    assert any("metrics.jsonl" in d and "milestone: 128" in d and "only in a" in d for d in diffs)
    assert any("model.safetensors[w]: max |a-b| = 0.001" in d for d in diffs)
    assert "baselines.json: only in a" in diffs
    assert compare(a, b, atol=0.02)[1] == ["baselines.json: only in a", *[d for d in diffs if "only in a" in d
                                                                           and "baselines" not in d]]
    assert main(["compare-runs", str(a), str(b)]) == 1
    assert "4 differences" in capsys.readouterr().out


def test_ignored_keys_are_left_out_everywhere():
    a = {"shared": {"data.synthetic.fps": 8.0, "train.lr": 1e-3}, "wall_s": 3.0}
    b = {"shared": {"train.lr": 1e-3}, "wall_s": 4.0}
    assert differences(a, b, 0.0, set()) == [".shared.data.synthetic.fps: only in a"]
    assert differences(a, b, 0.0, {"data.synthetic.fps"}) == []
    assert differences({"x": float("nan")}, {"x": float("nan")}, 0.0, set()) == []
