"""Views of a resolved config (as a plain dict) that comparisons read: what defines an arm's
training (resume checks, the control audit) and what a variant changes against its base arm."""
from __future__ import annotations

from typing import Any

from shared.config.schema import base_arm_name
from shared.registry import arm_config_classes

# Keys that do not change what training computes: excluded from resume checks and control audits.
NOT_TRAINING = ("seeds", "arms", "plugins", "variants", "cache_dir", "eval", "latency", "selective", "log", "report", "arm_name",
                "train.log_every", "train.resume_every", "train.resume_every_min", "train.threads",
                "train.parallel", "train.deterministic", "train.process_group_timeout_min",
                "data.synthetic.streams", "data.synthetic.stream_events", "data.manifest.streams_path",
                "data.manifest.media_root",  # where the same files are, not what they are
                "data.workers", "data.prefetch", "data.decode_threads")


def variant_changes(cfg_dict: dict[str, Any], name: str) -> dict[str, tuple[Any, Any]]:
    """{key: (base arm's value, variant's value)} for every key of its section that a variant changes
    (keys relative to the section; empty for a registered arm)."""
    base = base_arm_name(cfg_dict.get("variants"), name)
    mine, theirs = flatten(cfg_dict.get(name) or {}), flatten(cfg_dict.get(base) or {})
    missing = "<missing>"
    return {k: (theirs.get(k, missing), mine.get(k, missing)) for k in sorted(set(mine) | set(theirs))
            if base != name and mine.get(k, missing) != theirs.get(k, missing)}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def training_view(cfg_dict: dict[str, Any], arm_name: str) -> dict[str, Any]:
    """The flat keys that define what arm ``arm_name`` trains on, its own section included."""
    other_arms = (set(arm_config_classes()) | set(cfg_dict.get("variants") or {})) - {arm_name}
    return {k: v for k, v in flatten(cfg_dict).items()
            if k.split(".")[0] not in other_arms
            and not any(k == p or k.startswith(p + ".") for p in NOT_TRAINING)}
