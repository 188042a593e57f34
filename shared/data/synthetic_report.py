"""The synthetic benchmark's own sentences in a report and a model card: what it is (a few meanings
rendered as clips, captions from a grammar), what its meaning accuracy and template reference
points mean, and why its CIDEr is on its own scale. Used only where the synthetic source ran."""
from __future__ import annotations

from shared.data import synthetic
from shared.data.report import DataSections, captions_text, phrasings_used, split_counts, with_meaning
from shared.report_sections import RunFiles


def describe(data: dict, cfg_synthetic: dict) -> str:
    """"synthetic benchmark: ... clips, ... labels, ...": from the run's data record, or its config."""
    s = cfg_synthetic
    clips = split_counts(data) if data else f"{s['train_clips']:,} train / {s['val_clips']:,} val / {s['test_clips']:,} test clips"
    captions = captions_text(data["splits"]["train"]) if data else f"{s['captions_per_clip']} captions per clip"
    return (f"synthetic benchmark with few meanings: {clips}, {synthetic.NUM_CLASSES} labels (colour × shape × "
            f"action), {captions} worded by its grammar at paraphrase level {s['paraphrase']}")


class SyntheticSections(DataSections):
    def data(self, run: RunFiles) -> list[str]:
        return [f"- Data: {describe(run.data, run.cfg['data']['synthetic'])}."]

    def notes(self, run: RunFiles) -> list[str]:
        if not any(r.get("meaning") is not None for r in run.rows):
            return []
        return ["meaning %: the caption read back by the benchmark's grammar into colour, shape and motion "
                "(shared/data/synthetic_reader.py), exact = all three right; an attribute named twice with different "
                "values counts as wrong. Per attribute: `meaning_colour`, `meaning_shape`, `meaning_action` in "
                "metrics.jsonl."]

    def references(self, run: RunFiles) -> list[tuple[str, str]]:
        """Templates that know part of each clip's meaning (``template_<attributes>_cider``, baselines.json)."""
        base, refs = run.base, []
        fixed = base.get("template_fixed", {})
        for key in sorted((k for k in base if k.startswith("template_") and k.endswith("_cider")), key=len):
            known = key[len("template_"):-len("_cider")].split("_")
            rest = [f"{a} (“{v}”)" for a, v in fixed.items() if a not in known] or ["attributes"]
            refs.append((f"CIDEr of a template saying each clip's true {' and '.join(known)} with the most frequent "
                         f"training {' and '.join(rest)}, in the canonical phrasing",
                         with_meaning(base, base[key], key[:-len("cider")] + "meaning")))
        return refs

    def controls(self, run: RunFiles) -> list[str]:
        k = phrasings_used(run.rows)
        if k <= 1:
            return ["- Classification candidates: each label's canonical text, the same texts for every arm "
                    "(eval.phrasings=1: no top-k over phrasings)."]
        return [f"- Classification candidates: each label's canonical text (top-5), and {k} phrasings per label in "
                "the same sentence forms for every label, scored by their mean (top-5 phrasings), the same texts for "
                "every arm."]

    def scale(self, run: RunFiles) -> list[str]:
        return ["CIDEr here is computed against the benchmark's own references, whose ceiling is given above."]

    def card(self, data: dict, cfg: dict) -> str:
        s = cfg["data"]["synthetic"]
        return f"The {describe(data, s)} (seed {s['seed']})."


