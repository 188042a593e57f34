"""The control audit: do the arms of a comparison differ only where the arm differs?

Compares the resolved training configs written into each arm's run directory (minus the arm's
own section), the numeric recipes (precision.json: autocast, master weights, reductions), the
data-order digests and the step plans (which optimizer steps ran on the trunk and in each
milestone's cooldown branch). Any other difference makes the comparison uncontrolled.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from shared.config import base_arm_name, training_view, variant_changes
from shared.files import read_json
from shared.registry import RegistryError, arm_class
from shared.tables import markdown_table
from shared.text_side.config import REFERENCE_TEXT_SIDE, embedding_arms, text_side_of, text_side_reference


def load_run(run_dir: Path) -> tuple[str, dict, dict]:
    cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    arm = cfg["arm_name"]
    return arm, cfg, read_json(Path(run_dir) / "data_order.json")


def step_plan(run_dir: Path) -> str:
    """The run's plan of trunk and branch steps as one comparable string ("-" for runs without one)."""
    path = Path(run_dir) / "schedule.json"
    return json.dumps(read_json(path), sort_keys=True) if path.is_file() else "-"


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
    plans = {arm: step_plan(d) for (arm, _, _), d in zip(runs, run_dirs)}
    if len(set(plans.values())) > 1:
        differences.append({"key": "schedule.json (trunk and branch steps)", "values": plans})
    first = next(iter(views.values()))
    differing = {d["key"] for d in differences}
    shared = {k: first.get(k) for k in keys if k not in differing}
    controls = {arm: arm_controls(arm, cfg) for arm, cfg, _ in runs}
    text_sides = text_side_differences(runs)
    knowledge = {arm: text_knowledge(arm, cfg) for arm, cfg, _ in runs}
    variants = {arm: _variant_diff(arm, cfg) for arm, cfg, _ in runs if base_arm_name(cfg.get("variants"), arm) != arm}
    return {"ok": not differences, "differences": differences, "arm_keys": own, "shared": shared,
            "data_order": orders, "step_plan": next(iter(plans.values())) if len(set(plans.values())) == 1 else None,
            "controls": controls, "variants": variants, "runs": [str(d) for d in run_dirs],
            "recipes": recipes, "layouts": layouts, "text_knowledge": knowledge, "text_sides": text_sides}


def text_side_differences(runs: list[tuple[str, dict, dict]]) -> dict:
    """The embedding arms' target spaces and Y-decoders against the reference text side (the section
    they take it from, shared/text_side/config.py): allowed to differ, but each difference is a control
    (two decoders of different capacity turn predictions into captions unequally), so it is named.
    {"reference", "arms": embedding arms, "differences": {arm: {key: {"reference", "arm"}}}}."""
    cfgs = {arm: cfg for arm, cfg, _ in runs}
    arms = embedding_arms({a: c.get(a) for a, c in cfgs.items()}, list(cfgs))
    if not arms:
        return {"reference": None, "arms": [], "differences": {}}
    ref = text_side_reference({a: cfgs[a].get(a) for a in arms}, arms) or arms[0]
    ref_side = text_side_of((cfgs.get(ref) or cfgs[arms[0]]).get(ref)) or {}
    out = {}
    for arm in arms:
        if arm == ref:
            continue
        mine = text_side_of(cfgs[arm].get(arm)) or {}
        differs = {k: {"reference": ref_side.get(k, "<missing>"), "arm": mine.get(k, "<missing>")}
                   for k in sorted(set(mine) | set(ref_side)) if mine.get(k, "<missing>") != ref_side.get(k, "<missing>")}
        if differs:
            out[arm] = differs
    return {"reference": ref, "arms": arms, "differences": out}


def _weights_source(weights) -> str:
    if weights == "captions":
        return "pretrained on the training captions alone (text_pretraining)"
    if weights in (None, ""):
        return "seeded random init: no text knowledge"
    if weights == "random":
        return "frozen random init: no text knowledge"
    return f"pretrained weights `{weights}`"


def text_knowledge(arm: str, cfg: dict) -> dict:
    """Where an arm's text knowledge comes from: its base LM (shared) and, for an arm that predicts into a
    target space, that space's encoder."""
    out = {"base LM": _weights_source((cfg.get("lm") or {}).get("weights"))}
    y = (cfg.get(arm) or {}).get("y_encoder")
    if isinstance(y, dict):
        weights = y.get("weights")
        out["target space"] = (_weights_source(weights) if weights is not None
                               else f"pretrained weights (packaged {y.get('kind', 'minilm')})")
    return out


def numeric_recipes(run_dirs: list[Path], arms: list[str]) -> tuple[dict, dict]:
    """Each run's numeric recipe and the layouts it trained under (precision.json, written by the loop).
    The recipe is compared; layouts (DDP or FSDP2, process counts) are not: each runs the same recipe."""
    recipes, layouts = {}, {}
    for arm, run_dir in zip(arms, run_dirs):
        path = Path(run_dir) / "precision.json"
        info = read_json(path) if path.is_file() else {}
        recipes[arm] = info.get("recipe", "<not recorded>")
        layouts[arm] = [f"{r['layout']} x {r['processes']}" + (" (train.deterministic)" if r.get("deterministic") else "")
                        + f" from update {r['from_step']}" for r in info.get("layouts", [])]
    return recipes, layouts


def _variant_diff(arm: str, cfg: dict) -> dict:
    """A variant's own section against its base arm's, key by key (what the variant changes)."""
    return {"base": base_arm_name(cfg.get("variants"), arm),
            "differs": {k: {"base": a, "variant": b} for k, (a, b) in variant_changes(cfg, arm).items()}}


def arm_controls(arm: str, cfg: dict) -> list[str]:
    """The arm's own account of what it gets besides its prediction target (``Arm.controls``), and, for
    an embedding arm, whether its target space and Y-decoder are the reference text side's."""
    try:
        own = arm_class(base_arm_name(cfg.get("variants"), arm), cfg.get("plugins") or ()).controls(cfg.get(arm, {}))
    except (KeyError, RegistryError):  # an arm whose plugin is not importable here
        own = []
    return own + text_side_control(arm, cfg)


def text_side_control(arm: str, cfg: dict) -> list[str]:
    """One line for an embedding arm other than the reference: its text side taken alike, or what differs."""
    section = cfg.get(arm) or {}
    mine = text_side_of(section)
    ref = section.get("text_side_from") or REFERENCE_TEXT_SIDE
    theirs = text_side_of(cfg.get(ref))
    if mine is None or theirs is None or ref == arm:
        return []
    differs = [f"`{k}`={mine.get(k)} ({ref}: {theirs.get(k)})" for k in sorted(set(mine) | set(theirs))
               if mine.get(k) != theirs.get(k)]
    if not differs:
        return [f"text side: the target space and Y-decoder of `{ref}`, key for key: its predictions are scored "
                "and decoded as that arm's are."] if section.get("text_side_from") else []
    return [f"text side differs from `{ref}`'s: {', '.join(differs)}: its predictions are scored or decoded "
            "unlike that arm's, a difference besides the predictor."]


def _key_table(keys: dict) -> list[str]:
    return markdown_table(["key", "value"], [(f"`{k}`", f"`{v}`") for k, v in keys.items()], "ll")


def audit_markdown(result: dict) -> str:
    arms = list(result["data_order"])
    lines = ["# Control audit", "",
             f"**{'PASS' if result['ok'] else 'FAIL'}**: the arms " +
             ("differ only in their own config sections and share the data order." if result["ok"]
              else "differ outside their own sections (see below)."), ""]
    if result["differences"]:
        lines += ["## Differences in shared keys", "",
                  *markdown_table(["key", *arms], [[f"`{d['key']}`", *(f"`{d['values'].get(a)}`" for a in arms)]
                                                   for d in result["differences"]], "l" * (1 + len(arms))), ""]
    if any(result.get("layouts", {}).values()):
        lines += ["## Numeric recipe and layouts", "",
                  *markdown_table(["arm", "recipe", "layouts (not compared: one recipe)"],
                                  [(a, f"`{json.dumps(result['recipes'].get(a))}`", "; ".join(result["layouts"][a]))
                                   for a in arms], "lll"), ""]
    lines += ["## Data order", "", *markdown_table(["arm", "sha256 of (clip, caption) at every position"],
                                                   [(a, f"`{h}`") for a, h in result["data_order"].items()], "ll")]
    if result.get("step_plan") and result["step_plan"] != "-":
        plan = json.loads(result["step_plan"])
        lines += ["", f"Step plan, identical for every arm: {plan['trunk_steps']} trunk steps, "
                  f"{len(plan['branches'])} cooldown branches, {plan['updates']} optimizer updates in all"
                  + (" (" + ", ".join(f"{b['milestone']:,}: steps {b['start_step']}-{b['end_step']}"
                                      for b in plan["branches"]) + ")" if plan["branches"] else "") + "."]
    if result.get("text_knowledge"):
        lines += ["", "## Text knowledge each arm starts from", ""]
        lines += [f"- {arm}: " + "; ".join(f"{k}: {v}" for k, v in parts.items())
                  for arm, parts in result["text_knowledge"].items()]
    if any(result.get("controls", {}).values()):
        lines += ["", "## What each arm gets besides its prediction target", ""]
        lines += [f"- {arm}: {c}" for arm, cs in result["controls"].items() for c in cs]
    sides = result.get("text_sides") or {}
    if len(sides.get("arms", [])) > 1:
        lines += ["", "## Text side of the embedding arms", ""]
        if not sides["differences"]:
            lines.append(f"Identical in {', '.join(sides['arms'])}: one target space and one Y-decoder "
                         f"(`shared_dim`, `y_encoder.*`, `y_decoder.*` as `{sides['reference']}` has them).")
        else:
            lines += ["Allowed, but a control: a different target space or decoder scores or decodes the same "
                      "prediction differently. Against the reference text side "
                      f"(`{sides['reference']}`):", "",
                      *markdown_table(["arm", "key", f"{sides['reference']}", "arm's value"],
                                      [(a, f"`{k}`", f"`{d['reference']}`", f"`{d['arm']}`")
                                       for a, ds in sides["differences"].items() for k, d in ds.items()], "llll")]
    if result.get("variants"):
        rows = [(arm, v["base"], f"`{k}`", f"`{d['base']}`", f"`{d['variant']}`")
                for arm, v in result["variants"].items()
                for k, d in (v["differs"].items() or [("(none)", {"base": "", "variant": ""})])]
        lines += ["", "## Variants: what each changes in its base arm's section", "",
                  *markdown_table(["variant", "base arm", "key", "base value", "variant value"], rows, "lllll")]
    lines += ["", "## Arm-specific settings (allowed to differ)", ""]
    for arm, keys in result["arm_keys"].items():
        lines += [f"<details><summary>{arm} ({len(keys)} keys)</summary>", "", *_key_table(keys), "", "</details>", ""]
    lines += [f"<details><summary>Shared settings, identical in every arm ({len(result['shared'])} keys)</summary>",
              "", *_key_table(result["shared"]), "", "</details>", ""]
    return "\n".join(lines)
