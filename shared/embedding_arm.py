"""The base of an embedding arm: an arm that predicts into a target text space, with its whole text side.

Subclass ``EmbeddingArm`` and implement two hooks, ``build_predictor`` (the module, built once) and
``predict`` (visual tokens and queries -> one vector per clip); the base gives the rest, the same for
every embedding arm: the Y-encoder (the target space), ``loss`` (InfoNCE over the effective batch by
default, or the section's cosine / L1 / L2), captions through the Y-decoder trained on the captions
the arm saw by each checkpoint, classification by cosine to the label texts' embeddings, retrieval
(R@1), selective decoding, the decoder ceiling, latency stages, FLOPs outside the step, and the
decoder's numbers in each metrics row (``evaluation_info``). Its section subclasses
``EmbeddingArmConfig``: the target space and Y-decoder (``SHARED_TEXT_SIDE``) are taken from the
``jepa`` section unless the arm's own section sets them, so embedding arms are decoded alike.

When each hook runs: ``__init__`` (via ``build_predictor``) when the arm is built (training, loading a
checkpoint, the meta device for FLOPs and memory); ``prepare_training`` once before the first step
(embeds the training captions into the disk cache); ``loss`` / ``embeddings`` + ``coupled_loss`` in
every step; ``set_progress`` then ``prepare_evaluation`` before each checkpoint is evaluated (fits the
Y-decoder on the captions seen so far); ``evaluation_info`` after, for the metrics row.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from shared.arm import Arm, ArmContext, Batch
from shared.config import ConfigError
from shared.text_pretraining import CAPTIONS, y_encoder_architecture
from shared.text_side.config import (  # noqa: F401 - an embedding arm's section subclasses these
    SHARED_TEXT_SIDE,
    EmbeddingArmConfig,
    TextSideConfig,
    YEncoderConfig,
)
from shared.text_side.losses import embedding_loss, same_text_mask
from shared.text_side.seen_decoder import fit_on_seen
from shared.text_side.y_decoder import SonarDecoder, TrainedDecoder, load_or_train
from shared.text_side.y_encoder import TextEmbeddingCache, YEncoder

log = logging.getLogger(__name__)


def build_y_encoder(ctx: ArmContext, c: YEncoderConfig) -> YEncoder:
    """The Y-encoder of section ``c`` on the context's device; ``weights: captions`` is the encoder the
    text pretraining stage trained on the training captions (on the meta device: its architecture)."""
    if c.weights != CAPTIONS:
        return YEncoder(c, ctx.device, tokenizer=ctx.tokenizer)
    if ctx.device.type == "meta":
        vocab = len(ctx.tokenizer) if ctx.tokenizer is not None else ctx.cfg.lm.vocab_size
        return YEncoder(c, ctx.device, tokenizer=ctx.tokenizer, architecture=y_encoder_architecture(ctx.cfg, vocab))
    if ctx.text is None or ctx.text.y_encoder is None:
        raise ConfigError("y_encoder.weights=captions: the caption-pretrained encoder is made by the pipeline "
                          "(shared/pipeline.py: prepare); this context has none")
    # That folder holds a BERT without the pooler AutoModel adds (the encoder mean-pools and never calls it):
    # transformers' load report would say "pooler MISSING" on every load, so it is kept out of the terminal
    # here, for this folder only. The pooler is still initialised as before (it draws from the seeded RNG).
    with _transformers_errors_only():
        return YEncoder(dataclasses.replace(c, weights=str(ctx.text.y_encoder)), ctx.device, tokenizer=ctx.tokenizer)


@contextlib.contextmanager
def _transformers_errors_only():
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


class EmbeddingArm(Arm):
    """Predicts the target caption's embedding; the text side (Y-encoder, loss, Y-decoder) is this class's."""

    capabilities = frozenset({"embed", "decode_embeddings", "reconstruct_texts", "inference_stages", "coupled_loss"})

    def __init__(self, ctx: ArmContext):
        super().__init__(ctx)
        c: TextSideConfig = self.arm_cfg
        if c.y_encoder.trainable and c.loss != "infonce":
            log.warning("%s: a trainable Y-encoder with the %s loss can collapse (only InfoNCE has a uniformity term)",
                        self.name, c.loss)
        self.tokenizer = ctx.tokenizer
        self.y_encoder = build_y_encoder(ctx, c.y_encoder)
        self.predictor = self.build_predictor(ctx, c.shared_dim or self.y_encoder.dim)
        # bias-free: a linear map, so a direction predicted in the shared space maps back to a direction
        # of the Y-encoder's space (how the SONAR decoder reads it; see _decode)
        self.y_head = nn.Linear(self.y_encoder.dim, c.shared_dim, bias=False, device=ctx.device) if c.shared_dim else None
        if c.shared_dim and c.y_decoder.kind == "sonar" and c.shared_dim < self.y_encoder.dim:
            raise ConfigError(f"{self.name}.shared_dim={c.shared_dim}: the SONAR decoder reads predictions mapped back "
                              f"through the Y-head, which needs shared_dim >= the Y-encoder's {self.y_encoder.dim} dimensions")
        self._text_cache: TextEmbeddingCache | None = None
        self.decoder = None
        self._decoder_key: tuple | None = None
        self.decoder_meta: dict = {}

    # ---- the two hooks of a new embedding arm --------------------------------------------
    def build_predictor(self, ctx: ArmContext, out_dim: int) -> nn.Module:
        """The module ``predict`` runs, mapping to ``out_dim`` (the target space's width); built in
        ``__init__``, between the Y-encoder and the shared head, on ``ctx.device``."""
        raise NotImplementedError(f"{type(self).__name__}: an embedding arm implements build_predictor")

    def predict(self, visual: torch.Tensor, queries: list[str]) -> torch.Tensor:
        """[B, out_dim] predictions (not normalised) for visual tokens [B, L, D] and the queries."""
        raise NotImplementedError(f"{type(self).__name__}: an embedding arm implements predict")

    # ---- text side -----------------------------------------------------------------------
    def _y_embed(self, texts: list[str]) -> torch.Tensor:
        """Y-encoder embeddings (unit norm) on the arm's device: read from the on-disk text cache when
        the Y-encoder is frozen and ``<arm>.y_encoder.cache`` is on, else computed in the step."""
        c = self.arm_cfg.y_encoder
        if c.trainable:
            return self.y_encoder(texts)
        if not c.cache:
            with torch.no_grad():
                return self.y_encoder(texts)
        if self.ctx.device.type == "meta":  # memory and FLOP estimates: a cached target costs the step nothing
            return torch.zeros(len(texts), self.y_encoder.dim, device="meta")
        if self._text_cache is None:
            self._text_cache = TextEmbeddingCache(self.y_encoder, self.cfg.cache_path)
        return self._text_cache.embed(texts).to(self.ctx.device)

    def target_embeddings(self, texts: list[str]) -> torch.Tensor:
        """S_Y in the space the predictor regresses to."""
        emb = self._y_embed(texts)
        return self.y_head(emb) if self.y_head is not None else emb

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.target_embeddings(texts).float(), dim=-1)

    def prepare_training(self) -> None:
        """Once before training: a frozen, cached Y-encoder embeds every distinct training caption."""
        c = self.arm_cfg.y_encoder
        if not c.trainable and c.cache:  # fill the disk cache once; the steps then read their rows from it
            self._y_embed(list(dict.fromkeys(self.ctx.train_captions())))

    # ---- training ----------------------------------------------------------------------
    def embeddings(self, batch: Batch) -> dict[str, torch.Tensor]:
        pred = self.predict(batch.visual, batch.queries)
        return {"pred": pred, "target": self.target_embeddings(batch.captions).to(pred.device)}

    def coupled_loss(self, parts: dict[str, torch.Tensor], captions: list[str]) -> torch.Tensor:
        c = self.arm_cfg
        pred = parts["pred"]
        same = same_text_mask(captions, pred.device) if c.mask_duplicate_targets else None
        return embedding_loss(c.loss, pred, parts["target"], c.temperature, same)

    def couples_batch(self) -> bool:
        # InfoNCE's negatives are the rest of the batch: the effective batch, not each micro-batch
        return self.arm_cfg.loss == "infonce" and self.arm_cfg.negatives == "effective"

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.coupled_loss(self.embeddings(batch), batch.captions)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        groups = super().param_groups(lr, weight_decay)
        y_params = {id(p) for p in self.y_encoder.parameters()}
        if not self.arm_cfg.y_encoder.trainable:
            return groups
        mult = self.arm_cfg.y_encoder.lr_mult  # the paper's x0.05 for the text encoder
        out = []
        for g in groups:
            own = [p for p in g["params"] if id(p) not in y_params]
            ys = [p for p in g["params"] if id(p) in y_params]
            out += [{**g, "params": own}, {**g, "params": ys, "lr": lr * mult}]
        return [g for g in out if g["params"]]

    # ---- evaluation ----------------------------------------------------------------------
    def _space(self) -> str:
        """Identity of the target space the decoder reads (the Y-encoder's weights and the head's)."""
        space = hashlib.sha256(self.y_encoder.fingerprint().encode())
        if self.y_head is not None:
            space.update(self.y_head.weight.detach().float().cpu().numpy().tobytes())
        return space.hexdigest()[:16]

    def prepare_evaluation(self) -> None:
        dc = self.arm_cfg.y_decoder
        seen = dc.kind == "trained" and dc.budget == "seen" and dc.weights != "random" and self.samples_seen is not None
        # a trained decoder belongs to a target space (and, budget "seen", to a checkpoint's progress)
        key = (self._space(), self.samples_seen if seen else None) if dc.kind == "trained" else ("fixed",)
        if self.decoder is not None and self._decoder_key == key:
            return
        self._decoder_key = key
        dim = self.arm_cfg.shared_dim or self.y_encoder.dim
        self._decode_scale = 1.0
        if dc.weights == "random":  # untrained decoder of the configured architecture: timing only

            self._set_decoder(SonarDecoder("random", tokenizer=self.tokenizer) if dc.kind == "sonar"
                              else TrainedDecoder(dim, self.tokenizer, dc, self.cfg.lm.attn_implementation))
            return
        if dc.kind == "sonar":
            if not dc.weights:
                raise ValueError(f"{self.name}.y_decoder.weights: required for the sonar decoder (hub id or folder)")
            self._set_decoder(SonarDecoder(dc.weights, tokenizer_source=dc.tokenizer))
            sample = list(dict.fromkeys(self.ctx.train_captions(256)))[:256]
            with torch.no_grad():  # SONAR decodes raw (not unit) embeddings: restore their typical norm
                self._decode_scale = float(self.y_encoder(sample, normalize=False).norm(dim=-1).mean())
            return
        if seen:
            decoder, self.decoder_meta = fit_on_seen(
                dim, self.tokenizer, dc, key[0], self.ctx.stream_key, self.samples_seen, self.ctx.seen_captions,
                self.embed_texts, self.cfg.cache_path, self.cfg.lm.attn_implementation, self.ctx.precision,
                self.ctx.device)
        else:  # the whole training corpus (budget "corpus", or no checkpoint progress known: timing)

            decoder, self.decoder_meta = load_or_train(
                dim, self.tokenizer, dc, key[0], self.ctx.train_captions(), self.embed_texts, self.cfg.cache_path,
                self.cfg.lm.attn_implementation, self.ctx.precision, self.ctx.device)
        self._set_decoder(decoder)

    @classmethod
    def controls(cls, section: dict) -> list[str]:
        y, d = section.get("y_encoder", {}), section.get("y_decoder", {})
        weights = y.get("weights")
        if weights == "random":
            space = (f"a frozen, randomly initialised encoder of the {y.get('kind', '?')} architecture over the shared "
                     "tokenizer: no text knowledge")
        elif weights == CAPTIONS:
            space = ("the encoder pretrained on the training captions alone (InfoNCE on captions of one clip; "
                     "text_pretraining), frozen: text knowledge from the same corpus as the base LM's")
        else:
            space = (f"the pretrained {y.get('kind', '?')} encoder `{weights or 'packaged all-MiniLM-L6-v2'}`: "
                     "outside text knowledge (compare it with the base LM's)")
        out = [f"target space (`y_encoder.weights`={weights}): {space}"
               + (", trained with the arm" if y.get("trainable") else "") + "."]
        if d.get("kind", "trained") == "trained":
            out.append("Y-decoder (`y_decoder.budget`=" + d.get("budget", "seen") + "): " + (
                "trained at each checkpoint on the captions the arm saw up to it, no more"
                if d.get("budget", "seen") == "seen" else
                f"trained on every distinct training caption ({d.get('steps')} steps x {d.get('batch_size')}) "
                "before the first checkpoint") + ".")
        else:
            out.append(f"Y-decoder: the pretrained SONAR decoder `{d.get('weights')}`.")
        return out

    def side_flops(self, captions: list[str]) -> dict[str, float]:
        """The Y-encoder's forward per target caption (embedded once per distinct caption when cached) and
        the trained Y-decoder's forward and backward per caption it learns from."""
        from torch.utils.flop_counter import FlopCounterMode

        out = {}
        yc = self.arm_cfg.y_encoder
        if yc.cache and not yc.trainable and hasattr(self.y_encoder, "model"):  # else in the step, counted there
            # the encoder's own forward, without a padding mask (on meta, transformers' mask helpers call
            # .item()); the captions' lengths in the shared tokenizer stand in for its own
            width = max(1, round(sum(len(t) for t in self.tokenizer(captions)["input_ids"]) / len(captions)))
            ids = torch.zeros(len(captions), width, dtype=torch.long, device=self.ctx.device)
            with FlopCounterMode(display=False) as count, torch.no_grad():
                self.y_encoder.model(input_ids=ids)
            out["target_flops_per_caption"] = count.get_total_flops() / len(captions)
        dc = self.arm_cfg.y_decoder
        if dc.kind == "trained":
            dim = self.arm_cfg.shared_dim or self.y_encoder.dim
            with torch.device(self.ctx.device):
                decoder = TrainedDecoder(dim, self.tokenizer, dc, self.cfg.lm.attn_implementation)
            emb = torch.zeros(len(captions), dim, device=self.ctx.device)
            with FlopCounterMode(display=False) as count:
                decoder.loss(emb, captions).backward()
            out["decoder_flops_per_caption"] = count.get_total_flops() / len(captions)
        return out

    def evaluation_info(self) -> dict:
        """The decoder that turned this checkpoint's predictions into text, beside the arm's own numbers."""
        m = self.decoder_meta
        if not m:
            return {}
        return {"decoder_params": m.get("decoder_params"), "decoder_budget": m.get("budget", "corpus"),
                "decoder_samples": m.get("samples", m.get("steps", 0) * self.arm_cfg.y_decoder.batch_size)}

    def to_y_space(self, shared: torch.Tensor) -> torch.Tensor:
        """Shared-space vectors back in the Y-encoder's space, through the head's least-squares
        inverse: exact for any target (the head maps the smaller space injectively into the larger),
        the nearest preimage for a prediction, so a fixed decoder of that space (SONAR's) reads it."""
        w = self.y_head.weight.float()  # [shared, y]
        return torch.linalg.lstsq(w, shared.float().T).solution.T

    def _set_decoder(self, decoder: nn.Module) -> None:
        # evaluation-only and trained separately: kept out of the arm's parameters and checkpoints
        object.__setattr__(self, "decoder", decoder.requires_grad_(False).eval().to(self.ctx.device))

    def _decode(self, pred: torch.Tensor, max_new_tokens: int, exact: bool = False) -> list[str]:
        if self.decoder is None:
            self.prepare_evaluation()
        pred = pred.float().to(self.ctx.device)
        if self.y_head is not None and self.arm_cfg.y_decoder.kind == "sonar":
            pred = self.to_y_space(pred)
        emb = F.normalize(pred, dim=-1) * self._decode_scale
        return self.decoder.generate(emb, max_new_tokens, min_new_tokens=max_new_tokens if exact else 0)

    @torch.no_grad()
    def caption(self, visual: torch.Tensor, queries: list[str], max_new_tokens: int) -> list[str]:
        """``max_new_tokens`` counts the shared tokenizer's tokens (evaluation cuts to it): a decoder
        with its own tokenizer gets twice as many of its own, so the cut, not its unit, sets the length."""
        own_unit = self.arm_cfg.y_decoder.kind == "sonar"
        return self._decode(self.predict(visual, queries), 2 * max_new_tokens if own_unit else max_new_tokens)

    @torch.no_grad()
    def score_candidates(self, visual: torch.Tensor, queries: list[str], candidates: list[str]) -> torch.Tensor:
        pred = F.normalize(self.predict(visual, queries).float(), dim=-1)
        return pred @ self.embed_texts(candidates).to(pred.device).T

    @torch.no_grad()
    def embed(self, visual: torch.Tensor, queries: list[str]) -> torch.Tensor:
        return F.normalize(self.predict(visual, queries).float(), dim=-1)

    @torch.no_grad()
    def decode_embeddings(self, embeddings: torch.Tensor, max_new_tokens: int) -> list[str]:
        return self._decode(embeddings, max_new_tokens)

    @torch.no_grad()
    def reconstruct_texts(self, texts: list[str], max_new_tokens: int) -> list[str]:
        return self._decode(self.embed_texts(texts), max_new_tokens)


    def inference_stages(self, queries: list[str], max_new_tokens: int):
        """Latency stages: the predictor on the visual tokens (the query read inside it), then the decoder.
        An arm whose predictor embeds the query separately splits that out (the JEPA arm does)."""
        self.prepare_evaluation()
        return [("query_embedding", lambda visual: visual),
                ("encoder_predictor", lambda visual: self.predict(visual, queries)),
                ("decoder", lambda pred: self._decode(pred, max_new_tokens, exact=True))]
