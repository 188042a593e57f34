"""The configuration schema: one dataclass per section, with defaults and a comment on each key.

The sections below are shared by every arm and must be identical across the arms of a comparison.
Arms contribute their own section (``jepa:``, ``vlm:``) through the arm registry, so adding an arm
never edits this file. Loading, checking and dumping live in ``loader.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key (and file when known)."""

    exit_code = 2  # the command line prints the message and exits with this code (no traceback)


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
    streams: int = 4  # long videos made of consecutive events, for selective decoding
    stream_events: int = 24


@dataclass
class ManifestConfig:
    path: str | None = None  # JSONL of clips (see shared/data/manifest.py)
    streams_path: str | None = None  # JSONL of long videos with timestamped events
    # a `validate` report (its invalid.jsonl): the clips it lists are skipped, counted in the log
    exclude: str | None = None
    # folder the manifest's relative media paths are read from, in place of the one it records (its
    # media_root line, else its own folder): a dataset moved to another disk or node, re-pointed
    # (a relative one counts from the working directory; absolute media paths are read as they are)
    media_root: str | None = None


@dataclass
class DataConfig:
    source: Literal["synthetic", "manifest"] = "synthetic"
    frames: int = 16  # frames sampled uniformly per clip
    query: str = "Describe the video."  # the prompt X_Q given to both arms
    # DataLoader worker processes that read clips (decode and resize frames, or read cached
    # features); 0 = in the training process. prefetch = batches each worker keeps ready.
    workers: int = 0
    prefetch: int = 2
    # FFmpeg's decoding threads per reading process (each worker, or the training process at 0 workers);
    # 0 = FFmpeg's own count (a thread per core, up to 16: with 8 workers per GPU, 64 x 16 threads a node).
    # 1: more threads do not lower the CPU seconds a clip costs (measured: 0.85-0.90 s at 720p, 1.67-1.71 s at
    # 1080p for 1, 2 and FFmpeg's count; docs/data_pipeline.md); they only let one worker take idle cores, and
    # with enough workers to feed a GPU there are none. Raise it only for few workers on many idle cores
    decode_threads: int = 1
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
    # transformer blocks of a randomly initialised encoder (None: the model's own depth). A random
    # ViT's features carry about the same information at any depth (linear probe of the synthetic
    # benchmark's 144 classes, top-5: 78.6% at 12 blocks, 78.0% at 6, 78.8% at 4), at a cost linear in it
    depth: int | None = None
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

    # hub id or folder; "captions" = pretrained on the training captions first (text_pretraining)
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
class TextLMPretraining:
    """The base LM's text pretraining (``lm.weights: captions``): next-token prediction on caption groups."""

    steps: int = 300
    batch_size: int = 32  # caption groups (clips) per step
    lr: float = 2.0e-3
    max_tokens: int = 128  # a group's captions in sequence, cut to this many tokens


@dataclass
class TextEncoderPretraining:
    """The Y-encoder's text pretraining (``<arm>.y_encoder.weights: captions``): symmetric InfoNCE on
    pairs of captions of one clip; a BERT-style encoder over the shared tokenizer, mean-pooled."""

    steps: int = 100
    batch_size: int = 256  # pairs per step, each from another clip
    lr: float = 1.0e-3
    temperature: float = 0.05
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_length: int = 64


@dataclass
class TextPretrainingConfig:
    """Text knowledge learned from the training split's captions alone, before the comparison
    (shared/text_pretraining.py): what ``lm.weights: captions`` and ``y_encoder.weights: captions``
    load. No video, no labels, no val/test text; one model for every training seed, as a
    pretrained checkpoint is; cached."""

    seed: int = 0
    lm: TextLMPretraining = field(default_factory=TextLMPretraining)
    y_encoder: TextEncoderPretraining = field(default_factory=TextEncoderPretraining)


@dataclass
class TrainConfig:
    effective_batch: int = 128  # samples per optimizer step, whatever the process count
    # samples per forward pass and process, at most: accumulation fills the rest; a process whose share of
    # the effective batch is smaller runs its share in one pass (e.g. 128 over 16 GPUs: 8 each)
    micro_batch: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_frac: float = 0.05  # of the steps up to the last milestone
    # the trunk's rate after warm-up: "constant" (the paper's protocol for section 4.4), "cosine" or
    # "linear" to min_lr_ratio at the last milestone, "wsd" (constant, then linear to zero over the
    # last decay_frac of the steps: one run annealed at its end); see shared/training/schedule.py
    schedule: Literal["cosine", "constant", "linear", "wsd"] = "constant"
    min_lr_ratio: float = 0.1
    decay_frac: float = 0.2  # schedule "wsd" only
    # > 0: every milestone is the end of a cooldown branch off a constant-rate trunk, decaying the
    # rate linearly to zero over this fraction of the milestone's samples, on the same data the
    # trunk sees there; the trunk continues undecayed (costs this fraction of sum(milestones))
    milestone_cooldown: float = 0.0
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
    # bit-identical reruns on CUDA: TF32 off (matmul, cuDNN), deterministic kernels (warning on ops that have
    # none), CUBLAS_WORKSPACE_CONFIG set. Costs GPU throughput (fp32 parts at fp32 speed, slower backward
    # kernels; shared/training/determinism.py); CPU runs are bit-identical either way. Recorded in
    # precision.json, not compared: like the layout, it is how a run computes, not what it trains
    deterministic: bool = False
    threads: int = 0  # torch threads; 0 = all cores
    log_every: int = 10  # optimizer steps between log lines
    resume_every: int = 100  # optimizer steps between resume points (besides milestones); 0 = off
    # minutes of training between resume points (0 = off), checked at log steps and decided by rank 0:
    # at paper scale a VLM resume point is ~15 GB, so every N steps would write terabytes
    resume_every_min: float = 0.0
    # how the trainee is laid out over processes: "ddp" (replicated; gradients all-reduced; Accelerate) or
    # "fsdp2" (torch fully_shard per trainable transformer block: weights, gradients and AdamW states
    # sharded; frozen parts replicated). One numeric recipe either way (shared/training/parallel.py): a
    # layout is not part of the experiment, so it is recorded in precision.json, not compared as a key
    parallel: Literal["ddp", "fsdp2"] = "ddp"
    # collectives wait this long for the slowest process (rank 0 alone fits decoders, scores CIDEr and
    # writes reports while the others wait) before the run fails with a timeout error
    process_group_timeout_min: float = 120.0


@dataclass
class EvalSetSpec:
    """One evaluation set of ``eval.sets``: a manifest and the task it is scored on (section 4.4
    averages CIDEr over its captioning sets and top-5 over its classification sets)."""

    manifest: str
    name: str | None = None  # default: the manifest's file name
    task: Literal["caption", "classify", "both"] = "both"


@dataclass
class EvalConfig:
    split: Literal["val", "test"] = "test"
    # Extra evaluation sets (manifest JSONL files; their clips of ``split`` are used), averaged as
    # the paper averages YouCook2 / MSR-VTT / PVD-Bench. Empty = the training data's own split.
    # Each entry: a manifest path (scored on both tasks) or {manifest, name, task: caption|classify|both};
    # each metric is averaged over the sets of its task.
    sets: list[str | EvalSetSpec] = field(default_factory=list)
    max_clips: int = 0  # 0 = the whole split (per set)
    batch_size: int = 64
    # longest caption, in tokens of the shared tokenizer (the base LM's) for every arm: a decoder
    # with a tokenizer of its own (SONAR's) generates up to twice as many of its tokens and the
    # caption is cut to this length in the shared unit
    caption_max_tokens: int = 24
    retrieval: bool = True  # text-to-video recall@1 for arms that implement embed()
    # top-k over phrasings ("top5_phrasings"): each label worded in the same `phrasings` sentence forms
    # of the data's grammar (synthetic data: the canonical text and phrasings - 1 others, the same
    # template and synonym positions for every label) and scored by the mean over them, so an arm is
    # not judged on one wording it may never have been trained to produce; "top5" stays the canonical
    # text's. Scoring K phrasings costs the VLM ~K^2/2 times the canonical scoring, so by default it
    # runs at the last milestone only ("all": every milestone). Manifest data has one text per label.
    phrasings: int = 4
    phrasings_at: Literal["last", "all"] = "last"


@dataclass
class LatencyConfig:
    """``latency``: timed repeats after untimed warm-up runs, each repeat's time kept."""

    frames: int = 64
    repeats: int = 100  # timed runs of the single preloaded video (batch 1, the paper's Figure 3)
    warmup: int = 5  # untimed runs before every measurement (allocation, kernel selection, caches)
    caption_tokens: int = 16  # tokens generated per decode (forced, for comparable timing)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])  # the sweep: that many copies of the video
    sweep_repeats: int = 10  # timed runs at each batch size of the sweep but 1 (which is the run above)


@dataclass
class SelectiveConfig:
    """Selective decoding of long streams (the paper's section 4.5)."""
    arm: str = "jepa"  # an arm with embed() and decode_embeddings()
    window_s: float = 2.0  # each window's span; its data.frames frames are spread uniformly over it
    hop_s: float = 0.5  # window centres every hop_s seconds: 1 / hop_s is the highest decoding rate
    # decoding rates swept, from the paper's 2 Hz to 0.01 Hz, about 1.4x apart: the rate matching uniform
    # 1 Hz is interpolated between the two that bracket it (experiments/selective_report.py)
    frequencies_hz: list[float] = field(default_factory=lambda: [2.0, 1.4, 1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08,
                                                                 0.05, 0.035, 0.02, 0.01])
    poolings: list[Literal["exact", "mean"]] = field(default_factory=lambda: ["exact", "mean"])
    batch_windows: int = 64  # windows read, encoded and embedded at a time


@dataclass
class LogConfig:
    """Experiment trackers (shared/tracking.py): training scalars by step, evaluation rows by samples
    seen, the resolved config as hyperparameters. Does not change what is trained."""

    # accelerate's trackers: tensorboard, wandb, trackio, aim, mlflow, comet_ml (the others are
    # extras: pip install 'jepa-vs-vlm[wandb]'), or a name registered with accelerate
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    project: str = "jepa-vs-vlm"  # the wandb / comet / trackio project, the mlflow experiment
    offline: bool = False  # wandb and comet write locally (sync later), for machines without network


@dataclass
class ReportConfig:
    """report.md (experiments/report.py): how the arms are compared. Does not change what is trained."""

    # the arm every other arm is compared with: each difference is reference − arm, with its 95% interval,
    # and trainable-parameter ratios are reference / arm. None = the first of `arms`
    reference: str | None = None


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
    text_pretraining: TextPretrainingConfig = field(default_factory=TextPretrainingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    selective: SelectiveConfig = field(default_factory=SelectiveConfig)
    log: LogConfig = field(default_factory=LogConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
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
