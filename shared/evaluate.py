"""Arm-agnostic evaluation of a checkpoint: captioning CIDEr, top-k classification, retrieval R@1.

Only the interface is called: ``caption`` (JEPA decodes its prediction, the VLM generates),
``score_candidates`` (JEPA: cosine to label embeddings, VLM: lowest perplexity) and, for arms
that have it, ``embed``/``embed_texts`` (retrieval). Evaluation reads the val/test split only.
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from shared.arm import Arm
from shared.metrics import cider, recall_at_k, top_k_accuracy
from shared.pipeline import Prepared


def autocast_for(cfg) -> contextlib.AbstractContextManager:
    if cfg.train.mixed_precision == "bf16":
        return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
    if cfg.train.mixed_precision == "fp16":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@dataclass
class EvalSet:
    """The clips of one split used for evaluation (capped by eval.max_clips)."""

    ids: list[str]
    visual: torch.Tensor
    references: list[list[str]]
    labels: np.ndarray  # -1 where a clip has no label

    @staticmethod
    def from_prepared(prepared: Prepared, split: str) -> "EvalSet":
        records = prepared.dataset.split(split)
        if not records:
            raise ValueError(f"eval.split: the {split!r} split is empty")
        n = prepared.cfg.eval.max_clips or len(records)
        records = records[:n]
        return EvalSet(
            ids=[r.id for r in records],
            visual=prepared.features[split][:n],
            references=[list(r.captions) for r in records],
            labels=np.array([-1 if r.label is None else r.label for r in records]),
        )


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


@torch.no_grad()
def evaluate(arm: Arm, prepared: Prepared, evalset: EvalSet, label_texts: list[str]) -> dict:
    cfg = prepared.cfg
    arm.eval()
    arm.prepare_evaluation()
    bs, query = cfg.eval.batch_size, cfg.data.query
    out: dict = {}
    t0 = time.perf_counter()
    preds: list[str] = []
    with autocast_for(cfg):
        for sl in _batches(len(evalset.ids), bs):
            v = evalset.visual[sl]
            preds += arm.caption(v, [query] * len(v), cfg.eval.caption_max_tokens)
    out["cider"], per_clip = cider(preds, evalset.references)
    out["caption_s"] = time.perf_counter() - t0

    labelled = evalset.labels >= 0
    if labelled.any() and label_texts:
        t1 = time.perf_counter()
        scores = []
        with autocast_for(cfg):
            for sl in _batches(len(evalset.ids), bs):
                v = evalset.visual[sl]
                scores.append(arm.score_candidates(v, [query] * len(v), label_texts).float().cpu())
        scores = torch.cat(scores).numpy()[labelled]
        out["top1"] = top_k_accuracy(scores, evalset.labels[labelled], 1)
        out["top5"] = top_k_accuracy(scores, evalset.labels[labelled], 5)
        out["classify_s"] = time.perf_counter() - t1

    if cfg.eval.retrieval and arm.supports_embed:
        # text-to-video: each clip's first reference retrieves among all evaluation clips
        with autocast_for(cfg):
            videos = torch.cat([arm.embed(evalset.visual[sl], [query] * (sl.stop - sl.start))
                                for sl in _batches(len(evalset.ids), bs)]).float()
            texts = arm.embed_texts([refs[0] for refs in evalset.references]).float()
        out["recall1"] = recall_at_k(texts @ videos.T, np.arange(len(videos)), 1)

    recon = arm.reconstruct_texts([refs[0] for refs in evalset.references], cfg.eval.caption_max_tokens)
    if recon is not None:  # the decoder's ceiling: decode(encode(reference)) vs the references
        out["decoder_ceiling_cider"], _ = cider(recon, evalset.references)
    out["eval_s"] = time.perf_counter() - t0
    out["examples"] = [{"id": i, "prediction": p, "references": r, "cider": float(c)}
                       for i, p, r, c in zip(evalset.ids, preds, evalset.references, per_clip)]
    return out


def baselines(prepared: Prepared, evalset: EvalSet, label_texts: list[str]) -> dict:
    """Reference points that need no model: chance, a constant caption, and the human ceiling."""
    train_caps = Counter(c for r in prepared.dataset.split("train") for c in r.captions)
    most_frequent = train_caps.most_common(1)[0][0]
    out = {"most_frequent_caption": most_frequent,
           "most_frequent_caption_cider": cider([most_frequent] * len(evalset.ids), evalset.references)[0]}
    n = len(label_texts)
    if n:
        out.update(classes=n, chance_top1=1 / n, chance_top5=min(5, n) / n)
    labels = evalset.labels[evalset.labels >= 0]
    if len(labels):  # a query's own clip is only findable up to the clips that share its meaning
        counts = np.bincount(labels)
        out["retrieval_r1_ceiling"] = float(np.mean(1.0 / counts[labels]))
    multi = [refs for refs in evalset.references if len(refs) >= 2]
    if multi:  # one reference scored against the others: what an annotator would get
        out["human_ceiling_cider"] = cider([refs[0] for refs in multi], [refs[1:] for refs in multi])[0]
    out["eval_clips"] = len(evalset.ids)
    return out
