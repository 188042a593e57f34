"""The Y-decoder: a predicted embedding -> text, used only when text is needed (evaluation).

Embedded default: a small Llama-architecture decoder trained by the suite, text only, to
reconstruct each *training* caption from its Y-encoder embedding (plus noise, so it tolerates
prediction error). It is trained once per (Y-encoder, corpus, decoder config, tokenizer) and
cached. Its reconstruction CIDEr on held-out captions bounds the arm's captioning score.
Real path: SONAR's text decoder (M2M100ForConditionalGeneration), the embedding passed as a
length-1 encoder output and decoding forced to start with the ``eng_Latn`` language token.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    M2M100Config,
    M2M100ForConditionalGeneration,
)
from transformers.modeling_outputs import BaseModelOutput

from shared.text_side.config import YDecoderConfig
from shared.text_side.y_encoder import ARCHITECTURES
from shared.files import atomic_path, write_json_atomic
from shared.precision import autocast
from shared.progress import progress_bar

log = logging.getLogger(__name__)


class TrainedDecoder(nn.Module):
    def __init__(self, emb_dim: int, tokenizer, cfg: YDecoderConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
            max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            attn_implementation=attn_implementation)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.lm = LlamaForCausalLM(config)
            self.prefix = nn.Linear(emb_dim, cfg.prefix_tokens * cfg.hidden_size)

    def _prefix(self, emb: torch.Tensor) -> torch.Tensor:
        """Soft prefix tokens from the embedding, then BOS: [B, P + 1, H]."""
        p = self.prefix(F.normalize(emb.float(), dim=-1)).view(len(emb), self.cfg.prefix_tokens, -1)
        bos = self.lm.get_input_embeddings()(torch.full((len(emb), 1), self.tokenizer.bos_token_id, device=emb.device))
        return torch.cat([p, bos.to(p.dtype)], dim=1)

    def loss(self, emb: torch.Tensor, captions: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        ids = [t + [tok.eos_token_id] for t in tok(captions, add_special_tokens=False)["input_ids"]]
        L = max(map(len, ids))
        labels = torch.full((len(ids), L), -100)
        inp = torch.full((len(ids), L), tok.pad_token_id)
        for i, t in enumerate(ids):
            labels[i, : len(t)] = torch.tensor(t)
            inp[i, : len(t)] = torch.tensor(t)
        prefix = self._prefix(emb)
        labels, inp = labels.to(prefix.device), inp.to(prefix.device)
        x = torch.cat([prefix, self.lm.get_input_embeddings()(inp)], dim=1)
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
                          (labels != -100).long()], dim=1)
        # position P (BOS) predicts the first caption token; labels shift inside the model
        full_labels = torch.cat([torch.full(prefix.shape[:2], -100, device=prefix.device), labels], dim=1)
        return self.lm(inputs_embeds=x, attention_mask=mask, labels=full_labels).loss

    @torch.no_grad()
    def generate(self, emb: torch.Tensor, max_new_tokens: int, min_new_tokens: int = 0) -> list[str]:
        prefix = self._prefix(emb)
        out = self.lm.generate(
            inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def fit(decoder: TrainedDecoder, embeddings: torch.Tensor, captions: list[str], precision: str,
        progress: bool = True) -> list[float]:
    """Text-only training: reconstruct each caption from its (noised) embedding, under the run's
    resolved precision (no, bf16, fp16)."""
    cfg = decoder.cfg
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    decoder.train()
    with torch.enable_grad():  # may be called from inside an evaluation's no_grad
        return _fit_steps(decoder, embeddings, captions, cfg, opt, sched, gen, losses, progress, precision)


def _fit_steps(decoder, embeddings, captions, cfg, opt, sched, gen, losses, progress, precision) -> list[float]:
    for _ in progress_bar(range(cfg.steps), desc="train Y-decoder", unit="step", leave=False, disable=not progress):
        idx = torch.randint(len(captions), (cfg.batch_size,), generator=gen)
        emb = embeddings[idx]
        emb = emb + (cfg.noise * torch.randn(emb.shape, generator=gen) / emb.shape[1] ** 0.5).to(emb.device)
        with autocast(precision, embeddings.device.type):
            loss = decoder.loss(emb, [captions[i] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    decoder.eval()
    return losses


def decoder_key(y_fingerprint: str, corpus: list[str], cfg: YDecoderConfig, tokenizer, precision: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([y_fingerprint, sorted(set(corpus)), vars(cfg), precision], sort_keys=True, default=str).encode())
    h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def load_or_train(emb_dim: int, tokenizer, cfg: YDecoderConfig, y_fingerprint: str, corpus: list[str],
                  embed_texts, cache_root: Path, attn_implementation: str, precision: str,
                  device: torch.device | str = "cpu") -> tuple[TrainedDecoder, dict]:
    """The cached decoder for this (Y-encoder, corpus, resolved precision: a decoder fitted in bf16 is
    not the fp32 one), training it first if needed, on ``device``."""
    folder = Path(cache_root) / "y_decoders" / decoder_key(y_fingerprint, corpus, cfg, tokenizer, precision)
    decoder = TrainedDecoder(emb_dim, tokenizer, cfg, attn_implementation).to(device)
    if (folder / "model.safetensors").is_file():
        load_model(decoder, str(folder / "model.safetensors"), device="cpu")
        decoder.to(device)
        return decoder.eval(), json.loads((folder / "meta.json").read_text())
    texts = sorted(set(corpus))
    t0 = time.perf_counter()
    losses = fit(decoder, embed_texts(texts), texts, precision=precision)
    meta = {"budget": "corpus", "train_texts": len(texts), "steps": cfg.steps, "precision": precision,
            "samples": cfg.steps * cfg.batch_size, "decoder_params": sum(p.numel() for p in decoder.parameters()), "final_loss": sum(losses[-20:]) / len(losses[-20:]),
            "train_s": round(time.perf_counter() - t0, 2)}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_model(decoder, str(tmp))  # handles the tied input/output embeddings
    write_json_atomic(folder / "meta.json", meta)
    log.info("trained the Y-decoder on %d captions in %.0fs (final loss %.3f)", len(texts), meta["train_s"], meta["final_loss"])
    return decoder, meta


class SonarDecoder(nn.Module):
    """SONAR text decoder: embedding -> text, via transformers' M2M100ForConditionalGeneration."""

    def __init__(self, weights: str, lang: str = "eng_Latn", tokenizer=None, tokenizer_source: str | None = None):
        """``tokenizer_source``: where the tokenizer is when the decoder's repository ships none (the
        converted SONAR decoders share the encoder's); None = the decoder's own."""
        super().__init__()

        if weights == "random":  # SONAR's architecture, random weights, the shared tokenizer: timing only

            config = M2M100Config(**ARCHITECTURES["sonar"][1], decoder_start_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.model = M2M100ForConditionalGeneration(config).eval()
            self.tokenizer, self.lang_id = tokenizer, tokenizer.bos_token_id
            return
        self.model = M2M100ForConditionalGeneration.from_pretrained(weights).eval()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source or weights)
        except (OSError, ValueError, TypeError) as e:  # TypeError: a config naming a tokenizer whose files are absent
            raise ValueError(f"y_decoder: no tokenizer in {tokenizer_source or weights} ({e}); point "
                             "the arm's y_decoder.tokenizer (jepa.y_decoder.tokenizer by default) at the SONAR encoder's repository or folder") from None
        self.lang_id = self.tokenizer.convert_tokens_to_ids(lang)

    @torch.no_grad()
    def generate(self, emb: torch.Tensor, max_new_tokens: int, min_new_tokens: int = 0) -> list[str]:
        emb = emb.to(self.model.device)
        enc = BaseModelOutput(last_hidden_state=emb.float().unsqueeze(1))
        out = self.model.generate(encoder_outputs=enc, attention_mask=torch.ones(len(emb), 1, dtype=torch.long, device=emb.device),
                                  forced_bos_token_id=self.lang_id, max_new_tokens=max_new_tokens,
                                  min_new_tokens=min_new_tokens, num_beams=1, do_sample=False)
        out = out % len(self.tokenizer)  # a random model's ids may exceed a stand-in tokenizer
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
