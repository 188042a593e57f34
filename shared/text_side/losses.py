"""Embedding-space losses: bi-directional InfoNCE (default) and the paper's cosine / L1 / L2 ablations."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(pred: torch.Tensor, target: torch.Tensor, temperature: float,
             same_target: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over the batch: prediction->target and target->prediction.

    ``same_target`` [B, B] marks pairs with identical target text; they are removed from each
    other's negatives (a duplicate is not a wrong answer).
    """
    p, t = F.normalize(pred.float(), dim=-1), F.normalize(target.float(), dim=-1)
    logits = p @ t.T / temperature
    if same_target is not None:
        off_diag = same_target & ~torch.eye(len(p), dtype=torch.bool, device=p.device)
        logits = logits.masked_fill(off_diag, float("-inf"))
    labels = torch.arange(len(p), device=p.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred.float(), target.float())


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())


def embedding_loss(kind: str, pred, target, temperature: float = 0.05, same_target=None) -> torch.Tensor:
    if kind == "infonce":
        return info_nce(pred, target, temperature, same_target)
    if kind == "cosine":
        return cosine_loss(pred, target)
    if kind == "l1":
        return l1_loss(pred, target)
    if kind == "l2":
        return l2_loss(pred, target)
    raise ValueError(f"loss: unknown loss {kind!r} (the embedding arm's section's loss key)")


def same_text_mask(texts: list[str], device=None) -> torch.Tensor:
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    idx = torch.tensor([ids[t] for t in texts], device=device)
    return idx[:, None] == idx[None, :]
