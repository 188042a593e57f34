"""``arms``: the arms this installation can compare, their variants, config keys and capabilities."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

from experiments.cli import add_config_args
from shared.arm import CAPABILITIES
from shared.config import flatten, load_config, to_dict, variant_changes
from shared.registry import registered_arms
from shared.text_side.config import SHARED_TEXT_SIDE, EmbeddingArmConfig, TextSideConfig

def add_parser(sub, help: str) -> None:
    p = sub.add_parser("arms", help=help,
                       description="List every arm this installation can compare (the built-in ones, installed "
                                   "packages' entry points, and the config's plugins), each with a one-line "
                                   "description, its config section's keys with their defaults, and which optional "
                                   "capabilities it implements; then the config's variants and what each changes "
                                   "in its base arm. The config is optional (its plugins and variants are read).")
    add_config_args(p, out=False, config_required=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def capabilities(cls: type) -> list[str]:
    """What the arm class declares it offers (``Arm.capabilities``), in words."""
    return [what for cap, (_, what) in CAPABILITIES.items() if cap in cls.capabilities]


def text_side(section) -> str | None:
    """Where an embedding arm's target space and Y-decoder come from in this config (None: not one)."""
    if isinstance(section, EmbeddingArmConfig) and section.text_side_from:
        return f"the {section.text_side_from} section's {', '.join(SHARED_TEXT_SIDE)}, unless set in its own"
    return "its own section's" if isinstance(section, TextSideConfig) else None


def describe_arms(cfg) -> dict:
    arms = {}
    for name, spec in sorted(registered_arms(cfg.plugins).items()):
        doc = inspect.getdoc(spec.arm_cls) or inspect.getdoc(inspect.getmodule(spec.arm_cls)) or ""
        arms[name] = {"description": doc.split("\n")[0], "module": spec.arm_cls.__module__,
                      "config_class": spec.config_cls.__name__,
                      "keys": flatten(dataclasses.asdict(spec.config_cls())),
                      "capabilities": capabilities(spec.arm_cls), "text_side": text_side(cfg.arm.get(name))}
    resolved = to_dict(cfg)
    variants = {name: {"arm": cfg.base_arm(name), "changes": {k: list(ab) for k, ab in variant_changes(resolved, name).items()}}
                for name in cfg.variants}
    return {"arms": arms, "variants": variants, "compared": cfg.arms}


def arms_text(info: dict) -> str:
    L = []
    for name, a in info["arms"].items():
        L += [f"{name}  ({a['module']}, section `{name}:` = {a['config_class']})", f"  {a['description']}",
              "  capabilities: " + (", ".join(a["capabilities"]) or "training and captioning/classification only"),
              *([f"  text side (an embedding arm): {a['text_side']}"] if a["text_side"] else []),
              "  config keys (default):"]
        L += [f"    {name}.{k} = {json.dumps(v)}" for k, v in a["keys"].items()]
        L.append("")
    if info["variants"]:
        L.append("variants (this config):")
        for name, v in info["variants"].items():
            changes = ", ".join(f"{k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in v["changes"].items())
            L.append(f"  {name} = {v['arm']} with {changes or 'no change'}")
        L.append("")
    L.append("compared by this config (`arms`): " + ", ".join(info["compared"]))
    return "\n".join(L)


def run(args: argparse.Namespace) -> int:
    info = describe_arms(load_config(args.config, args.overrides))
    print(json.dumps(info, indent=2) if args.json else arms_text(info))
    return 0
