"""Metrics: corpus-level CIDEr (pycocoevalcap), top-k accuracy (scikit-learn), retrieval recall@k,
and meaning accuracy (a caption read back into its meaning, where the data's grammar allows).

CIDEr's IDF comes from the whole reference set, so it is only meaningful over a corpus: score all
evaluation clips in one call, never one clip at a time (a single-item corpus scores 0).
"""
from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from pycocoevalcap.cider.cider import Cider
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import top_k_accuracy_score

from shared.evaluation.ptb import tokenize


@dataclass(frozen=True)
class Metric:
    """One evaluation metric, declared once: rows, aggregation over sets and seeds, the report's
    table and the figures read this list, so a new metric is its computation plus one line here."""

    key: str  # its name in metrics.jsonl
    label: str  # column header
    percent: bool = False  # stored as a fraction in [0, 1], shown x100
    higher_is_better: bool = True
    averaged_over_sets: bool = True  # several evaluation sets: the mean, as the paper averages benchmarks
    in_table: bool = True  # a column of the report's results table
    headline: bool = False  # a panel of the sample-efficiency figure and a "who leads" line of the report
    per_clip: bool = False  # the predictions files hold it clip by clip: arm differences get intervals
    labelled_only: bool = False  # measured on the clips with a label only (classification, the meaning read-back)


METRICS: list[Metric] = [
    Metric("cider", "CIDEr", headline=True, per_clip=True),
    Metric("top1", "top-1 %", percent=True, per_clip=True, labelled_only=True),
    Metric("top5", "top-5 %", percent=True, headline=True, per_clip=True, labelled_only=True),
    Metric("top1_phrasings", "top-1 % phrasings", percent=True, in_table=False, per_clip=True, labelled_only=True),
    Metric("top5_phrasings", "top-5 % phrasings", percent=True, per_clip=True, labelled_only=True),
    Metric("recall1", "R@1 %", percent=True),
    Metric("decoder_ceiling_cider", "Y-decoder ceiling CIDEr", in_table=False),
    # the caption read back by the benchmark's grammar (synthetic data only): all attributes right,
    # then each attribute alone
    Metric("meaning", "meaning %", percent=True, headline=True, per_clip=True, labelled_only=True),
    Metric("meaning_colour", "colour %", percent=True, in_table=False, per_clip=True, labelled_only=True),
    Metric("meaning_shape", "shape %", percent=True, in_table=False, per_clip=True, labelled_only=True),
    Metric("meaning_action", "action %", percent=True, in_table=False, per_clip=True, labelled_only=True),
]


def metric(key: str) -> Metric:
    return next(m for m in METRICS if m.key == key)


def cider(predictions: list[str], references: list[list[str]]) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D of ``predictions`` against all ``references`` of each item (PTB-tokenized, quietly:
    shared/evaluation/ptb.py)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    if not predictions:
        raise ValueError("CIDEr of an empty corpus")
    if any(not refs for refs in references):
        raise ValueError("every item needs at least one reference caption")
    if shutil.which("java") is None:
        raise RuntimeError("CIDEr's PTB tokenizer needs Java on PATH (e.g. apt-get install default-jre-headless)")
    gts = tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenize({i: [{"caption": p if p.strip() else "."}] for i, p in enumerate(predictions)})
    score, scores = Cider().compute_score(gts, res)
    return float(score), np.asarray(scores, dtype=float)


def meaning_accuracy(reader, predictions: list[str], labels) -> dict[str, np.ndarray]:
    """Per caption, 1.0 where ``reader`` reads it as its clip's meaning (key "meaning": every
    attribute; "meaning_<attribute>": that one), NaN for clips without a label. ``reader``: a data
    source's ``caption_reader`` (``read(text)``, ``truth(label)``, ``attributes``)."""
    labels = np.asarray(labels)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} captions for {len(labels)} labels")
    attrs = tuple(reader.attributes)
    out = {key: np.full(len(labels), np.nan) for key in ("meaning", *(f"meaning_{a}" for a in attrs))}
    for i, (text, label) in enumerate(zip(predictions, labels)):
        if label < 0:
            continue
        read, truth = reader.read(text or ""), reader.truth(int(label))
        right = [r is not None and r == t for r, t in zip(read, truth)]
        out["meaning"][i] = float(all(right))
        for a, ok in zip(attrs, right):
            out[f"meaning_{a}"][i] = float(ok)
    return out


def top_k_accuracy(scores: torch.Tensor | np.ndarray, labels, k: int) -> float:
    """Fraction of rows whose true label is among the k highest scores."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    n_classes = scores.shape[1]
    if n_classes == 2:  # sklearn's binary case wants one score per row, for class 1
        scores = scores[:, 1] - scores[:, 0]
    with warnings.catch_warnings():  # k >= classes is a trivial 1.0, by definition; no need to warn
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(top_k_accuracy_score(labels, scores, k=min(k, n_classes), labels=np.arange(n_classes)))


def recall_at_k(similarity: torch.Tensor | np.ndarray, targets, k: int = 1) -> float:
    """Text-to-video retrieval: row i (a text) is correct if column targets[i] ranks in its top k."""
    sim = torch.as_tensor(np.asarray(similarity, dtype=float))
    targets = torch.as_tensor(np.asarray(targets))
    target_score = sim[torch.arange(len(sim)), targets]
    rank = (sim > target_score[:, None]).sum(dim=1)  # ties count in the query's favour
    return float((rank < k).float().mean())
