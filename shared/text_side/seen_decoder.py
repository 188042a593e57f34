"""The Y-decoder's fair budget: one pass over the captions the arm saw up to a checkpoint.

At a checkpoint that has seen S samples, the decoder has trained on exactly the S target captions at
training positions [0, S), in the training order, in batches aligned to absolute positions, with
noise seeded by the batch's position. So fitting [0, S) in one go or continuing [0, S') with
[S', S) gives the same decoder: each checkpoint's decoder is cached (weights, optimizer, step) and
the next one continues from it, as long as the target space is the same; a changed space (a
trainable Y-encoder or head) keys a new cache and starts from scratch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_model, save_model

from shared.text_side.config import YDecoderConfig
from shared.text_side.y_decoder import TrainedDecoder
from shared.files import write_json_atomic
from shared.precision import autocast
from shared.progress import progress_bar

log = logging.getLogger(__name__)


def _key(space: str, stream: str, cfg: YDecoderConfig, tokenizer, precision: str) -> str:
    h = hashlib.sha256(json.dumps([space, stream, vars(cfg), precision], sort_keys=True, default=str).encode())
    h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _latest(folder: Path, samples: int) -> int:
    """The largest cached fit at or below ``samples`` (0 = none)."""
    done = [int(p.name.split("_")[1]) for p in folder.glob("samples_*") if (p / "meta.json").is_file()]
    return max([s for s in done if s <= samples], default=0)


def fit_on_seen(emb_dim: int, tokenizer, cfg: YDecoderConfig, space: str, stream: str, samples: int,
                seen_captions: Callable[[int, int], list[str]], embed_texts: Callable[[list[str]], torch.Tensor],
                cache_root: Path, attn_implementation: str, precision: str, device) -> tuple[TrainedDecoder, dict]:
    """The decoder trained on the captions at positions [0, ``samples``) of the training stream
    ``stream`` (its identity), in the target space ``space`` (its identity), under the run's resolved
    ``precision`` (no, bf16, fp16: a decoder fitted in bf16 is not the fp32 one)."""
    folder = Path(cache_root) / "y_decoders" / f"seen-{_key(space, stream, cfg, tokenizer, precision)}"
    start = _latest(folder, samples)
    decoder = TrainedDecoder(emb_dim, tokenizer, cfg, attn_implementation).to(device)
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=0.01)
    meta = {"budget": "seen", "samples": 0, "steps": 0, "captions_sha256": hashlib.sha256().hexdigest(),
            "decoder_params": sum(p.numel() for p in decoder.parameters())}
    if start:
        prev = folder / f"samples_{start:010d}"
        load_model(decoder, str(prev / "model.safetensors"), device="cpu")
        decoder.to(device)
        opt.load_state_dict(torch.load(prev / "optimizer.pt", map_location="cpu", weights_only=True))
        meta = json.loads((prev / "meta.json").read_text())
    if start < samples:
        t0 = time.perf_counter()
        meta = _train(decoder, opt, cfg, meta, start, samples, seen_captions, embed_texts, precision)
        meta.update(resumed_from=start, train_s=round(time.perf_counter() - t0, 2))
        out = folder / f"samples_{samples:010d}"
        out.mkdir(parents=True, exist_ok=True)
        save_model(decoder, str(out / "model.safetensors"))
        torch.save(opt.state_dict(), out / "optimizer.pt")
        write_json_atomic(out / "meta.json", meta)  # written last: a fit without it is ignored
        log.info("Y-decoder: trained on the %d captions seen up to %d samples (%d steps, from %d) in %.0fs",
                 samples - start, samples, meta["steps"], start, meta["train_s"])
    return decoder.eval(), meta


def _train(decoder: TrainedDecoder, opt, cfg: YDecoderConfig, meta: dict, start: int, stop: int,
           seen_captions, embed_texts, precision: str) -> dict:
    bs = cfg.batch_size
    digest = bytes.fromhex(meta["captions_sha256"])  # chained over positions [0, stop): see captions_digest
    step = meta["steps"]
    decoder.train()
    batches = range(start // bs, -(-stop // bs))
    with torch.enable_grad():
        for k in progress_bar(batches, desc="train Y-decoder", unit="step", leave=False):
            lo, hi = max(start, k * bs), min(stop, (k + 1) * bs)
            captions = seen_captions(lo, hi)
            digest = captions_digest(captions, digest)
            with torch.no_grad():
                emb = embed_texts(captions).float()
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)  # a batch's noise is its position's
            emb = emb + (cfg.noise * torch.randn(emb.shape, generator=gen) / emb.shape[1] ** 0.5).to(emb.device)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            with autocast(precision, emb.device.type):
                loss = decoder.loss(emb, captions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            step += 1
    return {**meta, "samples": stop, "steps": step, "captions_sha256": digest.hex(), "final_loss": float(loss.detach())}


def captions_digest(captions: list[str], previous: bytes | None = None) -> bytes:
    """A chained hash of the captions a decoder trained on, in order (recorded in its meta)."""
    digest = previous if previous is not None else hashlib.sha256().digest()
    for c in captions:
        digest = hashlib.sha256(digest + c.encode()).digest()
    return digest
