"""Arm variants, arms from outside the repo, the `arms` command, preset inheritance and grids."""
import json

import pytest
import yaml

from experiments.cli import main
from shared.config import ConfigError, config_from_dict, dump_yaml, load_config, to_dict, training_view
from shared.evaluation.audit import audit, audit_markdown
from tests.conftest import ROOT, SMOKE

EXAMPLE = ROOT / "examples" / "contrastive_arm" / "contrastive_arm"
L2 = "variants={jepa_l2: {arm: jepa, jepa.loss: l2}}"


def test_a_variant_is_its_base_section_with_its_changes():
    cfg = load_config(SMOKE, [L2, "variants.jepa_causal={arm: jepa, jepa: {causal: true}}", "jepa.temperature=0.2",
                              "arms=jepa,vlm,jepa_l2,jepa_causal"])
    assert cfg.arm["jepa_l2"].loss == "l2" and cfg.arm["jepa_l2"].temperature == 0.2  # the rest is jepa's
    assert cfg.arm["jepa_causal"].causal and cfg.arm["jepa_causal"].loss == "infonce"
    assert cfg.base_arm("jepa_l2") == "jepa" and cfg.base_arm("vlm") == "vlm"
    assert config_from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg  # a run's config.yaml reloads as it was
    view = training_view(to_dict(cfg), "jepa_l2")
    assert view["jepa_l2.loss"] == "l2" and not any(k.startswith(("jepa.", "jepa_causal.")) for k in view)


@pytest.mark.parametrize("override, message", [
    ("variants={x: {arm: jepa, train.lr: 0.1}}", r"variants.x.train.lr: a variant may only change its base arm's own section"),
    ("variants={x: {arm: nope}}", r"variants.x.arm: unknown arm 'nope'"),
    ("variants={vlm: {arm: jepa}}", r"variants.vlm: 'vlm' is a registered arm"),
    ("variants={x: {arm: jepa, jepa.nope: 1}}", r"unknown config key x.nope"),
    ("variants={a.b: {arm: jepa}}", r"variants.a.b: a variant.s name is a config section"),
    ("arms=jepa,jepa_l3", r"arms: unknown arm 'jepa_l3'"),
])
def test_bad_variants_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, [override])


def test_the_audit_shows_what_a_variant_changes_and_still_checks_shared_keys(tmp_path):
    def run(arm, *overrides):
        cfg = load_config(SMOKE, [L2, *overrides])
        path = tmp_path / f"{arm}{len(list(tmp_path.iterdir()))}"
        path.mkdir()
        (path / "config.yaml").write_text(yaml.safe_dump({"arm_name": arm, **to_dict(cfg)}))
        (path / "data_order.json").write_text(json.dumps({"sha256": "abc", "samples": 256}))
        return path

    ok = audit([run("jepa"), run("vlm"), run("jepa_l2")])
    assert ok["ok"], ok["differences"]
    assert ok["variants"]["jepa_l2"] == {"base": "jepa", "differs": {"loss": {"base": "infonce", "variant": "l2"}}}
    assert "| jepa_l2 | jepa | `loss` | `infonce` | `l2` |" in audit_markdown(ok)
    bad = audit([run("jepa"), run("jepa_l2", "train.lr=0.5")])
    assert not bad["ok"] and [d["key"] for d in bad["differences"]] == ["train.lr"]


def test_an_arm_is_imported_by_path_and_takes_its_text_side_from_jepa():
    cfg = load_config(SMOKE, [f"plugins=[{EXAMPLE}]", "jepa.y_decoder.num_heads=4", "arms=jepa,vlm,contrastive"])
    from contrastive_arm import ContrastiveArm  # importable once the plugin path put its folder on sys.path

    c = cfg.arm["contrastive"]
    assert c.y_decoder == cfg.arm["jepa"].y_decoder and c.y_decoder.num_heads == 4  # resolved when the config loads
    assert c.y_encoder == cfg.arm["jepa"].y_encoder and c.shared_dim == cfg.arm["jepa"].shared_dim
    own = load_config(SMOKE, [f"plugins=[{EXAMPLE}]", "contrastive.loss=l2", "contrastive.y_decoder.num_layers=2"])
    assert own.arm["contrastive"].loss == "l2" and own.arm["contrastive"].y_decoder.num_layers == 2  # its own keys win
    assert not hasattr(ContrastiveArm, "resolve_with") and "resolve_with" not in vars(type(c))
    with pytest.raises(ConfigError, match="plugins: cannot import arm module .*no such file"):
        load_config(SMOKE, ["plugins=[examples/nowhere/arm.py]"])


def test_preset_extends_another(tmp_path):
    (tmp_path / "child.yaml").write_text(f"extends: {SMOKE}\ntrain:\n  lr: 0.5\n")
    cfg, base = load_config(tmp_path / "child.yaml"), load_config(SMOKE)
    assert cfg.train.lr == 0.5 and cfg.train.milestones == base.train.milestones
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")
    ablations = load_config(ROOT / "experiments" / "configs" / "ablations.yaml")
    assert all(a == "jepa" or ablations.base_arm(a) == "jepa" for a in ablations.arms) and len(ablations.arms) == 9


def test_arms_command_lists_arms_variants_and_capabilities(capsys):
    assert main(["arms", "-c", str(SMOKE), f"plugins=[{EXAMPLE}]", L2, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"jepa", "vlm", "contrastive"} <= set(info["arms"])
    assert "retrieval (text-to-video R@1)" in info["arms"]["jepa"]["capabilities"]
    assert "retrieval (text-to-video R@1)" not in info["arms"]["vlm"]["capabilities"]
    assert info["arms"]["vlm"]["keys"]["lora"] is False and info["arms"]["vlm"]["description"]
    assert info["variants"]["jepa_l2"] == {"arm": "jepa", "changes": {"loss": ["infonce", "l2"]}}


def test_grid_cells_are_a_product_or_an_explicit_list():
    from experiments.sample_efficiency import grid_cells

    cells = grid_cells({"data.synthetic.paraphrase": [0, 4], "train.lr": [0.1, 0.2]}, [])
    assert [c[0] for c in cells] == ["paraphrase=0,lr=0.1", "paraphrase=0,lr=0.2", "paraphrase=4,lr=0.1", "paraphrase=4,lr=0.2"]
    cells = grid_cells({}, ["jepa.loss=l2 vlm.lora=true", "jepa.loss=l1"])
    assert cells[0] == ("loss=l2,lora=True", ["jepa.loss=l2", "vlm.lora=true"], {"loss": "l2", "lora": True})
    assert grid_cells({"jepa.temperature": [1], "vlm.temperature": [2]}, [])[0][0] == "jepa.temperature=1,vlm.temperature=2"
    with pytest.raises(ConfigError, match="not both"):
        grid_cells({"train.lr": [1, 2]}, ["jepa.loss=l2"])


@pytest.mark.slow
def test_three_arms_and_a_variant_in_one_comparison_then_a_grid(tmp_path, cache_dir):
    out = tmp_path / "three"
    common = [f"cache_dir={cache_dir}", "train.milestones=[64,128]"]
    args = ["sample-efficiency", "-c", str(SMOKE), "-o", str(out), *common, f"plugins=[{EXAMPLE}]",
            "variants={contrastive_wide: {arm: contrastive, contrastive.hidden_size: 64}}",
            "arms=jepa,vlm,contrastive,contrastive_wide"]
    assert main(args) == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in rows} == {"jepa", "vlm", "contrastive", "contrastive_wide"} and len(rows) == 8
    audit_ = json.loads((out / "control_audit.json").read_text())["0"]
    assert audit_["ok"], audit_["differences"]
    assert audit_["variants"]["contrastive_wide"]["differs"] == {"hidden_size": {"base": 512, "variant": 64}}
    report = (out / "report.md").read_text()
    assert "| contrastive_wide | `contrastive.hidden_size=64` |" in report

    grid = tmp_path / "grid"
    assert main(["sample-efficiency", "-c", str(SMOKE), "-o", str(grid), *common, "arms=jepa",
                 "--cell", "jepa.loss=l2", "--cell", "jepa.loss=cosine jepa.temperature=0.2"]) == 0
    assert (grid / "loss=l2" / "report.md").is_file() and (grid / "loss=cosine,temperature=0.2" / "report.md").is_file()
    assert (grid / "grid.png").is_file()
    table = (grid / "sweep.md").read_text()
    assert "| l2 |" in table and "| cosine | 0.2 |" in table


def test_capabilities_are_declared_and_checked_against_the_methods():
    import pytest

    from shared.arm import Arm

    with pytest.raises(TypeError, match="declares capability 'embed' but does not implement"):
        type("Half", (Arm,), {"capabilities": frozenset({"embed"}), "embed": lambda self, v, q: v})
    with pytest.raises(TypeError, match="unknown"):
        type("Odd", (Arm,), {"capabilities": frozenset({"teleport"})})
    from jepa_arm.arm import JepaArm
    from vlm_arm.arm import VlmArm

    assert "embed" in JepaArm.capabilities and "embed" not in VlmArm.capabilities
