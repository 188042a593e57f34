"""Arm-agnostic evaluation of a checkpoint: captioning CIDEr, top-k classification, retrieval R@1.

Only the interface is called: ``caption`` (JEPA decodes its prediction, the VLM generates),
``score_candidates`` (JEPA: cosine to label embeddings, VLM: lowest perplexity) and, for arms
that have it, ``embed``/``embed_texts`` (retrieval). Evaluation reads val/test clips only: the
data's own split, or several manifests averaged as the paper averages its benchmarks.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.arm import Arm
from shared.data import ClipRecord
from shared.metrics import cider, recall_at_k, top_k_accuracy
from shared.pipeline import Prepared
from shared.precision import autocast_for


@dataclass
class EvalSet:
    """The clips of one evaluation set (capped by eval.max_clips) and its candidate label texts."""

    name: str
    ids: list[str]
    visual: torch.Tensor
    references: list[list[str]]
    labels: np.ndarray  # -1 where a clip has no label
    label_texts: list[str]

    @staticmethod
    def from_records(name: str, records: list[ClipRecord], visual: torch.Tensor, label_texts: list[str],
                     max_clips: int) -> "EvalSet":
        if not records:
            raise ValueError(f"evaluation set {name!r} holds no clips")
        n = max_clips or len(records)
        return EvalSet(name, [r.id for r in records[:n]], visual[:n], [list(r.captions) for r in records[:n]],
                       np.array([-1 if r.label is None else r.label for r in records[:n]]), list(label_texts))


def eval_sets(prepared: Prepared) -> list[EvalSet]:
    """The evaluation sets: the data's own val/test split, or the manifests listed in eval.sets."""
    cfg = prepared.cfg
    split = cfg.eval.split
    if not cfg.eval.sets:
        records = prepared.dataset.split(split)
        if not records:
            raise ValueError(f"eval.split: the {split!r} split is empty")
        return [EvalSet.from_records(split, records, prepared.features[split], prepared.dataset.label_texts,
                                     cfg.eval.max_clips)]
    from shared.data import manifest_records
    from shared.encoder import FrozenEncoder
    from shared.feature_cache import FeatureCache

    cache = FeatureCache(cfg.cache_path, FrozenEncoder.from_config(cfg), cfg.data.frames)
    out = []
    for path in cfg.eval.sets:
        records, labels = manifest_records(path)
        records = [r for r in records if r.split == split]
        if not records:
            raise ValueError(f"eval.sets: {path} has no clip with split {split!r}")
        visual, _ = cache.features(records, desc=f"encode {Path(path).stem}")
        out.append(EvalSet.from_records(Path(path).stem, records, visual, labels, cfg.eval.max_clips))
    return out


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


@torch.no_grad()
def evaluate(arm: Arm, prepared: Prepared, evalset: EvalSet) -> dict:
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
    label_texts = evalset.label_texts
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


def baselines(prepared: Prepared, evalset: EvalSet) -> dict:
    """Reference points that need no model: chance, a constant caption, and the human ceiling."""
    label_texts = evalset.label_texts
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


AVERAGED = ("cider", "top1", "top5", "recall1", "decoder_ceiling_cider")


def combine(per_set: dict[str, dict]) -> dict:
    """Mean of each metric over the sets that have it (the paper's averaging); per-set values kept."""
    out = {}
    for key in AVERAGED:
        vals = [m[key] for m in per_set.values() if m.get(key) is not None]
        if vals:
            out[key] = float(np.mean(vals))
    for key in ("eval_s", "caption_s", "classify_s"):
        out[key] = float(sum(m.get(key, 0.0) for m in per_set.values()))
    if len(per_set) > 1:
        out["sets"] = {name: {k: m[k] for k in AVERAGED if k in m} for name, m in per_set.items()}
    return out


def combined_baselines(per_set: dict[str, dict]) -> dict:
    """Baselines averaged over sets (numbers) with each set's own values under "sets"."""
    if len(per_set) == 1:
        return next(iter(per_set.values()))
    out: dict = {"sets": per_set}
    keys = {k for b in per_set.values() for k, v in b.items() if isinstance(v, (int, float)) and k != "classes"}
    for k in keys:
        vals = [b[k] for b in per_set.values() if isinstance(b.get(k), (int, float))]
        out[k] = float(np.mean(vals)) if k != "eval_clips" else int(sum(vals))
    return out
