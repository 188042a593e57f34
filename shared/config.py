"""Typed experiment configuration: a dataclass tree, YAML presets and dotted ``key=value`` overrides.

Every section is a dataclass, so an unknown key or a wrongly typed value is caught at load time
and reported with its full dotted name. Arms contribute their own section (``jepa:``, ``vlm:``)
through the arm registry, so adding an arm never edits this file.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from shared.registry import RegistryError, arm_config_classes, load_plugins


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key (and file when known)."""


# --------------------------------------------------------------------------------------------
# Sections shared by every arm. Anything here must be identical across the arms of a comparison.
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticConfig:
    """The suite's procedural video benchmark (see shared/synthetic.py)."""

    seed: int = 1234  # fixes the clips themselves; independent of the training seed
    train_clips: int = 6000
    val_clips: int = 288
    test_clips: int = 576
    captions_per_clip: int = 5
    # Surface variability of the captions: 0 = one canonical phrasing per meaning, up to 4 = many
    # paraphrases (synonyms, word order, templates). Videos and labels do not depend on it.
    paraphrase: int = 2
    image_size: int = 64
    fps: float = 8.0  # frame rate of the rendered clips (and streams)
    clip_seconds: float = 2.0
    streams: int = 4  # long videos made of consecutive events, for selective decoding
    stream_events: int = 24


@dataclass
class ManifestConfig:
    path: str | None = None  # JSONL of clips (see shared/data/manifest.py)
    streams_path: str | None = None  # JSONL of long videos with timestamped events
    # a `validate` report (its invalid.jsonl): the clips it lists are skipped, counted in the log
    exclude: str | None = None


@dataclass
class DataConfig:
    source: Literal["synthetic", "manifest"] = "synthetic"
    frames: int = 16  # frames sampled uniformly per clip
    query: str = "Describe the video."  # the prompt X_Q given to both arms
    # DataLoader worker processes that read clips (decode and resize frames, or read cached
    # features); 0 = in the training process. prefetch = batches each worker keeps ready.
    workers: int = 0
    prefetch: int = 2
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)


@dataclass
class EncoderConfig:
    """The frozen X-encoder shared by every arm (a Perception Encoder from timm)."""

    # "cache": features computed once, stored in memory-mapped shards and read by the loader;
    # "online": the encoder runs on the training device inside each step, on frames the loader
    # decodes (the PerceptionLM way; no feature storage, the mode for paper scale). Same batches.
    features: Literal["cache", "online"] = "cache"
    model: str = "vit_pe_core_tiny_patch16_384"
    weights: str | None = None  # local file/dir or hub id; None = seeded random init (frozen)
    image_size: int = 64
    init_seed: int = 0  # only used without weights
    pool_grid: int = 2  # spatial tokens per frame side after average pooling; 0 = keep all
    # weights and compute dtype; "auto" = the resolved training precision's (shared/precision.py)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    cache_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch_frames: int = 256


@dataclass
class LMConfig:
    """The base causal LM and tokenizer shared by both arms.

    ``weights`` names a hub id or local folder of a pretrained Llama (the paper: Llama-3.2-1B);
    without it the architecture fields below build a randomly initialised model, identical for
    both arms (seeded by the run's seed). The architecture fields also let ``describe`` build the
    paper's models on the meta device with no download.
    """

    weights: str | None = None
    tokenizer: str = "captions"  # "captions" = BPE trained on the training captions; else hub id/path
    tokenizer_vocab: int = 1024  # target size of the captions tokenizer
    hidden_size: int = 256
    intermediate_size: int = 1024
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int | None = None
    vocab_size: int | None = None  # None = the tokenizer's size
    rope_theta: float = 10000.0
    max_position: int = 2048
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    # "eager" trains ~30% faster than "sdpa" for these short sequences on CPU (measured); GPUs: sdpa
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"


@dataclass
class TrainConfig:
    effective_batch: int = 128  # samples per optimizer step, whatever the process count
    micro_batch: int = 32  # samples per forward pass and process; accumulation fills the rest
    lr: float = 3e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_frac: float = 0.05
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    # Checkpoints at these numbers of samples seen; training stops at the last one.
    milestones: list[int] = field(default_factory=lambda: [1024, 4096, 16384])
    # "auto": bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), fp32 ("no") elsewhere;
    # resolved once per run (shared/precision.py) and recorded resolved in the run's config.yaml
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # recompute each transformer layer in the backward pass (use_reentrant=False): less activation
    # memory for ~30% more compute; in the shared section, so both arms of a comparison use it or not
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each transformer block (GPUs; minutes of compile on a CPU)
    threads: int = 0  # torch threads; 0 = all cores
    log_every: int = 10  # optimizer steps between log lines
    resume_every: int = 100  # optimizer steps between resume points (besides milestones)


@dataclass
class EvalConfig:
    split: Literal["val", "test"] = "test"
    # Extra evaluation sets (manifest JSONL files; their clips of ``split`` are used), averaged as
    # the paper averages YouCook2 / MSR-VTT / PVD-Bench. Empty = the training data's own split.
    sets: list[str] = field(default_factory=list)
    max_clips: int = 0  # 0 = the whole split (per set)
    batch_size: int = 64
    caption_max_tokens: int = 24
    retrieval: bool = True  # text-to-video recall@1 for arms that implement embed()
    # top-k over phrasings ("top5_phrasings"): each label's canonical text plus (phrasings - 1) other
    # phrasings of the data's grammar (synthetic data), the label scoring its best one, so an arm is
    # not judged on one wording it may never have been trained to produce; "top5" stays the canonical
    # text's. Scoring K phrasings costs the VLM ~K^2/2 times the canonical scoring, so by default it
    # runs at the last milestone only ("all": every milestone). Manifest data has one text per label.
    phrasings: int = 4
    phrasings_at: Literal["last", "all"] = "last"


@dataclass
class LatencyConfig:
    frames: int = 64
    repeats: int = 100
    warmup: int = 5
    caption_tokens: int = 16  # tokens generated per decode (forced, for comparable timing)


@dataclass
class SelectiveConfig:
    """Selective decoding of long streams (the paper's section 4.5)."""
    arm: str = "jepa"  # an arm with embed() and decode_embeddings()
    window_s: float = 2.0  # each window's span; its data.frames frames are spread uniformly over it
    hop_s: float = 0.5  # window centres every hop_s seconds: 1 / hop_s is the highest decoding rate
    frequencies_hz: list[float] = field(default_factory=lambda: [2.0, 1.0, 0.5, 0.35, 0.2, 0.1, 0.05, 0.02, 0.01])
    poolings: list[Literal["exact", "mean"]] = field(default_factory=lambda: ["exact", "mean"])
    batch_windows: int = 64  # windows read, encoded and embedded at a time


@dataclass
class Config:
    seed: int = 0  # training seed: arm initialisation, base LM initialisation, data order
    seeds: list[int] = field(default_factory=lambda: [0])  # sample-efficiency runs one arm per seed
    arms: list[str] = field(default_factory=lambda: ["jepa", "vlm"])
    # extra arm modules: a module name, or the path of a .py file or package folder
    plugins: list[str] = field(default_factory=list)
    # arm variants: the same arm under other settings of its own section, compared side by side,
    # e.g. {jepa_l2: {arm: jepa, jepa.loss: l2}}; name one in `arms` like an arm
    variants: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = "~/.cache/jepa-vs-vlm"  # encoder features, text embeddings, tokenizers
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    selective: SelectiveConfig = field(default_factory=SelectiveConfig)
    # Arm sections (name -> that arm's config dataclass), filled from the arm registry.
    arm: dict[str, Any] = field(default_factory=dict)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()

    def base_arm(self, name: str) -> str:
        """The registered arm a name builds: itself, or a variant's base arm."""
        return base_arm_name(self.variants, name)

    def arm_config(self, name: str) -> Any:
        if name not in self.arm:
            raise ConfigError(f"no config section for arm {name!r}; known: {sorted(self.arm)}")
        return self.arm[name]


def base_arm_name(variants: dict[str, Any] | None, name: str) -> str:
    v = (variants or {}).get(name)
    return v["arm"] if isinstance(v, dict) and "arm" in v else name


# --------------------------------------------------------------------------------------------
# Building, validating and dumping
# --------------------------------------------------------------------------------------------
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
            raise ConfigError(f"{key}: must be one of {list(args)}, got {value!r}")
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
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name in names:
        if name in values:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(values[name], hints[name], key)
    return cls(**kwargs)


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
    for name, spec in variants.items():
        base, section = _variant_section(name, spec, arm_classes, arm_raw)
        cfg.arm[name] = build_dataclass(arm_classes[base], section, name)
    for name, section in cfg.arm.items():
        # an arm section may take values from the others once all are built (e.g. an arm that shares
        # another's target space); the result is what config.yaml records and the audit compares
        if hasattr(section, "resolve_with"):
            section.resolve_with(cfg, name)
    for name in cfg.arms:
        if name not in cfg.arm:
            raise ConfigError(f"arms: unknown arm {name!r}; registered arms: {sorted(arm_classes)}"
                              + (f", variants: {sorted(variants)}" if variants else ""))
    validate(cfg)
    return cfg


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
    if cfg.data.frames <= 0:
        raise ConfigError(f"data.frames: must be positive, got {cfg.data.frames}")
    if not 0 <= cfg.data.synthetic.paraphrase <= 4:
        raise ConfigError(f"data.synthetic.paraphrase: must be in 0..4, got {cfg.data.synthetic.paraphrase}")
    if cfg.data.source == "manifest" and not cfg.data.manifest.path:
        raise ConfigError("data.manifest.path: required when data.source is 'manifest'")
    if not cfg.seeds:
        raise ConfigError("seeds: needs at least one seed")


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
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def read_preset(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset file; ``extends: other.yaml`` (relative to it) starts from that preset, this file's
    sections merged on top key by key (lists are replaced, not appended)."""
    path = Path(path).resolve()
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


def field_type(key: str) -> Any:
    """The annotation of a dotted config key (arm sections included), or raise naming the key."""
    parts = key.split(".")
    arm_classes = arm_config_classes()
    cls: Any = arm_classes[parts[0]] if parts[0] in arm_classes else Config
    parts = parts[1:] if parts[0] in arm_classes else parts
    tp: Any = cls
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints or part == "arm":
            raise ConfigError(f"unknown config key {key}")
        tp = hints[part]
    return tp


def split_sweeps(overrides: list[str]) -> tuple[list[str], dict[str, list[Any]]]:
    """Separate sweep overrides (``key=a,b,c`` on a scalar key) from plain ones."""
    plain, sweeps = [], {}
    for item in overrides:
        key, value = parse_override(item)
        is_list_key = typing.get_origin(field_type(key)) is list
        if not is_list_key and isinstance(value, str) and "," in value:
            sweeps[key] = [yaml.safe_load(v) for v in value.split(",")]
        elif not is_list_key and isinstance(value, list):
            sweeps[key] = value
        else:
            plain.append(item)
    return plain, sweeps


# Keys that do not change what training computes: excluded from resume checks and control audits.
NOT_TRAINING = ("seeds", "arms", "plugins", "variants", "cache_dir", "eval", "latency", "selective", "arm_name",
                "train.log_every", "train.resume_every", "train.threads",
                "data.synthetic.streams", "data.synthetic.stream_events", "data.manifest.streams_path",
                "data.workers", "data.prefetch")


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
