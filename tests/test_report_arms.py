"""report.md for N arms: every arm against one reference arm (report.reference, default the first of
`arms`), each difference reference − arm with its interval, who leads per metric and milestone, and
sentences that name the arms of the run, not jepa and vlm."""
import json

import numpy as np
import pytest
import yaml

from experiments.cli import main
from experiments.report import write_outputs
from shared.config import ConfigError, load_config, to_dict
from tests.conftest import SMOKE

MILESTONES = (32, 64)
LABELS = 40  # enough label clusters for an interval (shared/evaluation/intervals.py)
# per-clip CIDEr offsets: alpha far above beta, gamma level with alpha
SHIFT = {"alpha": 0.5, "beta": 0.0, "gamma": 0.5}


def fake_run(out, arms=("alpha", "beta", "gamma"), seeds=(0, 1), **report):
    """A comparison folder as sample-efficiency leaves it, without training: config.yaml, metrics.jsonl,
    per-clip predictions and timings; gamma has a Y-decoder, alpha and beta do not."""
    cfg = to_dict(load_config(SMOKE))
    cfg.update(arms=list(arms), seeds=list(seeds), report=report)
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    (out / "predictions").mkdir()
    rng = np.random.default_rng(0)
    rows, timings = [], {}
    for arm in arms:
        for seed in seeds:
            for ms in MILESTONES:
                clips = [{"id": f"{l}-{c}", "label": l, "rank": int(rng.integers(0, 10)),
                          "cider": SHIFT[arm] + rng.normal(0, 0.1)} for l in range(LABELS) for c in range(2)]
                (out / "predictions" / f"{arm}-seed{seed}-{ms:010d}.jsonl").write_text(
                    "".join(json.dumps(c) + "\n" for c in clips))
                rows.append({"arm": arm, "seed": seed, "milestone": ms, "samples_seen": ms, "step": ms // 8,
                             "cider": float(np.mean([c["cider"] for c in clips])),
                             "top1": float(np.mean([c["rank"] < 1 for c in clips])),
                             "top5": float(np.mean([c["rank"] < 5 for c in clips])), "train_loss": 1.0,
                             "trainable_params": {"alpha": 100, "beta": 400, "gamma": 200}[arm], "wall_s": 1.0,
                             **({"decoder_samples": ms, "decoder_params": 50} if arm == "gamma" else {})})
                timings[f"{arm}-{seed}-{ms}"] = {"arm": arm, "seed": seed, "milestone": ms, "train_s": 1.0,
                                                 "load_and_prepare_s": 1.0, "eval_s": 1.0}
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "timings.json").write_text(json.dumps({"invocations": [], "milestones": timings}))
    return out


def section(report: str, title: str) -> str:
    return report.split(title, 1)[1].split("\n## ", 1)[0]


def test_every_arm_gets_its_interval_and_who_leads_against_the_reference(tmp_path):
    out = fake_run(tmp_path / "se")
    write_outputs(out)
    report = (out / "report.md").read_text()
    diffs = json.loads((out / "differences.json").read_text())
    # the first of `arms` is the reference: alpha − beta and alpha − gamma at every milestone, beta − gamma nowhere
    pairs = {(d["a"], d["b"], d["milestone"]) for d in diffs if d["metric"] == "cider"}
    assert pairs == {("alpha", b, ms) for b in ("beta", "gamma") for ms in MILESTONES}
    cider = {(d["b"], d["milestone"]): d for d in diffs if d["metric"] == "cider"}
    assert cider[("beta", 64)]["lo"] > 0 and cider[("gamma", 64)]["lo"] < 0 < cider[("gamma", 64)]["hi"]

    assert "- Arms: alpha (reference), beta, gamma; all 3 on the same data" in report
    table = section(report, "### Arm difference with 95% intervals")
    assert "beta, gamma against the reference arm **alpha** (`report.reference`): alpha − arm" in table
    for arm, reading in (("beta", "alpha leads"), ("gamma", "tie")):
        row = next(l for l in table.splitlines() if l.startswith("| 64 ") and "| CIDEr " in l and f"| {arm} " in l)
        assert reading in row and row.count("[") == 1  # with its interval
    leads = section(report, "Who leads, per milestone")
    assert "| CIDEr | alpha vs beta | alpha leads | alpha leads |" in leads
    assert "| CIDEr | alpha vs gamma | tie | tie |" in leads
    assert "alpha vs beta" in leads and "top-5 %" in leads  # every headline metric the predictions hold
    # matched compute: the reference against each arm and each arm against it
    matched = json.loads((out / "matched_compute.json").read_text())
    assert {(m["a"], m["b"]) for m in matched} <= {("alpha", "beta"), ("beta", "alpha"), ("alpha", "gamma"), ("gamma", "alpha")}

    # wording: the arms of the run, not the paper's two
    assert "Trainable ratio alpha/beta: 0.25, alpha/gamma: 0.50" in report
    assert "Y-decoder fit of gamma on the captions each saw" in report
    generic = report.split("## The paper's numbers")[0].split("\n", 1)[1]  # the title keeps the paper's question
    assert not [w for w in ("jepa", "vlm", "JEPA arm", "both arms") if w in generic], generic


def test_report_reference_chooses_another_arm_and_a_redraw_can_too(tmp_path):
    out = fake_run(tmp_path / "se", reference="gamma")
    write_outputs(out)
    report = (out / "report.md").read_text()
    assert "- Arms: alpha, beta, gamma (reference); all 3" in report and "alpha, beta against the reference arm **gamma**" in report
    pairs = {(d["a"], d["b"]) for d in json.loads((out / "differences.json").read_text())}
    assert pairs == {("gamma", "alpha"), ("gamma", "beta")}
    assert "| CIDEr | gamma vs beta | gamma leads | gamma leads |" in section(report, "Who leads")
    assert "Trainable ratio gamma/alpha: 2.00, gamma/beta: 0.50" in report

    # `report --out DIR report.reference=ARM` redraws against another arm without retraining
    assert main(["report", "--out", str(out), "report.reference=beta"]) == 0
    report = (out / "report.md").read_text()
    assert "beta (reference)" in report and "| CIDEr | beta vs alpha | alpha leads | alpha leads |" in report


def test_two_arms_read_as_today_reference_minus_other(tmp_path):
    out = fake_run(tmp_path / "se", arms=("alpha", "beta"), seeds=(0,))
    write_outputs(out)
    report = (out / "report.md").read_text()
    table = section(report, "### Arm difference with 95% intervals")
    assert "| alpha − beta |" in table and "| arm " not in table  # one other arm: named in the header
    assert "beta against the reference arm **alpha** (`report.reference`): alpha − beta, positive where alpha" in table
    assert "- Arms: alpha (reference), beta; both on the same data, steps and evaluation; beta compared with" in report
    assert "one seed: a bootstrap" in table and "Trainable ratio alpha/beta: 0.25 " in report


def test_a_reference_outside_the_arms_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"report.reference: 'nope' is not one of this run's arms; arms: \['jepa', 'vlm'\]"):
        load_config(SMOKE, ["report.reference=nope"])
    assert load_config(SMOKE, ["report.reference=vlm", "arms=jepa,vlm"]).report.reference == "vlm"
    out = fake_run(tmp_path / "se")
    assert main(["report", "--out", str(out), "report.reference=delta"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: report.reference: 'delta' is not one of this run's arms; arms: ['alpha', 'beta', 'gamma']"
    assert main(["report", "--out", str(out), "train.lr=1"]) == 2
    assert "a redraw takes only report.reference=ARM" in capsys.readouterr().err


# An embedding arm as docs/adding_an_arm.md ("An embedding arm") writes one: its section and its predictor,
# the text side from the base; no hook copied from the JEPA arm.
REGRESS = '''
from dataclasses import dataclass

from torch import nn

from shared.arm import register_arm
from shared.embedding_arm import EmbeddingArm, EmbeddingArmConfig


@dataclass
class RegressConfig(EmbeddingArmConfig):
    hidden_size: int = 128


@register_arm("outside", RegressConfig)
class RegressArm(EmbeddingArm):
    def build_predictor(self, ctx, out_dim):
        width = self.arm_cfg.hidden_size
        return nn.Sequential(nn.Linear(ctx.visual_dim, width, device=ctx.device), nn.GELU(),
                             nn.Linear(width, out_dim, device=ctx.device))

    def predict(self, visual, queries):
        return self.predictor(visual.mean(dim=1))
'''


@pytest.mark.slow
def test_an_embedding_arm_from_outside_the_repo_is_compared_with_the_reference(tmp_path, cache_dir):
    (tmp_path / "elsewhere").mkdir()
    # own module and arm names: the guide test may run in this process and registers "regress" from regress_arm.py
    arm_file = tmp_path / "elsewhere" / "regress_outside_arm.py"
    arm_file.write_text(REGRESS)
    out = tmp_path / "se"
    assert main(["sample-efficiency", "-c", str(SMOKE), "-o", str(out), f"cache_dir={cache_dir}",
                 f"plugins=[{arm_file}]", "arms=jepa,vlm,outside", "outside.hidden_size=16",
                 "train.milestones=[32]"]) == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    (row,) = [r for r in rows if r["arm"] == "outside"]
    assert row["decoder_samples"] == 32 and "recall1" in row  # the text side came with the base
    report = (out / "report.md").read_text()
    assert "| 32 | outside |" in report  # its row of the results table
    table = section(report, "### Arm difference with 95% intervals")
    assert "vlm, outside against the reference arm **jepa**" in table
    assert [l for l in table.splitlines() if l.startswith("| 32 | CIDEr | outside | ") and l.count("[") == 1]
    assert "| CIDEr | jepa vs outside |" in report and "Trainable ratio jepa/vlm" in report and "jepa/outside" in report
    audit_ = json.loads((out / "control_audit.json").read_text())["0"]
    assert audit_["ok"], audit_["differences"]
    assert audit_["arm_keys"]["outside"]["outside.hidden_size"] == 16  # its own key, overridden
    # the decoder is the JEPA arm's: the same keys and values, and no text-side difference named
    decoder = {k.split(".", 1)[1]: v for k, v in audit_["arm_keys"]["outside"].items() if k.startswith("outside.y_decoder.")}
    assert decoder and decoder == {k.split(".", 1)[1]: v for k, v in audit_["arm_keys"]["jepa"].items()
                                   if k.startswith("jepa.y_decoder.")}
    assert audit_["text_sides"]["reference"] == "jepa" and "outside" in audit_["text_sides"]["arms"]
    assert not audit_["text_sides"]["differences"]


def test_a_reference_that_has_not_run_yet_says_so(tmp_path):
    out = fake_run(tmp_path / "se", reference="delta")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump(dict(cfg, arms=[*cfg["arms"], "delta"])))
    with pytest.raises(ConfigError, match="report.reference: 'delta' has no rows in metrics.jsonl yet"):
        write_outputs(out)
