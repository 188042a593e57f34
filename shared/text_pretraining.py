"""Text knowledge learned from the training captions alone: the embedded analog of Llama + SONAR.

In the paper's controlled comparison (section 4.4) both arms start from pretrained text knowledge:
the VLM's LM is Llama-3.2-1B, the JEPA predictor is initialised from its layers 8-16, and the JEPA
arm predicts into SONAR, a sentence space where paraphrases sit together. With no hub here, this
stage learns both from the training split's caption *groups* (the captions of one clip), before
any arm trains, with no video, no labels and no val/test text:

- the base LM (``lm.weights: captions``): next-token prediction on each group's captions in
  sequence (``<s> c1 </s> c2 </s> ...``); both arms start from it as from a pretrained Llama;
- the Y-encoder (``<arm>.y_encoder.weights: captions``): a small transformer encoder, mean-pooled,
  trained with symmetric InfoNCE on pairs of captions of one group, then frozen as the target
  space: paraphrases of one clip are pulled together, so the space abstracts their wording.

Both are seeded (``text_pretraining.seed``, the same for every training seed, as a pretrained
checkpoint is), cached by corpus, tokenizer, recipe and precision under ``cache_dir``, saved as
Hugging Face folders (loaded through the same ``from_pretrained`` paths as real weights), and
described in ``record.json``: steps, seconds, training FLOPs (the compute axis counts them) and
what they reach on the val split (the LM's loss per token; the encoder's paraphrase retrieval).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM, BertConfig, BertModel

from shared import processes
from shared.config import Config
from shared.data.sources import ClipSource, Dataset, digest
from shared.files import read_json, write_json_atomic
from shared.lm import CAPTIONS, llama_config  # the weights value that asks for this stage's models; the LM's shape
from shared.progress import progress_bar

log = logging.getLogger(__name__)
VAL_GROUPS = 256  # val clips the record's measurements use (reporting only: never trained on)


@dataclass
class TextKnowledge:
    """Folders of the caption-pretrained models a config asks for (None: not asked) and their records."""

    lm: Path | None = None
    y_encoder: Path | None = None
    records: dict = field(default_factory=dict)  # {"lm": record, "y_encoder": record}


def asks_lm(cfg: Config) -> bool:
    return cfg.lm.weights == CAPTIONS


def y_encoder_sections(cfg: Config) -> list:
    """The Y-encoder sections (of arms and variants alike) that ask for the caption-pretrained encoder."""
    return [s.y_encoder for s in cfg.arm.values()
            if getattr(getattr(s, "y_encoder", None), "weights", None) == CAPTIONS]


def train_groups(source: ClipSource) -> list[tuple[str, ...]]:
    """The caption groups of a split, one per clip with at least two captions for the encoder's pairs
    (the LM takes every group). Only the training split is ever passed here for training."""
    return [source.clip(i).captions for i in range(len(source))]


def y_encoder_architecture(cfg: Config, vocab_size: int, pad_token_id: int = 0) -> BertConfig:
    e = cfg.text_pretraining.y_encoder
    return BertConfig(vocab_size=vocab_size, hidden_size=e.hidden_size, num_hidden_layers=e.num_layers,
                      num_attention_heads=e.num_heads, intermediate_size=4 * e.hidden_size,
                      max_position_embeddings=e.max_length, pad_token_id=pad_token_id,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _tokenizer_key(tokenizer) -> str:
    """The tokenizer's identity: its model, normalizer and special tokens, not the padding and truncation
    state that calls leave behind in the backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    else:
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
        text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(cfg: Config, role: str, train: ClipSource, tokenizer, precision: str) -> str:
    tp = cfg.text_pretraining
    recipe = dataclasses.asdict(getattr(tp, role))
    arch = {k: v for k, v in dataclasses.asdict(cfg.lm).items() if k not in ("weights", "tokenizer")} if role == "lm" else {}
    return digest("text-pretraining-v1", role, train.text_key, _tokenizer_key(tokenizer), tp.seed,
                  json.dumps(recipe, sort_keys=True), json.dumps(arch, sort_keys=True), precision)


def prepare_text_knowledge(cfg: Config, dataset: Dataset, tokenizer, runtime) -> TextKnowledge | None:
    """The caption-pretrained models ``cfg`` asks for, trained once (rank 0 first) and cached."""
    roles = [r for r, asked in (("lm", asks_lm(cfg)), ("y_encoder", bool(y_encoder_sections(cfg)))) if asked]
    if not roles:
        return None
    train = dataset.split("train")
    out = TextKnowledge()
    with processes.state().main_process_first():
        groups = None
        for role in roles:
            folder = cfg.cache_path / "text_pretraining" / role / cache_key(cfg, role, train, tokenizer,
                                                                              runtime.precision.resolved)
            if not (folder / "record.json").is_file():
                groups = groups if groups is not None else train_groups(train)
                val = _val_groups(dataset)
                trainer = pretrain_lm if role == "lm" else pretrain_y_encoder
                tmp = folder.with_name(folder.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                record = trainer(cfg, groups, val, tokenizer, runtime, tmp)
                write_json_atomic(tmp / "record.json", record)
                if folder.exists():
                    shutil.rmtree(folder)
                tmp.replace(folder)
            setattr(out, role, folder)
            out.records[role] = read_json(folder / "record.json")
    return out


def _val_groups(dataset: Dataset) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """(groups, labels) of the first val clips: what the record measures, never what trains."""
    val = dataset.split("val")
    n = min(VAL_GROUPS, len(val))
    return [val.clip(i).captions for i in range(n)], np.asarray(val.labels()[:n])


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


# ---- the base LM ------------------------------------------------------------------------------
def _group_ids(groups, tokenizer, order_rng: np.random.Generator, max_tokens: int) -> list[list[int]]:
    out = []
    for g in groups:
        ids = [tokenizer.bos_token_id]
        for j in order_rng.permutation(len(g)):
            ids += tokenizer(g[j], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append(ids[:max_tokens])
    return out


def _pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def _lm_loss(model, seqs, pad) -> tuple[torch.Tensor, int]:
    ids, mask = _pad(seqs, pad)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    labels = ids.masked_fill(mask == 0, -100)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss, int(mask[:, 1:].sum())


@torch.no_grad()
def _lm_val_loss(model, seqs, pad, runtime) -> float | None:
    if not seqs:  # a dataset with no val split: nothing to measure on (training is unaffected)
        return None
    model.eval()
    total = tokens = 0.0
    with runtime.autocast():
        for i in range(0, len(seqs), 64):
            loss, n = _lm_loss(model, seqs[i:i + 64], pad)
            total, tokens = total + float(loss) * n, tokens + n
    model.train()
    return total / max(tokens, 1)


def format_measurement(value: float | None, spec: str = ".2f") -> str:
    """A val measurement for the log and the report; "n/a" where the dataset has no val split."""
    return "n/a (no val split)" if value is None else format(value, spec)


def pretrain_lm(cfg: Config, groups, val, tokenizer, runtime, folder: Path) -> dict:
    c = cfg.text_pretraining.lm
    seed = cfg.text_pretraining.seed
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20_000 + seed)
        model = AutoModelForCausalLM.from_config(llama_config(cfg, tokenizer)).to(runtime.device)
    val_seqs = _group_ids(val[0], tokenizer, np.random.default_rng(0), c.max_tokens)
    untrained = _lm_val_loss(model, val_seqs, tokenizer.pad_token_id, runtime)
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=(0.9, 0.95), weight_decay=0.05)
    t0, flops_per_token, tokens_seen, losses = time.perf_counter(), 0.0, 0, []
    order = np.concatenate([rng.permutation(len(groups)) for _ in range(c.steps * c.batch_size // len(groups) + 1)])
    for step in progress_bar(range(c.steps), desc="text pretraining: LM", unit="step", leave=False):
        for g in opt.param_groups:
            g["lr"] = c.lr * _schedule(step, c.steps, max(1, c.steps // 20))
        pick = order[step * c.batch_size:(step + 1) * c.batch_size]
        seqs = _group_ids([groups[i] for i in pick], tokenizer, rng, c.max_tokens)
        counter = FlopCounterMode(display=False) if step == 0 else None  # the first step's FLOPs, per token
        with counter or contextlib.nullcontext():
            with runtime.autocast():
                loss, _ = _lm_loss(model, seqs, tokenizer.pad_token_id)
            loss.backward()
        if counter is not None:
            flops_per_token = counter.get_total_flops() / max(1, sum(len(s) for s in seqs))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens_seen += sum(len(s) for s in seqs)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    record = {"role": "lm", "steps": c.steps, "groups": len(groups), "tokens": tokens_seen,
              "seconds": round(seconds, 1), "train_flops": flops_per_token * tokens_seen,
              "params": sum(p.numel() for p in model.parameters()),
              "train_loss_last": float(np.mean(losses[-10:])),
              "val_loss_per_token": _lm_val_loss(model, val_seqs, tokenizer.pad_token_id, runtime),
              "val_loss_per_token_untrained": untrained, "precision": runtime.precision.resolved}
    log.info("text pretraining: LM %d steps in %.0f s, val loss %s nats/token (untrained %s)", c.steps,
             seconds, format_measurement(record["val_loss_per_token"]), format_measurement(untrained))
    return record


# ---- the Y-encoder ----------------------------------------------------------------------------
def _encode(model, texts: list[str], tokenizer, max_length: int) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    mask = enc["attention_mask"].to(device)
    hidden = model(input_ids=enc["input_ids"].to(device), attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize(((hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)).float(), dim=-1)


@torch.no_grad()
def paraphrase_retrieval(embed, groups, labels: np.ndarray) -> dict:
    """The share of the captions of ``groups`` whose nearest other caption has the same meaning (label);
    val only, for the record."""
    texts = [t for g in groups for t in g]
    if len(texts) < 2:  # no val split (or one caption): nothing to measure on
        return {"paraphrase_nn_same_meaning": None, "val_captions": len(texts)}
    owner = np.repeat(labels, [len(g) for g in groups])
    emb = torch.cat([embed(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    nearest = owner[sim.argmax(1).numpy()]
    return {"paraphrase_nn_same_meaning": float(np.mean(nearest == owner)), "val_captions": len(texts)}


def pretrain_y_encoder(cfg: Config, groups, val, tokenizer, runtime, folder: Path) -> dict:
    c = cfg.text_pretraining.y_encoder
    seed = cfg.text_pretraining.seed
    pairs = [g for g in groups if len(g) >= 2]
    if not pairs:
        raise ValueError("text_pretraining: the Y-encoder pairs captions of one clip; no training clip has two")
    rng = np.random.default_rng(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(30_000 + seed)
        model = BertModel(y_encoder_architecture(cfg, len(tokenizer), tokenizer.pad_token_id), add_pooling_layer=False).to(runtime.device)

    def embed(texts):
        model.eval()
        with runtime.autocast():
            out = _encode(model, texts, tokenizer, c.max_length).cpu()
        model.train()
        return out

    untrained = paraphrase_retrieval(embed, *val)
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=(0.9, 0.98), weight_decay=0.01)
    t0, flops, losses = time.perf_counter(), 0.0, []
    for step in progress_bar(range(c.steps), desc="text pretraining: Y-encoder", unit="step", leave=False):
        for g in opt.param_groups:
            g["lr"] = c.lr * _schedule(step, c.steps, max(1, c.steps // 10))
        pick = rng.choice(len(pairs), size=min(c.batch_size, len(pairs)), replace=False)
        two = [rng.choice(len(pairs[i]), size=2, replace=False) for i in pick]
        a = [pairs[i][j[0]] for i, j in zip(pick, two)]
        b = [pairs[i][j[1]] for i, j in zip(pick, two)]
        counter = FlopCounterMode(display=False) if step == 0 else None
        with counter or contextlib.nullcontext():
            with runtime.autocast():
                za, zb = _encode(model, a, tokenizer, c.max_length), _encode(model, b, tokenizer, c.max_length)
            logits = za @ zb.T / c.temperature
            target = torch.arange(len(a), device=logits.device)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            loss.backward()
        if counter is not None:
            flops = counter.get_total_flops()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    reached = paraphrase_retrieval(embed, *val)
    record = {"role": "y_encoder", "steps": c.steps, "groups": len(pairs), "seconds": round(seconds, 1),
              "train_flops": flops * c.steps, "params": sum(p.numel() for p in model.parameters()),
              "train_loss_last": float(np.mean(losses[-10:])), **reached,
              "paraphrase_nn_same_meaning_untrained": untrained["paraphrase_nn_same_meaning"],
              "precision": runtime.precision.resolved}
    log.info("text pretraining: Y-encoder %d steps in %.0f s; val paraphrase retrieval %s (untrained %s)",
             c.steps, seconds, format_measurement(reached["paraphrase_nn_same_meaning"], ".1%"),
             format_measurement(untrained["paraphrase_nn_same_meaning"], ".1%"))
    return record


def text_pretraining_flops(prepared, arm_name: str) -> float:
    """The text pretraining FLOPs an arm's start rests on: the base LM's (every arm builds on it) and the
    caption-pretrained Y-encoder's where the arm's section asks for it. Shared models count in full for
    each arm that uses them: each arm's curve carries what it took to get there."""
    text = prepared.text
    if text is None:
        return 0.0
    section = prepared.cfg.arm_config(arm_name)
    used = ["lm"] if asks_lm(prepared.cfg) else []
    if getattr(getattr(section, "y_encoder", None), "weights", None) == CAPTIONS:
        used.append("y_encoder")
    return float(sum(text.records.get(role, {}).get("train_flops", 0.0) for role in used))

