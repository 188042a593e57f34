"""The JEPA arm: predict the target text's embedding instead of its tokens (VL-JEPA, section 3).

The text side (Y-encoder, InfoNCE, Y-decoder, classification and retrieval by cosine) is the
embedding-arm base's (shared/embedding_arm.py); this arm adds the predictor: layers of the shared
base LM reading the visual tokens and the query, bidirectional by default.
"""
from __future__ import annotations

import torch
from torch import nn

from jepa_arm.config import JepaConfig
from jepa_arm.predictor import Predictor
from shared.arm import ArmContext, register_arm
from shared.embedding_arm import EmbeddingArm


@register_arm("jepa", JepaConfig)
class JepaArm(EmbeddingArm):
    """Predicts the target caption's embedding (layers of the base LM, bidirectional, mean-pooled); InfoNCE; a Y-decoder gives text."""

    capabilities = EmbeddingArm.capabilities | {"export"}

    def build_predictor(self, ctx: ArmContext, out_dim: int) -> nn.Module:
        c = self.arm_cfg
        return Predictor(ctx.base_lm(), (c.layers[0], c.layers[1]), c.causal, ctx.visual_dim, out_dim)

    def _tokenize(self, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(queries, add_special_tokens=False, padding=True, truncation=True,
                             max_length=self.arm_cfg.max_query_tokens, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def predict(self, visual: torch.Tensor, queries: list[str]) -> torch.Tensor:
        ids, mask = self._tokenize(queries)
        return self.predictor(visual, self.predictor.embed_query(ids.to(visual.device)), mask.to(visual.device))

    def export_pretrained(self, folder):
        from jepa_arm.export import export_jepa

        return export_jepa(self, folder)

    def inference_stages(self, queries: list[str], max_new_tokens: int):
        def query_embedding(visual):
            ids, mask = self._tokenize(queries)
            return visual, self.predictor.embed_query(ids.to(visual.device)), mask.to(visual.device)

        def encoder_predictor(state):
            visual, q, mask = state
            return self.predictor(visual, q, mask)

        def decoder(pred):
            return self._decode(pred, max_new_tokens, exact=True)

        self.prepare_evaluation()
        return [("query_embedding", query_embedding), ("encoder_predictor", encoder_predictor), ("decoder", decoder)]
