"""How sure is a difference between two arms? Paired bootstrap intervals over clips and seeds.

Both arms of a seed are evaluated on the same clips, so the difference is taken clip by clip
(paired), which removes the spread due to which clips are hard. The interval resamples clips with
replacement within each seed, and seeds with replacement where several ran (a hierarchical
bootstrap: the seed-to-seed spread counts, and with one seed the interval only says how much the
test clips alone could move the difference). Several evaluation sets: each set's clips resampled
within the set and the set means averaged, as the metric itself averages them.

Per-clip values come from the predictions files: CIDEr-D per clip (the corpus CIDEr is their mean;
resampling keeps the document frequencies of the whole evaluation corpus, the usual approximation),
for top-k, whether the true label ranked in the top k, and for meaning accuracy whether the caption
read back is the clip's meaning (synthetic data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.files import read_jsonl

LEVEL = 0.95
RESAMPLES = 2000


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


@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` (mean over seeds of the metric's difference) with its interval."""

    diff: float
    lo: float
    hi: float
    seeds: int
    clips: int

    def verdict(self, higher_is_better: bool = True) -> str:
        """'leads' / 'trails' (a against b) when the interval excludes 0, else 'ties'."""
        if self.lo > 0 or self.hi < 0:
            return "leads" if (self.lo > 0) == higher_is_better else "trails"
        return "ties"

    def to_json(self) -> dict:
        return {"diff": self.diff, "lo": self.lo, "hi": self.hi, "seeds": self.seeds, "clips": self.clips,
                "level": LEVEL}


def paired_difference(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]],
                      resamples: int = RESAMPLES, seed: int = 0) -> Difference:
    """``a``, ``b``: per seed, {set: per-clip values}, the same clips in the same order in both."""
    diffs = []
    for sa, sb in zip(a, b):
        if sa.keys() != sb.keys() or any(len(sa[k]) != len(sb[k]) for k in sa):
            raise ValueError("paired difference: the two arms were not evaluated on the same clips")
        diffs.append({k: np.asarray(sa[k], float) - np.asarray(sb[k], float) for k in sa})
    if not diffs or not all(diffs):
        raise ValueError("paired difference: no clips")
    point = float(np.mean([np.mean([d.mean() for d in s.values()]) for s in diffs]))
    rng = np.random.default_rng(seed)
    n_seeds = len(diffs)
    boot = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(n_seeds, size=n_seeds) if n_seeds > 1 else [0]
        boot[r] = np.mean([np.mean([d[rng.integers(len(d), size=len(d))].mean() for d in diffs[s].values()])
                           for s in chosen])
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return Difference(point, float(lo), float(hi), n_seeds, sum(len(d) for d in diffs[0].values()))


def arm_difference(out: Path, arm_a: str, arm_b: str, seeds: list[int], milestone: int, key: str) -> Difference | None:
    """The paired difference of metric ``key`` between two arms at a milestone, from the
    predictions files of ``out`` (None where a seed or the metric's per-clip values are missing)."""
    a, b = [], []
    for seed in seeds:
        pa, pb = predictions_path(out, arm_a, seed, milestone), predictions_path(out, arm_b, seed, milestone)
        if not (pa.is_file() and pb.is_file()):
            return None
        va, vb = per_clip_values(read_jsonl(pa), key), per_clip_values(read_jsonl(pb), key)
        if not va or va.keys() != vb.keys():
            return None
        common = {s: sorted(set(va[s]) & set(vb[s])) for s in va}
        a.append({s: np.array([va[s][i] for i in ids]) for s, ids in common.items() if ids})
        b.append({s: np.array([vb[s][i] for i in ids]) for s, ids in common.items() if ids})
    return paired_difference(a, b) if a and all(a) else None
