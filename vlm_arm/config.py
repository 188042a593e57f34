"""The VLM arm's config section (``vlm:`` in a preset)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class VlmConfig:
    projector_pool: int = 1  # PerceptionLM's 2D average pooling of each frame's tokens after the projector (1 = none)
    lora: bool = False  # train LoRA adapters (peft) instead of the whole LM; the projector stays trainable
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    num_beams: int = 1  # captioning beam size (1 = greedy)
    # classification by perplexity: "mean" ranks by mean token NLL of the candidate (perplexity),
    # "sum" by its total NLL (favours short candidates)
    length_norm: Literal["mean", "sum"] = "mean"
    score_eos: bool = True  # include the end-of-text token in a candidate's likelihood
    score_chunk: int = 2048  # (clip, candidate-trie node) pairs per forward pass when scoring: bounds memory
    # nodes per candidate trie: more candidates are scored in groups of neighbours sharing the clip's
    # prefix cache. Small groups: a node attends to the prefix and its group, so the tree attention
    # (quadratic in the group) stays a small part of the forward. 576 candidates x 64 clips on an
    # AVX2 core: 31.6 s at 512 nodes (attention and its mask ~60% of it), 11.9 s at 64; the same
    # scores up to fp32 rounding of the shorter attention rows (max 2e-6 in a summed log-probability)
    trie_nodes: int = 64
