"""The predictor: (S_V, X_Q) -> predicted target embedding, from a slice of the base LM's layers.

Visual tokens go through a linear map into the LM's width, followed by the embedded query tokens
(the base LM's frozen token embeddings). The selected transformer layers run with the causal mask
disabled, so vision and query attend to each other; the outputs are mean-pooled over non-PAD
positions and a linear head maps them into the target space.
"""
from __future__ import annotations

import torch
from torch import nn


def slice_layers(base_lm: nn.Module, start: int, end: int, causal: bool) -> nn.Module:
    """Keep layers [start, end) of a causal LM's decoder (its LlamaModel), bidirectional unless ``causal``."""
    model = base_lm.model
    n = len(model.layers)
    if not 0 <= start < end <= n:
        raise ValueError(f"jepa.layers: [{start}, {end}) is not a range of the base LM's {n} layers")
    model.layers = nn.ModuleList(list(model.layers)[start:end])
    model.config.num_hidden_layers = end - start
    # transformers builds a bidirectional mask when config.is_causal is False; the attention modules
    # carry their own flag, which SDPA uses whenever no mask is materialised, so set both.
    model.config.is_causal = causal
    for i, layer in enumerate(model.layers):
        layer.self_attn.is_causal = causal
        layer.self_attn.layer_idx = i
    return model


class Predictor(nn.Module):
    def __init__(self, base_lm: nn.Module, layers: tuple[int, int], causal: bool, visual_dim: int, out_dim: int):
        super().__init__()
        self.lm = slice_layers(base_lm, layers[0], layers[1], causal)
        hidden = self.lm.config.hidden_size
        self.lm.embed_tokens.requires_grad_(False)  # the query is embedded by the LM's frozen token table
        device = self.lm.embed_tokens.weight.device  # built where the base LM lives (meta, CPU or GPU)
        self.visual_proj = nn.Linear(visual_dim, hidden, device=device)
        self.head = nn.Linear(hidden, out_dim, device=device)

    def embed_query(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(input_ids)

    def forward(self, visual: torch.Tensor, query_embeds: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """visual [B, Lv, Dv], query_embeds [B, Lq, H], query_mask [B, Lq] -> [B, out_dim]."""
        v = self.visual_proj(visual.to(self.visual_proj.weight.dtype))
        x = torch.cat([v, query_embeds.to(v.dtype)], dim=1)
        mask = torch.cat([torch.ones(v.shape[:2], dtype=query_mask.dtype, device=v.device), query_mask], dim=1)
        hidden = self.lm(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1)  # mean over non-PAD positions
        return self.head(pooled)
