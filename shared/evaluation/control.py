"""The control audit: do the arms of a comparison differ only where the arm differs?

Compares the resolved training configs written into each arm's run directory (minus the arm's
own section), the numeric recipes (precision.json: autocast, master weights, reductions) and the
data-order digests. Any other difference makes the comparison uncontrolled.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from shared.config import base_arm_name, training_view, variant_changes
from shared.files import read_json
from shared.registry import RegistryError, arm_class


def load_run(run_dir: Path) -> tuple[str, dict, dict]:
    cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    arm = cfg["arm_name"]
    return arm, cfg, read_json(Path(run_dir) / "data_order.json")


def audit(run_dirs: list[Path]) -> dict:
    """{"ok", "differences": [{key, values}], "arm_keys": {arm: {key: value}}, "shared": {key: value},
    "data_order": {arm: sha256}}"""
    runs = [load_run(d) for d in run_dirs]
    views, own = {}, {}
    for arm, cfg, _ in runs:
        view = training_view(cfg, arm)
        own[arm] = {k: v for k, v in view.items() if k.split(".")[0] == arm}
        views[arm] = {k: v for k, v in view.items() if k.split(".")[0] != arm}
    keys = sorted(set().union(*(v.keys() for v in views.values())))
    differences = []
    for k in keys:
        values = {arm: views[arm].get(k, "<missing>") for arm in views}
        if len({yaml.safe_dump(v) for v in values.values()}) > 1:
            differences.append({"key": k, "values": values})
    recipes, layouts = numeric_recipes(run_dirs, [arm for arm, _, _ in runs])
    if len({json.dumps(r, sort_keys=True) for r in recipes.values()}) > 1:  # autocast, master weights, reductions
        differences.append({"key": "precision.recipe", "values": recipes})
    orders = {arm: order["sha256"] for arm, _, order in runs}
    order_samples = {arm: order["samples"] for arm, _, order in runs}
    if len(set(orders.values())) > 1 or len(set(order_samples.values())) > 1:
        differences.append({"key": "data_order.sha256", "values": orders})
    first = next(iter(views.values()))
    differing = {d["key"] for d in differences}
    shared = {k: first.get(k) for k in keys if k not in differing}
    controls = {arm: arm_controls(arm, cfg) for arm, cfg, _ in runs}
    variants = {arm: _variant_diff(arm, cfg) for arm, cfg, _ in runs if base_arm_name(cfg.get("variants"), arm) != arm}
    return {"ok": not differences, "differences": differences, "arm_keys": own, "shared": shared,
            "data_order": orders, "controls": controls, "variants": variants, "runs": [str(d) for d in run_dirs],
            "recipes": recipes, "layouts": layouts}


def numeric_recipes(run_dirs: list[Path], arms: list[str]) -> tuple[dict, dict]:
    """Each run's numeric recipe and the layouts it trained under (precision.json, written by the loop).
    The recipe is compared; layouts (DDP or FSDP2, process counts) are not: each runs the same recipe."""
    recipes, layouts = {}, {}
    for arm, run_dir in zip(arms, run_dirs):
        path = Path(run_dir) / "precision.json"
        info = read_json(path) if path.is_file() else {}
        recipes[arm] = info.get("recipe", "<not recorded>")
        layouts[arm] = [f"{r['layout']} x {r['processes']} from step {r['from_step']}" for r in info.get("layouts", [])]
    return recipes, layouts


def _variant_diff(arm: str, cfg: dict) -> dict:
    """A variant's own section against its base arm's, key by key (what the variant changes)."""
    return {"base": base_arm_name(cfg.get("variants"), arm),
            "differs": {k: {"base": a, "variant": b} for k, (a, b) in variant_changes(cfg, arm).items()}}


def arm_controls(arm: str, cfg: dict) -> list[str]:
    """The arm's own account of what it gets besides its prediction target (``Arm.controls``)."""
    try:
        return arm_class(base_arm_name(cfg.get("variants"), arm), cfg.get("plugins") or ()).controls(cfg.get(arm, {}))
    except (KeyError, RegistryError):  # an arm whose plugin is not importable here
        return []


def audit_markdown(result: dict) -> str:
    arms = list(result["data_order"])
    lines = ["# Control audit", "",
             f"**{'PASS' if result['ok'] else 'FAIL'}**: the arms " +
             ("differ only in their own config sections and share the data order." if result["ok"]
              else "differ outside their own sections (see below)."), ""]
    if result["differences"]:
        lines += ["## Differences in shared keys", "", "| key | " + " | ".join(arms) + " |",
                  "|---|" + "---|" * len(arms)]
        for d in result["differences"]:
            lines.append(f"| `{d['key']}` | " + " | ".join(f"`{d['values'].get(a)}`" for a in arms) + " |")
        lines.append("")
    if any(result.get("layouts", {}).values()):
        lines += ["## Numeric recipe and layouts", "", "| arm | recipe | layouts (not compared: one recipe) |",
                  "|---|---|---|"]
        lines += [f"| {a} | `{json.dumps(result['recipes'].get(a))}` | {'; '.join(result['layouts'][a])} |" for a in arms]
        lines.append("")
    lines += ["## Data order", "", "| arm | sha256 of (clip, caption) at every position |", "|---|---|"]
    lines += [f"| {a} | `{h}` |" for a, h in result["data_order"].items()]
    if any(result.get("controls", {}).values()):
        lines += ["", "## What each arm gets besides its prediction target", ""]
        lines += [f"- {arm}: {c}" for arm, cs in result["controls"].items() for c in cs]
    if result.get("variants"):
        lines += ["", "## Variants: what each changes in its base arm's section", "",
                  "| variant | base arm | key | base value | variant value |", "|---|---|---|---|---|"]
        for arm, v in result["variants"].items():
            rows = v["differs"].items() or [("(none)", {"base": "", "variant": ""})]
            lines += [f"| {arm} | {v['base']} | `{k}` | `{d['base']}` | `{d['variant']}` |" for k, d in rows]
    lines += ["", "## Arm-specific settings (allowed to differ)", ""]
    for arm, keys in result["arm_keys"].items():
        lines += [f"<details><summary>{arm} ({len(keys)} keys)</summary>", "", "| key | value |", "|---|---|"]
        lines += [f"| `{k}` | `{v}` |" for k, v in keys.items()] + ["", "</details>", ""]
    lines += [f"<details><summary>Shared settings, identical in every arm ({len(result['shared'])} keys)</summary>",
              "", "| key | value |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in result["shared"].items()] + ["", "</details>", ""]
    return "\n".join(lines)
