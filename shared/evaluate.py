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
from shared.data.loader import ClipBatches, EvalPlan, batches, make_loader
from shared.data.sources import ClipSource, manifest_dataset
from shared.metrics import cider, recall_at_k, top_k_accuracy
from shared.pipeline import Prepared
from shared.precision import autocast_for


@dataclass
class EvalSet:
    """One evaluation set: a split's clips (capped by eval.max_clips) and its candidate label texts."""

    name: str
    source: ClipSource
    label_texts: list[str]
    n: int  # clips evaluated: the first n of the source

    @staticmethod
    def of(name: str, source: ClipSource, label_texts: list[str], max_clips: int) -> "EvalSet":
        if not len(source):
            raise ValueError(f"evaluation set {name!r} holds no clips")
        return EvalSet(name, source, list(label_texts), min(len(source), max_clips or len(source)))


def eval_sets(prepared: Prepared) -> list[EvalSet]:
    """The evaluation sets: the data's own val/test split, or the manifests listed in eval.sets
    (their features cached like the training data's)."""
    cfg = prepared.cfg
    split = cfg.eval.split
    if not cfg.eval.sets:
        source = prepared.dataset.split(split)
        if not len(source):
            raise ValueError(f"eval.split: the {split!r} split is empty")
        return [EvalSet.of(split, source, prepared.dataset.label_texts, cfg.eval.max_clips)]
    out = []
    for path in cfg.eval.sets:
        ds = manifest_dataset(path, cfg)
        source = ds.split(split)
        if not len(source):
            raise ValueError(f"eval.sets: {path} has no clip with split {split!r}")
        prepared.features.prepare(source, desc=f"encode {Path(path).stem}")
        out.append(EvalSet.of(Path(path).stem, source, ds.label_texts, cfg.eval.max_clips))
    return out


def eval_batches(prepared: Prepared, evalset: EvalSet, device):
    """The set's batches (references and labels included), ``visual`` on ``device``."""
    cfg = prepared.cfg
    plan = EvalPlan(0, evalset.n, cfg.eval.batch_size)
    ds = ClipBatches(evalset.source, plan, prepared.features.reader(evalset.source), cfg.data.query, references=True)
    for batch in batches(make_loader(ds, 0, len(plan), cfg.data.workers, cfg.data.prefetch)):
        yield prepared.features.ready(batch, device)


@torch.no_grad()
def evaluate(arm: Arm, prepared: Prepared, evalset: EvalSet) -> dict:
    """Every metric from one pass over the set's batches: captions, candidate scores, embeddings."""
    cfg = prepared.cfg
    arm.eval()
    arm.prepare_evaluation()
    device = next(arm.parameters()).device
    classify = bool(evalset.label_texts)
    retrieval = cfg.eval.retrieval and arm.supports_embed
    t0 = time.perf_counter()
    ids, preds, refs, labels, scores, videos = [], [], [], [], [], []
    timing = {"caption_s": 0.0, "classify_s": 0.0}
    with autocast_for(cfg):
        for batch in eval_batches(prepared, evalset, device):
            ids += batch.ids
            refs += [list(r) for r in batch.references]
            labels.append(batch.labels.numpy())
            t = time.perf_counter()
            preds += arm.caption(batch.visual, batch.queries, cfg.eval.caption_max_tokens)
            timing["caption_s"] += time.perf_counter() - t
            if classify:
                t = time.perf_counter()
                scores.append(arm.score_candidates(batch.visual, batch.queries, evalset.label_texts).float().cpu())
                timing["classify_s"] += time.perf_counter() - t
            if retrieval:
                videos.append(arm.embed(batch.visual, batch.queries).float().cpu())
    labels = np.concatenate(labels)
    out: dict = {}
    out["cider"], per_clip = cider(preds, refs)
    out["caption_s"] = timing["caption_s"]
    labelled = labels >= 0
    if classify and labelled.any():
        s = torch.cat(scores).numpy()[labelled]
        out["top1"] = top_k_accuracy(s, labels[labelled], 1)
        out["top5"] = top_k_accuracy(s, labels[labelled], 5)
        out["classify_s"] = timing["classify_s"]
    if retrieval:  # text-to-video: each clip's first reference retrieves among all evaluation clips
        with autocast_for(cfg):
            texts = arm.embed_texts([r[0] for r in refs]).float().cpu()
        out["recall1"] = recall_at_k(texts @ torch.cat(videos).T, np.arange(len(refs)), 1)
    recon = arm.reconstruct_texts([r[0] for r in refs], cfg.eval.caption_max_tokens)
    if recon is not None:  # the decoder's ceiling: decode(encode(reference)) vs the references
        out["decoder_ceiling_cider"], _ = cider(recon, refs)
    out["eval_s"] = time.perf_counter() - t0
    out["examples"] = [{"id": i, "prediction": p, "references": r, "cider": float(c)}
                       for i, p, r, c in zip(ids, preds, refs, per_clip)]
    return out


BASELINE_TRAIN_CLIPS = 100_000  # the most frequent caption is counted over at most this many clips


def baselines(prepared: Prepared, evalset: EvalSet) -> dict:
    """Reference points that need no model: chance, a constant caption, and the human ceiling."""
    label_texts = evalset.label_texts
    train_caps = Counter(prepared.dataset.split("train").captions(BASELINE_TRAIN_CLIPS))
    most_frequent = train_caps.most_common(1)[0][0]
    references = [list(evalset.source.clip(i).captions) for i in range(evalset.n)]
    out = {"most_frequent_caption": most_frequent,
           "most_frequent_caption_cider": cider([most_frequent] * evalset.n, references)[0]}
    n = len(label_texts)
    if n:
        out.update(classes=n, chance_top1=1 / n, chance_top5=min(5, n) / n)
    all_labels = evalset.source.labels()[:evalset.n]
    labels = all_labels[all_labels >= 0]
    if len(labels):  # a query's own clip is only findable up to the clips that share its meaning
        counts = np.bincount(labels)
        out["retrieval_r1_ceiling"] = float(np.mean(1.0 / counts[labels]))
    multi = [refs for refs in references if len(refs) >= 2]
    if multi:  # one reference scored against the others: what an annotator would get
        out["human_ceiling_cider"] = cider([refs[0] for refs in multi], [refs[1:] for refs in multi])[0]
    out["eval_clips"] = evalset.n
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
