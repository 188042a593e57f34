"""How sure is a difference between two arms? A seed t-interval widened by a label-cluster bootstrap.

Both arms of a seed are evaluated on the same clips, so the difference is taken clip by clip
(paired), which removes the spread due to which clips are hard. Two sources of noise remain, and
the interval counts both:

* Test clips. Clips that share a label behave alike (a model's rank for the true label is nearly
  fixed by the label), so the independent units are labels, not clips. The clip component is a
  cluster bootstrap: each replicate draws a set's labels with replacement (every clip of a drawn
  label comes along, clips without a label are clusters of one) and applies the SAME draw to every
  seed, since all seeds are evaluated on the same clips; the replicate's value is the mean over
  seeds of the paired difference (per seed, the mean over sets of the set's mean clip difference).
  Several evaluation sets: each set's labels are drawn within the set.
* Training seeds. With S >= 2 seeds the interval is a t-interval over the S per-seed differences,
  widened by the clip sampling that all seeds share:
      var = var(per-seed differences) / S + shared,
      half-width = t(0.975, S - 1 degrees of freedom) * sqrt(var).
  The between-seed variance holds the training-seed noise and each seed's own clip noise (the
  seed x clip interaction); what it cannot show is the part of the clip (label) sampling common to
  all seeds, which moves every seed alike. ``shared`` estimates that part as the bootstrap
  replicates' mean covariance between two seeds, (S var(seed mean) - mean var(one seed)) / (S - 1),
  floored at 0 (the bootstrap variance of the seed mean itself would count the seeds' own clip
  noise twice). The t quantile with S - 1 degrees of freedom (12.7 for two seeds, 4.3 for three)
  is applied to the whole: few seeds cannot pin the seed spread, and the interval says so; where the
  shared label sampling dominates, this errs wide (the shared part is measured on many labels).
  With one seed the interval is the cluster bootstrap's percentile interval alone: it says how much
  the test labels could move the difference, nothing about other seeds (``Difference.seeds == 1``).

The point estimate is the mean over seeds of the per-seed paired difference.

The former method (clips resampled independently within each seed, seeds resampled with
replacement) was too narrow: with three seeds, resampling seeds gives roughly the worst-to-best seed
range, and clips of one label were treated as independent.

Per-clip values come from the predictions files: CIDEr-D per clip (the corpus CIDEr is their mean;
resampling keeps the document frequencies of the whole evaluation corpus, the usual approximation),
for top-k, whether the true label ranked in the top k, and for meaning accuracy whether the caption
read back is the clip's meaning (synthetic data); each clip's label (``label``, absent in older
files: each clip is then its own cluster) gives its cluster.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

import numpy as np
from scipy.stats import t as student_t

from shared.files import read_jsonl

LEVEL = 0.95
RESAMPLES = 2000
METHOD = "seed t-interval + label-cluster bootstrap"
METHOD_ONE_SEED = "label-cluster bootstrap (one seed)"
# Fewer independent units than this (labels, plus clips without one, summed over sets) and the
# cluster bootstrap is not to be trusted: few clusters give few distinct replicates and a percentile
# interval that covers less than it claims (a few dozen clusters is the usual floor for a cluster
# bootstrap). The report and model cards warn below it (shared/data/report.py).
MIN_CLUSTERS = 30


def predictions_path(out: Path, arm: str, seed: int, milestone: int) -> Path:
    return Path(out) / "predictions" / f"{arm}-seed{seed}-{milestone:010d}.jsonl"


def per_clip_values(examples: list[dict], key: str) -> dict[str, dict[str, float]]:
    """{set: {clip id: value}} of metric ``key`` (cider, topK, topK_phrasings, meaning,
    meaning_<attribute>: any other key is read as a number stored under its own name, e.g. 1/0 for
    meaning); clips without a label are left out of top-k and meaning. Empty when the examples do
    not carry the metric."""
    out: dict[str, dict[str, float]] = {}
    for e in examples:
        if key == "cider":
            value = e.get("cider")
        elif key.startswith("top"):
            k, _, suffix = key[3:].partition("_")
            rank = e.get("rank_phrasings" if suffix else "rank", -1)
            value = float(rank < int(k)) if rank >= 0 else None
        else:  # stored clip by clip under the metric's own key (meaning: 1 read right, 0 not)
            value = e.get(key)
            value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if value is not None:
            out.setdefault(e.get("set", ""), {})[e["id"]] = value
    return out


def per_clip_clusters(examples: list[dict]) -> dict[str, dict[str, Hashable]]:
    """{set: {clip id: cluster}}: the clip's label where it has one (``label`` >= 0), else the clip
    itself (a cluster of one; so are all clips of older predictions files, which carry no label)."""
    out: dict[str, dict[str, Hashable]] = {}
    for e in examples:
        label = e.get("label", -1)
        out.setdefault(e.get("set", ""), {})[e["id"]] = ("label", int(label)) if label >= 0 else ("clip", e["id"])
    return out


@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` (mean over seeds of the metric's difference) with its interval.

    ``seeds == 1``: the interval covers only the test clips' (labels') sampling, not seed-to-seed
    spread. ``clusters``: the labels (and unlabelled clips) resampled, summed over sets."""

    diff: float
    lo: float
    hi: float
    seeds: int
    clips: int
    clusters: int = 0
    method: str = METHOD
    per_seed: tuple[float, ...] = ()

    def verdict(self, higher_is_better: bool = True) -> str:
        """'leads' / 'trails' (a against b) when the interval excludes 0, else 'ties'."""
        if self.lo > 0 or self.hi < 0:
            return "leads" if (self.lo > 0) == higher_is_better else "trails"
        return "ties"

    def to_json(self) -> dict:
        return {"diff": self.diff, "lo": self.lo, "hi": self.hi, "seeds": self.seeds, "clips": self.clips,
                "clusters": self.clusters, "method": self.method, "per_seed": list(self.per_seed),
                "level": LEVEL}


def _paired(a, b) -> list[dict[str, np.ndarray]]:
    """Per seed, {set: per-clip a - b}; refused where a seed's arms or the seeds differ in clips."""
    diffs = []
    for sa, sb in zip(a, b, strict=True):
        if sa.keys() != sb.keys() or any(len(sa[k]) != len(sb[k]) for k in sa):
            raise ValueError("paired difference: the two arms were not evaluated on the same clips")
        diffs.append({k: np.asarray(sa[k], float) - np.asarray(sb[k], float) for k in sa})
    if not diffs or not all(diffs) or not all(len(d) for s in diffs for d in s.values()):
        raise ValueError("paired difference: no clips")
    if any(s.keys() != diffs[0].keys() or any(len(s[k]) != len(diffs[0][k]) for k in s) for s in diffs):
        raise ValueError("paired difference: the seeds were not evaluated on the same clips")
    return diffs


def paired_difference(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]],
                      resamples: int = RESAMPLES, seed: int = 0,
                      clusters: dict[str, list[Hashable] | np.ndarray] | None = None) -> Difference:
    """``a``, ``b``: per seed, {set: per-clip values}, the same clips in the same order in both arms
    and in every seed. ``clusters``: {set: each clip's cluster (its label)}, in the clips' order; a
    set left out (or ``None``) makes each of its clips its own cluster. See the module docstring."""
    diffs = _paired(a, b)
    n_seeds = len(diffs)
    rng = np.random.default_rng(seed)
    # per set: cluster sums of the clip differences [seeds, G] and cluster sizes [G]; a replicate
    # draws G clusters with replacement (multinomial counts w) and its set mean is w.sums / w.sizes
    per_seed_boot = np.zeros((resamples, n_seeds))
    n_clusters = 0
    for name in diffs[0]:
        d = np.stack([s[name] for s in diffs])  # [seeds, clips]
        keys = list(clusters[name]) if clusters and name in clusters else list(range(d.shape[1]))
        if len(keys) != d.shape[1]:
            raise ValueError(f"paired difference: set {name!r} has {d.shape[1]} clips but {len(keys)} cluster keys")
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        code = np.fromiter((index[k] for k in keys), int, len(keys))
        g = len(index)
        sizes = np.bincount(code, minlength=g).astype(float)
        sums = np.stack([np.bincount(code, weights=row, minlength=g) for row in d])  # [seeds, G]
        w = rng.multinomial(g, np.full(g, 1.0 / g), size=resamples).astype(float)  # [R, G]
        per_seed_boot += (w @ sums.T) / (w @ sizes)[:, None]
        n_clusters += g
    per_seed_boot /= len(diffs[0])
    boot = per_seed_boot.mean(axis=1)  # the seed mean, under the same clusters for every seed
    per_seed = np.array([np.mean([d.mean() for d in s.values()]) for s in diffs])
    point = float(per_seed.mean())
    clips = sum(len(d) for d in diffs[0].values())
    if n_seeds == 1:
        lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
        method = METHOD_ONE_SEED
    else:
        seed_var = per_seed.var(ddof=1) / n_seeds  # training seeds, with each seed's own clip noise
        # the clip sampling common to all seeds, which the seed spread cannot show: the replicates'
        # mean covariance between two seeds = (S var(seed mean) - mean var(one seed)) / (S - 1)
        shared_var = max(0.0, (n_seeds * boot.var(ddof=1) - per_seed_boot.var(axis=0, ddof=1).mean()) / (n_seeds - 1))
        half = float(student_t.ppf(1 - (1 - LEVEL) / 2, n_seeds - 1)) * np.sqrt(seed_var + shared_var)
        lo, hi = point - half, point + half
        method = METHOD
    return Difference(point, float(lo), float(hi), n_seeds, clips, n_clusters, method,
                      tuple(float(x) for x in per_seed))


def arm_difference(out: Path, arm_a: str, arm_b: str, seeds: list[int], milestone: int, key: str,
                   milestone_b: int | None = None) -> Difference | None:
    """The paired difference of metric ``key`` between two arms at a milestone (``milestone_b``: arm b's
    checkpoint at another one, e.g. at matched compute), from the predictions files of ``out`` (None
    where a seed or the metric's per-clip values are missing). The clips compared are those every seed
    of both arms holds; their labels are the clusters."""
    values, cluster_of = [], {}
    for seed in seeds:
        pa = predictions_path(out, arm_a, seed, milestone)
        pb = predictions_path(out, arm_b, seed, milestone if milestone_b is None else milestone_b)
        if not (pa.is_file() and pb.is_file()):
            return None
        ea, eb = read_jsonl(pa), read_jsonl(pb)
        va, vb = per_clip_values(ea, key), per_clip_values(eb, key)
        if not va or va.keys() != vb.keys():
            return None
        values += [va, vb]
        for examples in (eb, ea):  # a clip's label is the data's: the same in every file
            for name, cs in per_clip_clusters(examples).items():
                cluster_of.setdefault(name, {}).update(cs)
    if not values or any(v.keys() != values[0].keys() for v in values):
        return None
    common = {s: sorted(set.intersection(*(set(v[s]) for v in values))) for s in values[0]}
    common = {s: ids for s, ids in common.items() if ids}
    if not common:
        return None
    a = [{s: np.array([va[s][i] for i in ids]) for s, ids in common.items()} for va in values[0::2]]
    b = [{s: np.array([vb[s][i] for i in ids]) for s, ids in common.items()} for vb in values[1::2]]
    clusters = {s: [cluster_of[s][i] for i in ids] for s, ids in common.items()}
    return paired_difference(a, b, clusters=clusters)
