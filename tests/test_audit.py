import json

import yaml

from shared.config import load_config, to_dict
from shared.evaluation.audit import audit, audit_markdown
from tests.conftest import SMOKE


def fake_run(path, arm, *overrides, order="abc"):
    cfg = load_config(SMOKE, list(overrides))
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"arm_name": arm, **to_dict(cfg)}))
    (path / "data_order.json").write_text(json.dumps({"sha256": order, "samples": 256}))
    return path


def test_audit_passes_when_only_arm_sections_differ(tmp_path):
    a = fake_run(tmp_path / "jepa", "jepa", "jepa.temperature=0.2", "eval.max_clips=5")
    b = fake_run(tmp_path / "vlm", "vlm", "vlm.lora=true")
    result = audit([a, b])
    assert result["ok"], result["differences"]
    assert result["arm_keys"]["jepa"]["jepa.temperature"] == 0.2
    assert "vlm.lora" in result["arm_keys"]["vlm"] and "jepa.temperature" not in result["arm_keys"]["vlm"]
    assert "PASS" in audit_markdown(result)


def test_audit_fails_when_an_arm_changes_a_shared_key(tmp_path):
    a = fake_run(tmp_path / "jepa", "jepa")
    b = fake_run(tmp_path / "vlm", "vlm", "train.lr=0.5")
    result = audit([a, b])
    assert not result["ok"]
    assert [d["key"] for d in result["differences"]] == ["train.lr"]
    assert "FAIL" in audit_markdown(result) and "`train.lr`" in audit_markdown(result)


def test_audit_fails_on_another_data_order(tmp_path):
    a = fake_run(tmp_path / "jepa", "jepa")
    b = fake_run(tmp_path / "vlm", "vlm", order="xyz")
    result = audit([a, b])
    assert not result["ok"] and result["differences"][0]["key"] == "data_order.sha256"


def test_audit_fails_on_another_step_plan(tmp_path):
    """Branches in one arm and not the other (a run edited by hand, or an older version): not controlled."""
    a = fake_run(tmp_path / "jepa", "jepa")
    b = fake_run(tmp_path / "vlm", "vlm")
    plan = {"trunk_steps": 6, "nominal_steps": 8, "updates": 10, "branches": [{"milestone": 64, "start_step": 1,
                                                                                 "end_step": 2}]}
    (a / "schedule.json").write_text(json.dumps(plan))
    (b / "schedule.json").write_text(json.dumps(plan))
    result = audit([a, b])
    assert result["ok"] and "1 cooldown branches" in audit_markdown(result)
    (b / "schedule.json").write_text(json.dumps({**plan, "branches": []}))
    result = audit([a, b])
    assert not result["ok"] and result["differences"][0]["key"].startswith("schedule.json")
