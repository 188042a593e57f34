"""What data a comparison ran on, recorded once (summary.json's "data") and described in its report
and model cards: source, manifest, clips per split, labels, captions per clip, and the clips and
label clusters each evaluation set rests on, with a warning where they are too few for an interval.

The generic description serves any manifest; the synthetic benchmark's own sentences live with the
benchmark (shared/data/synthetic_report.py) and appear only where it ran (shared/data/report_sources.py
picks the source's sections).
"""
from __future__ import annotations

import numpy as np

from shared.evaluation.intervals import MIN_CLUSTERS
from shared.evaluation.metrics import metric
from shared.report_sections import ReportSections, RunFiles
from shared.tables import fmt


def split_record(source, n: int | None = None) -> dict:
    """Clips, labels and captions per clip of a split's first ``n`` clips (all by default)."""
    labels = source.labels()[:n]
    counts = source.caption_counts()[:n]
    known = labels[labels >= 0]
    out = {"clips": int(len(labels)), "labels": int(len(np.unique(known))), "unlabelled": int(len(labels) - len(known))}
    if len(counts):
        out["captions_per_clip"] = [int(counts.min()), round(float(counts.mean()), 2), int(counts.max())]
    return out


def data_record(cfg, dataset, sets: dict[str, tuple]) -> dict:
    """summary.json's "data": ``sets`` maps each evaluation set's name to (its ClipSource, clips evaluated)."""
    record = {"source": cfg.data.source, "dataset": dataset.name, "labels": len(dataset.label_texts),
              "splits": {name: split_record(src) for name, src in dataset.splits.items()},
              "eval": {name: {"split": cfg.eval.split, **split_record(src, n)} for name, (src, n) in sets.items()}}
    if cfg.data.source == "manifest":
        record["manifest"] = cfg.data.manifest.path
        record["excluded"] = cfg.data.manifest.exclude
    return record


def clusters(data: dict) -> int | None:
    """The independent units the label-cluster bootstrap resamples: labels plus unlabelled clips, over sets."""
    sets = data.get("eval") or {}
    return sum(s["labels"] + s["unlabelled"] for s in sets.values()) if sets else None


def few_clips_warning(data: dict) -> str | None:
    """A sentence where the evaluation rests on fewer label clusters than an interval can carry."""
    n = clusters(data)
    if n is None or n >= MIN_CLUSTERS:
        return None
    clips = sum(s["clips"] for s in data["eval"].values())
    return (f"**Few clips: read no number below as a finding.** The evaluation rests on {clips:,} clips in {n} "
            f"label clusters; the label-cluster bootstrap behind every interval needs about {MIN_CLUSTERS} "
            "(shared/evaluation/intervals.py), so its intervals are unreliable and leads or ties called from them "
            "mean little. Evaluate on more clips (a larger val/test split, or eval.max_clips=0).")


def split_counts(data: dict) -> str:
    return " / ".join(f"{s['clips']:,} {name}" for name, s in data["splits"].items()) + " clips"


def captions_text(split: dict) -> str:
    lo, mean, hi = split["captions_per_clip"]
    return f"{lo} captions per clip" if lo == hi else f"{lo}–{hi} captions per clip (mean {mean:g})"


def with_meaning(base: dict, cider_value: float, key: str) -> str:
    """"CIDEr (meaning x%)" where the data reads a reference point's captions back (baselines.json's key)."""
    return fmt(cider_value) + (f" (meaning {fmt(base[key], True)}%)" if key in base else "")


def phrasings_used(rows: list[dict]) -> int:
    """Phrasings per label the classification actually scored (1: each label's text alone)."""
    return int(max((r.get("phrasings") or 1) for r in rows)) if rows else 1


class DataSections(ReportSections):
    """Any data: what ran, read from the run's data record (config only, for runs from before it)."""

    def data(self, run: RunFiles) -> list[str]:
        d, manifest = run.data, run.cfg["data"]["manifest"]
        if not d:
            return [f"- Data: manifest `{manifest['path']}` (clip counts not recorded by this run)."]
        train = d["splits"].get("train", {})
        captions = f"; {captions_text(train)} in train" if train.get("captions_per_clip") else ""
        excluded = f"; unreadable clips listed in `{d['excluded']}` left out" if d.get("excluded") else ""
        return [f"- Data: manifest `{d['manifest']}`: {split_counts(d)}; {d['labels']:,} labels{captions}{excluded}."]

    def warnings(self, run: RunFiles) -> list[str]:
        warning = few_clips_warning(run.data)
        return [f"> {warning}", ""] if warning else []

    def controls(self, run: RunFiles) -> list[str]:
        return ["- Classification candidates: each label's text, the same texts for every arm; the data gives no "
                "other phrasings of a label, so no top-k over phrasings."]

    def scale(self, run: RunFiles) -> list[str]:
        return ["CIDEr here is computed against this data's own references"
                + (", whose annotator ceiling is given above." if "human_ceiling_cider" in run.base else ".")]

    def card(self, data: dict, cfg: dict) -> str:
        """A model card's sentence on the training data (``cfg``: the run's config as a dict)."""
        if not data:
            return f"Manifest `{cfg['data']['manifest']['path']}` (clip counts not recorded)."
        return (f"Manifest `{data['manifest']}`: {split_counts(data)}, {data['labels']:,} labels, "
                f"{captions_text(data['splits']['train'])} in train.")


def metric_clips(key: str, data: dict) -> int | None:
    """The clips a metric rests on, over evaluation sets: top-k and meaning only labelled clips, the others all."""
    sets = (data.get("eval") or {}).values()
    if not sets:
        return None
    labelled = metric(key).labelled_only
    return sum(s["clips"] - (s["unlabelled"] if labelled else 0) for s in sets)


def evaluation_card_lines(data: dict) -> list[str]:
    """A model card's sentences on the clips its metrics rest on, with the few-clips warning."""
    sets = [f"`{name}` ({s['clips']:,} clips, {s['labels']} labels, the `{s['split']}` split)"
            for name, s in (data.get("eval") or {}).items()]
    lines = [f"The metrics below are measured on evaluation set{'s' if len(sets) > 1 else ''} {', '.join(sets)}"
             + (", averaged over the sets" if len(sets) > 1 else "")
             + "; the table's clips column gives the clips each metric rests on (top-k and meaning: labelled clips only)."] \
        if sets else []
    warning = few_clips_warning(data)
    return [*lines, *([f"> {warning}"] if warning else [])]
