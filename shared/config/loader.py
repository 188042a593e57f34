"""Typed loading: YAML presets (``extends:``), dotted ``key=value`` overrides, variants, validation, dumping.

Every section is a dataclass (``schema.py``), so an unknown key or a wrongly typed value is caught
at load time and reported with its full dotted name (and the preset file when known).
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from shared.config.schema import Config, ConfigError
from shared.registry import RegistryError, arm_config_classes, load_plugins
from shared.text_side.config import SHARED_TEXT_SIDE, EmbeddingArmConfig, TextSideConfig


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and ("no" if not value else "yes") in args:
            value = "no" if not value else "yes"  # YAML 1.1 reads a bare no/yes as a boolean
        if value not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):  # command-line form: seeds=0,1,2
            value = [yaml.safe_load(v) for v in value.split(",")] if value else []
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")  # a bug in a config class


def build_dataclass(cls: type, values: Any, prefix: str = "") -> Any:
    """Build ``cls`` from a mapping, rejecting unknown keys and wrong types by dotted name."""
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values) and isinstance(values, cls):
        values = dataclasses.asdict(values)
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!s} ({valid_keys(prefix, names)})")
    kwargs = {}
    for name in names:
        if name in values:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(values[name], hints[name], key)
    return cls(**kwargs)


def valid_keys(section: str, names) -> str:
    """``train keys: a, b, c``: the keys an unknown one could have meant, named with their section."""
    return f"{section or 'top-level'} keys: {', '.join(sorted(names)) or 'none'}"


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build the full Config; arm sections are looked up in the arm registry."""
    raw = copy.deepcopy(raw or {})
    raw["plugins"] = _coerce(raw.get("plugins", []), list[str], "plugins")  # needed before the rest
    try:
        load_plugins(raw["plugins"])
    except RegistryError as e:
        raise ConfigError(str(e)) from None
    arm_classes = arm_config_classes()
    variants = _coerce(raw.get("variants") or {}, dict[str, Any], "variants")
    arm_raw = {name: raw.pop(name) for name in list(raw) if name in arm_classes or name in variants}
    if "arm" in raw:
        raise ConfigError("arm sections are written at the top level by arm name (e.g. 'jepa:'), not under 'arm:'")
    cfg = build_dataclass(Config, raw)
    cfg.arm = {name: build_dataclass(cls, arm_raw.get(name), name) for name, cls in arm_classes.items()}
    written = {name: arm_raw.get(name) or {} for name in arm_classes}  # what each section sets itself
    for name, spec in variants.items():
        base, section = _variant_section(name, spec, arm_classes, arm_raw)
        cfg.arm[name] = build_dataclass(arm_classes[base], section, name)
        written[name] = section
    resolve_text_sides(cfg.arm, written)
    for name, section in cfg.arm.items():
        # an arm section may take other values from the others once all are built (the text side is
        # resolved above for every embedding arm); the result is what config.yaml records and the audit compares
        if hasattr(section, "resolve_with"):
            section.resolve_with(cfg, name)
    for name in cfg.arms:
        if name not in cfg.arm:
            raise ConfigError(f"arms: unknown arm {name!r}; registered arms: {sorted(arm_classes)}"
                              + (f", variants: {sorted(variants)}" if variants else ""))
    validate(cfg)
    return cfg


def resolve_text_sides(sections: dict[str, Any], written: dict[str, dict]) -> None:
    """Fill each embedding arm's target space and Y-decoder (``SHARED_TEXT_SIDE``) from the section its
    ``text_side_from`` names, except the keys its own section (``written``, a variant's included) sets:
    two embedding arms are then scored and decoded alike unless one says otherwise, which the control
    audit names. The resolved values are what config.yaml records."""
    def source_of(name: str, chain: tuple[str, ...] = ()) -> TextSideConfig | None:
        section = sections[name]
        origin = getattr(section, "text_side_from", None) if isinstance(section, EmbeddingArmConfig) else None
        if origin is None:
            return None
        if origin in chain or origin == name:
            raise ConfigError(f"{name}.text_side_from: a loop, {' -> '.join((*chain, name, origin))}")
        if not isinstance(sections.get(origin), TextSideConfig):
            holders = sorted(n for n, s in sections.items() if isinstance(s, TextSideConfig) and n != name)
            raise ConfigError(f"{name}.text_side_from: {origin!r} is not an embedding arm's section; "
                              f"sections with a text side: {', '.join(holders) or 'none'} (null: this section's own)")
        resolve(origin, (*chain, name))
        return sections[origin]

    done: set[str] = set()

    def resolve(name: str, chain: tuple[str, ...] = ()) -> None:
        if name in done:
            return
        source = source_of(name, chain)
        if source is not None:
            section, own = sections[name], written.get(name) or {}
            for key in SHARED_TEXT_SIDE:
                theirs = getattr(source, key)
                if dataclasses.is_dataclass(theirs):  # key by key: a section may set one decoder key only
                    mine = own.get(key) or {}
                    mine = dataclasses.asdict(mine) if dataclasses.is_dataclass(mine) else mine
                    merged = {**dataclasses.asdict(theirs), **mine}
                    setattr(section, key, build_dataclass(type(theirs), merged, f"{name}.{key}"))
                elif key not in own:
                    setattr(section, key, copy.deepcopy(theirs))
        done.add(name)

    for name in sections:
        resolve(name)


def _variant_section(name: str, spec: Any, arm_classes: dict[str, type], arm_raw: dict[str, Any]) -> tuple[str, dict]:
    """A variant's section: its base arm's, with the variant's overrides (``jepa.loss: l2`` or
    ``jepa: {loss: l2}``) and then a section written under the variant's own name (as a run's
    config.yaml has it) on top. Only the base arm's own section may change."""
    where = f"variants.{name}"
    if name in arm_classes:
        raise ConfigError(f"{where}: {name!r} is a registered arm; a variant needs a name of its own")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"{where}: a variant's name is a config section: letters, digits, '_' and '-' only")
    if not isinstance(spec, dict) or not isinstance(spec.get("arm"), str):
        raise ConfigError(f"{where}: expected a mapping with `arm: <registered arm>` and that arm's keys, got {spec!r}")
    base = spec["arm"]
    if base not in arm_classes:
        raise ConfigError(f"{where}.arm: unknown arm {base!r}; registered arms: {sorted(arm_classes)}")
    section = copy.deepcopy(arm_raw.get(base) or {})
    for key, value in spec.items():
        if key == "arm":
            continue
        head, _, rest = key.partition(".")
        if head != base:
            raise ConfigError(f"{where}.{key}: a variant may only change its base arm's own section ({base}.*); "
                              "shared settings are the same for every arm of a comparison")
        if rest:
            set_dotted(section, rest, value)
        elif isinstance(value, dict):
            _merge_into(section, value)
        else:
            raise ConfigError(f"{where}.{key}: expected a mapping of {base}'s keys")
    _merge_into(section, arm_raw.get(name) or {})
    return base, section


def _merge_into(target: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge_into(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    t = cfg.train
    if not t.milestones:
        raise ConfigError("train.milestones: needs at least one milestone")
    if any(b <= a for a, b in zip(t.milestones, t.milestones[1:])) or t.milestones[0] <= 0:
        raise ConfigError(f"train.milestones: must be positive and strictly increasing, got {t.milestones}")
    if t.effective_batch <= 0 or t.micro_batch <= 0:
        raise ConfigError("train.effective_batch and train.micro_batch must be positive")
    if t.effective_batch % t.micro_batch:
        raise ConfigError(
            f"train.effective_batch ({t.effective_batch}) must be a multiple of train.micro_batch ({t.micro_batch})"
        )
    if not 0 <= t.milestone_cooldown < 1:
        raise ConfigError(f"train.milestone_cooldown={t.milestone_cooldown}: a fraction in [0, 1)")
    if t.milestone_cooldown and t.schedule != "constant":
        raise ConfigError(f"train.milestone_cooldown needs train.schedule=constant (got {t.schedule!r}): a branch "
                          "decays from the trunk's rate, which must not decay itself")
    if t.schedule == "wsd" and not 0 < t.decay_frac <= 1:
        raise ConfigError(f"train.decay_frac={t.decay_frac}: a fraction in (0, 1] for schedule wsd")
    if t.resume_every < 0 or t.resume_every_min < 0 or t.process_group_timeout_min <= 0:
        raise ConfigError("train.resume_every and train.resume_every_min must be >= 0 (0 = off), "
                          "train.process_group_timeout_min > 0")
    if cfg.data.frames <= 0:
        raise ConfigError(f"data.frames: must be positive, got {cfg.data.frames}")
    if not 0 <= cfg.data.synthetic.paraphrase <= 4:
        raise ConfigError(f"data.synthetic.paraphrase: must be in 0..4, got {cfg.data.synthetic.paraphrase}")
    if cfg.data.source == "manifest" and not cfg.data.manifest.path:
        raise ConfigError("data.manifest.path: required when data.source is 'manifest'")
    if not cfg.seeds:
        raise ConfigError("seeds: needs at least one seed")
    if cfg.report.reference is not None and cfg.report.reference not in cfg.arms:
        raise ConfigError(f"report.reference: {cfg.report.reference!r} is not one of this run's arms; arms: {cfg.arms}")
    lat = cfg.latency
    if lat.repeats < 1 or lat.sweep_repeats < 1 or lat.warmup < 0 or not lat.batch_sizes or min(lat.batch_sizes) < 1:
        raise ConfigError("latency: repeats and sweep_repeats >= 1, warmup >= 0, batch_sizes positive (at least one)")


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict with arm sections at the top level (the YAML layout)."""
    out = {f.name: copy.deepcopy(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name != "arm"}
    out = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in out.items()}
    for name, section in cfg.arm.items():
        out[name] = dataclasses.asdict(section)
    return out


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Files and overrides
# --------------------------------------------------------------------------------------------
def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        names = ", ".join(sorted(f.stem for f in PRESETS.glob("*.yaml")))
        raise ConfigError(f"config file not found: {path}" + (f" (or name a preset: {names})" if names else ""))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


# the presets that ship with the suite (package data of ``experiments``, beside this package when installed)
PRESETS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


def preset_file(path: str | Path) -> Path:
    """A preset's file: a path as given, or, where no such file exists, the name of a preset that ships
    with the suite (``smoke``, ``default.yaml``), so a command reads it from any folder."""
    p = Path(path)
    if p.is_file() or len(p.parts) != 1:
        return p
    bundled = PRESETS / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    return bundled if bundled.is_file() else p


def read_preset(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset file; ``extends: other.yaml`` (relative to it) starts from that preset, this file's
    sections merged on top key by key (lists are replaced, not appended)."""
    path = (preset_file(path) if not _chain else Path(path)).resolve()
    if path in _chain:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(p.name for p in _chain)}")
    raw = read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a preset file name, got {parent!r}")
    base = read_preset(path.parent / parent, (*_chain, path))
    _merge_into(base, raw)
    return base


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b.c=value`` -> ("a.b.c", parsed value); values use YAML syntax (1e-4, [0,1], null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. train.lr=1e-4)")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Load a YAML preset and apply ``key=value`` overrides (``a,b,c`` fills a list field)."""
    raw = read_preset(path) if path else {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{e}") from None


def field_type(key: str, variants: dict[str, Any] | None = None) -> Any:
    """The annotation of a dotted config key (arm sections and ``variants``' sections included), or raise
    naming the key and the valid keys where it went wrong. Load the config's plugins first (``split_sweeps``)."""
    parts = key.split(".")
    arm_classes = arm_config_classes()
    bases = {name: spec.get("arm") for name, spec in (variants or {}).items() if isinstance(spec, dict)}
    section = bases.get(parts[0], parts[0])
    cls: Any = arm_classes[section] if section in arm_classes else Config
    parts = parts[1:] if section in arm_classes else parts
    tp: Any = cls
    for i, part in enumerate(parts):
        if tp is Any or typing.get_origin(tp) is dict:  # free-form below here (variants, mappings)
            return Any
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints or part == "arm":
            section = ".".join(key.split(".")[:len(key.split(".")) - len(parts) + i])
            valid = set(hints) - {"arm"} | (set(arm_classes) | set(bases) if tp is Config else set())
            raise ConfigError(f"unknown config key {key} ({valid_keys(section, valid)})")
        tp = hints[part]
    return tp


def sweep_context(path: str | Path | None, overrides: list[str]) -> dict[str, Any]:
    """The variants a command's preset and overrides declare, once the plugins they name are imported:
    what typing an override needs before the config itself can be built (a plugin arm's keys)."""
    raw = read_preset(path) if path else {}
    for item in overrides:
        key, value = parse_override(item)
        if key.split(".")[0] in ("plugins", "variants"):
            set_dotted(raw, key, value)
    try:
        load_plugins(_coerce(raw.get("plugins", []), list[str], "plugins"))
    except RegistryError as e:
        raise ConfigError(str(e)) from None
    variants = raw.get("variants") or {}
    return variants if isinstance(variants, dict) else {}


def split_sweeps(overrides: list[str], path: str | Path | None = None) -> tuple[list[str], dict[str, list[Any]]]:
    """Separate sweep overrides (``key=a,b,c`` on a scalar key) from plain ones; ``path``, the preset,
    gives the plugins (and variants) whose keys the overrides may name."""
    variants = sweep_context(path, overrides)
    plain, sweeps = [], {}
    for item in overrides:
        key, value = parse_override(item)
        is_list_key = typing.get_origin(field_type(key, variants)) is list
        if not is_list_key and isinstance(value, str) and "," in value:
            sweeps[key] = [yaml.safe_load(v) for v in value.split(",")]
        elif not is_list_key and isinstance(value, list):
            sweeps[key] = value
        else:
            plain.append(item)
    return plain, sweeps
