"""Arm-agnostic evaluation of a checkpoint: captioning CIDEr, top-k classification, retrieval R@1,
and meaning accuracy where the data can read a caption back into its meaning (the synthetic
benchmark's grammar: the source's ``caption_reader``; manifests have none).

Only the interface is called: ``caption`` (JEPA decodes its prediction, the VLM generates),
``score_candidates`` (JEPA: cosine to label embeddings, VLM: lowest perplexity) and, for arms
that have it, ``embed``/``embed_texts`` (retrieval). Evaluation reads val/test clips only: the
data's own split, or several manifests averaged as the paper averages its benchmarks.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object

from shared import processes
from shared.arm import Arm
from shared.data.loader import ClipBatches, EvalPlan, batches, make_loader
from shared.data.sources import ClipSource, manifest_dataset
from shared.evaluation.metrics import METRICS, cider, meaning_accuracy, recall_at_k, top_k_accuracy
from shared.pipeline import Pipeline


@dataclass
class EvalSet:
    """One evaluation set: a split's clips (capped by eval.max_clips) and the phrasings of its labels."""

    name: str
    source: ClipSource
    phrasings: list[list[str]]  # per label, its canonical text first
    n: int  # clips evaluated: the first n of the source
    task: str = "both"  # "caption" (CIDEr, retrieval), "classify" (top-k) or both, as eval.sets tags it

    @staticmethod
    def of(name: str, source: ClipSource, phrasings: list[list[str]], max_clips: int, task: str = "both") -> "EvalSet":
        if not len(source):
            raise ValueError(f"evaluation set {name!r} holds no clips")
        return EvalSet(name, source, phrasings, min(len(source), max_clips or len(source)), task)

    @property
    def captions(self) -> bool:
        return self.task in ("caption", "both")

    @property
    def classifies(self) -> bool:
        return self.task in ("classify", "both") and bool(self.phrasings)

    @property
    def label_texts(self) -> list[str]:
        return [p[0] for p in self.phrasings]

    @property
    def candidates(self) -> list[str]:
        return [t for p in self.phrasings for t in p]

    def per_label(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, candidates] -> ([N, labels] mean over the label's phrasings, [N, labels] canonical one).

        The mean, not the best: every label is worded in the same sentence forms, so a form's own
        offset (a fluent template's lower NLL, a common word's higher cosine) is added to every
        label alike and cancels in the ranking, and averaging K noisy scores does not reward the
        label whose scores happen to spread most, as a maximum does."""
        sizes = np.array([len(p) for p in self.phrasings])
        starts = np.cumsum(np.concatenate([[0], sizes[:-1]]))
        return np.add.reduceat(scores, starts, axis=1) / sizes, scores[:, starts]

    def canonical_only(self) -> "EvalSet":
        return dataclasses.replace(self, phrasings=[p[:1] for p in self.phrasings])


def eval_sets(prepared: Pipeline) -> list[EvalSet]:
    """The evaluation sets: the data's own val/test split, or the manifests listed in eval.sets
    (their features cached like the training data's)."""
    cfg = prepared.cfg
    split = cfg.eval.split
    if not cfg.eval.sets:
        source = prepared.dataset.split(split)
        if not len(source):
            raise ValueError(f"eval.split: the {split!r} split is empty")
        return [EvalSet.of(split, source, prepared.dataset.label_phrasings(cfg.eval.phrasings), cfg.eval.max_clips)]
    out = []
    for i, spec in enumerate(cfg.eval.sets):
        path, name, task = (spec, Path(spec).stem, "both") if isinstance(spec, str) else \
            (spec.manifest, spec.name or Path(spec.manifest).stem, spec.task)
        ds = manifest_dataset(path, cfg)
        source = ds.split(split)
        if not len(source):
            raise ValueError(f"eval.sets[{i}]: {path} has no clip with split {split!r}")
        prepared.features.prepare(source, desc=f"encode {name}")
        out.append(EvalSet.of(name, source, ds.label_phrasings(cfg.eval.phrasings), cfg.eval.max_clips, task))
    if len({s.name for s in out}) < len(out):
        raise ValueError(f"eval.sets: two sets share a name ({[s.name for s in out]}); give each a `name`")
    return out


def eval_batches(prepared: Pipeline, evalset: EvalSet, device, first: int = 0, stop: int | None = None):
    """Batches of clips ``first .. stop-1`` of the set (references and labels included), ``visual`` on ``device``."""
    cfg = prepared.cfg
    plan = EvalPlan(first, evalset.n if stop is None else stop, cfg.eval.batch_size)
    ds = ClipBatches(evalset.source, plan, prepared.features.reader(evalset.source), cfg.data.query, references=True)
    for batch in batches(make_loader(ds, 0, len(plan), cfg.data.workers, cfg.data.prefetch)):
        yield prepared.features.ready(batch, device)


@torch.no_grad()
def _evaluate_shard(arm: Arm, prepared: Pipeline, evalset: EvalSet, first: int, stop: int) -> dict:
    """Everything the metrics need from clips ``first .. stop-1``, in one pass over their batches."""
    cfg = prepared.cfg
    device = next(arm.parameters()).device
    classify, retrieval = evalset.classifies, evalset.captions and cfg.eval.retrieval and arm.has("embed")
    candidates = evalset.candidates
    out = {"ids": [], "preds": [], "refs": [], "labels": [], "scores": [], "videos": [], "caption_s": 0.0,
           "classify_s": 0.0}
    with prepared.runtime.autocast():
        for batch in eval_batches(prepared, evalset, device, first, stop):
            out["ids"] += batch.ids
            out["refs"] += [list(r) for r in batch.references]
            out["labels"].append(batch.labels.numpy())
            if evalset.captions:
                t = time.perf_counter()
                captions = arm.caption(batch.visual, batch.queries, cfg.eval.caption_max_tokens)
                out["caption_s"] += time.perf_counter() - t
                out["preds"] += cap_length(captions, prepared.tokenizer, cfg.eval.caption_max_tokens)
            if classify:
                t = time.perf_counter()
                out["scores"].append(arm.score_candidates(batch.visual, batch.queries, candidates).float().cpu().numpy())
                out["classify_s"] += time.perf_counter() - t
            if retrieval:
                out["videos"].append(arm.embed(batch.visual, batch.queries).float().cpu().numpy())
        firsts = [r[0] for r in out["refs"]]
        if retrieval and firsts:
            out["texts"] = arm.embed_texts(firsts).float().cpu().numpy()
    decodes = firsts and evalset.captions and arm.has("reconstruct_texts")
    out["recon"] = arm.reconstruct_texts(firsts, cfg.eval.caption_max_tokens) if decodes else None
    return out


def _merge(parts: list[dict]) -> dict:
    """Process shards in process order (= clip order) as one."""
    out = {}
    for key in ("ids", "preds", "refs"):
        out[key] = [x for p in parts for x in p[key]]
    out["recon"] = None if any(p["recon"] is None for p in parts) else [x for p in parts for x in p["recon"]]
    for key in ("labels", "scores", "videos"):
        arrays = [a for p in parts for a in p[key]]
        out[key] = np.concatenate(arrays) if arrays else None
    texts = [p["texts"] for p in parts if "texts" in p]
    out["texts"] = np.concatenate(texts) if texts else None
    for key in ("caption_s", "classify_s"):
        out[key] = max(p[key] for p in parts)  # processes work in parallel: the slowest one's time
    return out


@torch.no_grad()
def evaluate(arm: Arm, prepared: Pipeline, evalset: EvalSet) -> dict | None:
    """Every metric of the set. Under several processes each evaluates a contiguous share of the
    clips; the shares are gathered and the main process computes and returns the metrics (the others
    return None), so corpus-level CIDEr sees every clip once and rows are written once."""
    arm.eval()
    with processes.state().main_process_first():  # what it fits and caches (a Y-decoder) is written once
        arm.prepare_evaluation()
    t0 = time.perf_counter()
    rank, world = prepared.runtime.rank, prepared.runtime.world
    local = _evaluate_shard(arm, prepared, evalset, evalset.n * rank // world, evalset.n * (rank + 1) // world)
    parts = gather_object([local]) if world > 1 else [local]
    if rank != 0:
        return None
    m = _merge(parts)
    out: dict = {"caption_s": m["caption_s"]}
    per_clip = [None] * len(m["ids"])
    if evalset.captions:
        out["cider"], per_clip = cider(m["preds"], m["refs"])
    labelled = m["labels"] >= 0
    reader = getattr(evalset.source, "caption_reader", None)
    meaning: dict[str, np.ndarray] = {}  # per clip, 1/0: the caption read back is the clip's meaning (or attribute)
    if evalset.captions and reader is not None and labelled.any():
        meaning = meaning_accuracy(reader, m["preds"], m["labels"])
        out.update({k: float(np.nanmean(v)) for k, v in meaning.items()})
    ranks: dict[str, np.ndarray] = {}  # per clip, the true label's rank (for intervals over clips)
    if m["scores"] is not None and labelled.any():
        mean, canonical = evalset.per_label(m["scores"][labelled])
        phrased = len(evalset.candidates) > len(evalset.phrasings)
        for k in (1, 5):
            out[f"top{k}"] = top_k_accuracy(canonical, m["labels"][labelled], k)
            if phrased:
                out[f"top{k}_phrasings"] = top_k_accuracy(mean, m["labels"][labelled], k)
                out["phrasings"] = len(evalset.candidates) / len(evalset.phrasings)
        ranks["rank"] = _full(labelled, label_rank(canonical, m["labels"][labelled]))
        if phrased:
            ranks["rank_phrasings"] = _full(labelled, label_rank(mean, m["labels"][labelled]))
        out["classify_s"] = m["classify_s"]
    if m["videos"] is not None:  # text-to-video: each clip's first reference retrieves among all evaluation clips
        sim = torch.from_numpy(m["texts"]) @ torch.from_numpy(m["videos"]).T
        out["recall1"] = recall_at_k(sim, np.arange(len(m["refs"])), 1)
    multi = [i for i, r in enumerate(m["refs"]) if len(r) >= 2]
    if m["recon"] and multi:  # the decoder's ceiling: decode(encode(reference 0)) vs the other
        # references, as the annotator ceiling scores reference 0 (its own input would inflate it)
        out["decoder_ceiling_cider"], _ = cider([m["recon"][i] for i in multi], [m["refs"][i][1:] for i in multi])
    out["eval_s"] = time.perf_counter() - t0
    preds = m["preds"] or [None] * len(m["ids"])
    # each labelled clip's label: clips of a label are one cluster for the intervals over clips
    out["examples"] = [{"id": i, "references": r, **({"prediction": p, "cider": float(c)} if c is not None else {}),
                        **({"label": int(label)} if label >= 0 else {}), **{k: int(v[j]) for k, v in ranks.items()},
                        **{k: int(v[j]) for k, v in meaning.items() if not np.isnan(v[j])},
                        **({"meaning_read": list(reader.read(p))} if meaning else {})}
                       for j, (i, p, r, c, label) in enumerate(zip(m["ids"], preds, m["refs"], per_clip, m["labels"]))]
    out["processes"] = world
    return out


def cap_length(captions: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Captions cut to ``max_tokens`` tokens of the shared tokenizer: one length unit for every arm,
    whatever tokenizer its decoder generates with (the VLM's LM and the JEPA arm's trained decoder
    use the shared one, so for them this changes nothing)."""
    ids = tokenizer(captions, add_special_tokens=False)["input_ids"]
    return [c if len(t) <= max_tokens else tokenizer.decode(t[:max_tokens]).strip() for c, t in zip(captions, ids)]


def label_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each row's true label, ties ordered as scikit-learn's top-k accuracy orders
    them (a tied label with a higher index ranks first), so mean(rank < k) is exactly top-k."""
    true = scores[np.arange(len(labels)), labels][:, None]
    later = np.arange(scores.shape[1])[None, :] > labels[:, None]
    return ((scores > true) | ((scores == true) & later)).sum(axis=1)


def _full(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` at the rows of ``mask``, -1 (no label) elsewhere."""
    out = np.full(len(mask), -1, dtype=np.int64)
    out[mask] = values
    return out


BASELINE_TRAIN_CLIPS = 100_000  # the most frequent caption is counted over at most this many clips


def baselines(prepared: Pipeline, evalset: EvalSet) -> dict:
    """Reference points that need no model: chance, a constant caption, and the human ceiling (each
    for the task the set is scored on); where the source reads captions back into meanings
    (synthetic data), their meaning accuracy too and partly informed templates (``meaning_baselines``)."""
    out: dict = {"eval_clips": evalset.n}
    if evalset.classifies:
        n = len(evalset.label_texts)
        out.update(classes=n, chance_top1=1 / n, chance_top5=min(5, n) / n)
    if not evalset.captions:
        return out
    train_caps = Counter(prepared.dataset.split("train").captions(BASELINE_TRAIN_CLIPS))
    most_frequent = train_caps.most_common(1)[0][0]
    references = [list(evalset.source.clip(i).captions) for i in range(evalset.n)]
    out.update(most_frequent_caption=most_frequent,
               most_frequent_caption_cider=cider([most_frequent] * evalset.n, references)[0])
    all_labels = evalset.source.labels()[:evalset.n]
    labels = all_labels[all_labels >= 0]
    if len(labels):  # a query's own clip is only findable up to the clips that share its meaning
        counts = np.bincount(labels)
        out["retrieval_r1_ceiling"] = float(np.mean(1.0 / counts[labels]))
    multi = [refs for refs in references if len(refs) >= 2]
    if multi:  # one reference scored against the others: what an annotator would get
        out["human_ceiling_cider"] = cider([refs[0] for refs in multi], [refs[1:] for refs in multi])[0]
    reader = getattr(evalset.source, "caption_reader", None)
    if reader is not None and len(labels):
        out.update(meaning_baselines(reader, prepared.dataset.split("train").labels()[:BASELINE_TRAIN_CLIPS],
                                     all_labels, references, most_frequent))
    return out


def meaning_baselines(reader, train_labels: np.ndarray, labels: np.ndarray, references: list[list[str]],
                      most_frequent: str) -> dict:
    """Meaning accuracy of the blind template (the most frequent training caption) and of the
    annotator (each clip's reference 0), and CIDEr and meaning accuracy of templates that know part
    of each clip's meaning: its true first attribute(s) (colour; colour and shape), the others the
    most frequent in training, each attribute counted alone, in the canonical phrasing
    (``reader.caption``). Keys ``template_<attributes>_cider`` / ``_meaning``."""
    def accuracy(captions: list[str]) -> float:
        return float(np.nanmean(meaning_accuracy(reader, captions, labels)["meaning"]))

    out = {"most_frequent_caption_meaning": accuracy([most_frequent] * len(labels)),
           "human_ceiling_meaning": accuracy([refs[0] for refs in references])}
    train = [reader.truth(int(label)) for label in train_labels if label >= 0]
    if not train:
        return out
    common = [Counter(m[k] for m in train).most_common(1)[0][0] for k in range(len(reader.attributes))]
    for known in range(1, len(reader.attributes)):
        captions = [reader.caption((*reader.truth(int(label))[:known], *common[known:])) if label >= 0 else most_frequent
                    for label in labels]
        name = "template_" + "_".join(reader.attributes[:known])
        out[f"{name}_cider"] = cider(captions, references)[0]  # corpus-level: one call per reference point
        out[f"{name}_meaning"] = accuracy(captions)
    out["template_fixed"] = dict(zip(reader.attributes, common))
    return out


def combine(per_set: dict[str, dict]) -> dict:
    """Mean of each metric over the sets that have it (the paper's averaging); per-set values kept."""
    averaged = [m.key for m in METRICS if m.averaged_over_sets]
    out = {}
    for key in averaged:
        vals = [m[key] for m in per_set.values() if m.get(key) is not None]
        if vals:
            out[key] = float(np.mean(vals))
    for key in ("eval_s", "caption_s", "classify_s"):
        out[key] = float(sum(m.get(key, 0.0) for m in per_set.values()))
    phrasings = [m["phrasings"] for m in per_set.values() if "phrasings" in m]
    if phrasings:
        out["phrasings"] = float(np.mean(phrasings))
    if len(per_set) > 1:
        out["sets"] = {name: {k: m[k] for k in averaged if k in m} for name, m in per_set.items()}
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
