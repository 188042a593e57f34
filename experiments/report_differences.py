"""The report's comparison of N arms: one reference arm (``report.reference``, default the first of
``arms``) against every other arm, each difference reference − arm with its 95% interval, who leads
per headline metric and milestone, and trainable-parameter ratios reference / arm.

Differences are written reference − arm so that the default run (arms jepa, vlm) reads jepa − vlm,
as the README and docs/results.md do; every header names which way it goes.
"""
from __future__ import annotations

from pathlib import Path

from experiments.report_compute import _interval, _signed
from shared.config import ConfigError
from shared.evaluation.intervals import LEVEL, arm_difference
from shared.evaluation.metrics import METRICS
from shared.report_sections import RunFiles
from shared.tables import markdown_table


def reference_arm(cfg: dict, arms: list[str], chosen: str | None = None) -> str:
    """The arm the others are compared with: ``chosen`` (a redraw's ``report.reference=``), else the
    run's ``report.reference``, else the first of its ``arms`` that has rows, else the first with rows."""
    chosen = chosen or (cfg.get("report") or {}).get("reference")
    if chosen is not None:
        if chosen not in arms:
            unrun = chosen in (cfg.get("arms") or [])
            raise ConfigError(f"report.reference: {chosen!r} " + ("has no rows in metrics.jsonl yet" if unrun else
                              "is not one of this run's arms") + f"; arms: {arms}")
        return chosen
    return next((a for a in cfg.get("arms") or [] if a in arms), arms[0])


def others(run: RunFiles) -> list[str]:
    return [a for a in run.arms if a != run.reference]


def arm_differences(out: Path, rows: list[dict], pairs: list[tuple[str, str]], milestones: list[int]) -> dict:
    """(a, b, milestone, metric) -> Difference of a - b with its 95% interval, for every metric the
    predictions hold clip by clip, over the seeds both arms ran."""
    out_d = {}
    for a, b in pairs:
        for ms in milestones:
            seeds = sorted({r["seed"] for r in rows if r["arm"] == a and r["milestone"] == ms}
                           & {r["seed"] for r in rows if r["arm"] == b and r["milestone"] == ms})
            for m in (x for x in METRICS if x.per_clip):
                d = arm_difference(out, a, b, seeds, ms, m.key) if seeds else None
                if d is not None:
                    out_d[(a, b, ms, m.key)] = d
    return out_d


def _reading(d, m, ref: str, arm: str) -> str:
    """Who leads: an arm only when the 95% interval of the paired difference excludes zero."""
    return {"leads": f"{ref} leads", "trails": f"{arm} leads", "ties": "tie"}[d.verdict(m.higher_is_better)]


def difference_table(run: RunFiles) -> list[str]:
    """Every per-clip metric's difference reference − arm, per milestone and arm, with its interval. With
    one other arm the header names it (jepa − vlm); with more, an arm column says which."""
    ref, rest = run.reference, others(run)
    if not rest:
        return []
    one = len(rest) == 1
    rows = [(f"{ms:,}", m.label, *([] if one else [a]), _signed(d.diff, m.percent), _interval(d, m.percent),
             _reading(d, m, ref, a))
            for ms in run.milestones for m in METRICS if m.per_clip for a in rest
            if (d := run.diffs.get((ref, a, ms, m.key))) is not None]
    header = ["samples seen", "metric", *([] if one else ["arm"]), f"{ref} − {rest[0]}" if one else f"{ref} − arm",
              "95% interval", "reading"]
    return markdown_table(header, rows, "rl" + ("" if one else "l") + "lll") if rows else []


def leads_table(run: RunFiles) -> list[str]:
    """Who leads, per headline metric and arm against the reference (rows) and milestone (columns)."""
    ref, rows = run.reference, []
    for m in (x for x in METRICS if x.headline):
        for a in others(run):
            cells = [_reading(d, m, ref, a) if (d := run.diffs.get((ref, a, ms, m.key))) else "–" for ms in run.milestones]
            if any(c != "–" for c in cells):
                rows.append([m.label, f"{ref} vs {a}", *cells])
    return markdown_table(["metric", "arms", *(f"{ms:,}" for ms in run.milestones)], rows,
                          "ll" + "l" * len(run.milestones)) if rows else []


def difference_lines(run: RunFiles) -> list[str]:
    """The section on the arms' differences: how the intervals are made, the table, who leads."""
    table = difference_table(run)
    if not table:
        return []
    n = len(run.seeds)
    how = (f"{n} seeds: a t-interval over the per-seed paired differences (t on {n - 1} degrees of freedom), "
           "widened by a bootstrap that resamples the test labels (all clips of a label together, the same draw "
           "for every seed)" if n > 1 else
           "one seed: a bootstrap that resamples the test labels (all clips of a label together), so the "
           "interval omits seed-to-seed spread")
    rest = others(run)
    minus = f"{run.reference} − {rest[0] if len(rest) == 1 else 'arm'}"
    return ["", f"### Arm difference with {100 * LEVEL:.0f}% intervals", "",
            f"{', '.join(rest)} against the reference arm **{run.reference}** (`report.reference`): {minus}, "
            f"positive where {run.reference} scores higher. Paired difference per clip, mean over seeds "
            f"({how}; shared/evaluation/intervals.py). A lead is called only when the interval excludes zero.",
            "", *table, "", "Who leads, per milestone (from the intervals above):", "", *leads_table(run)]


def arms_line(run: RunFiles) -> str:
    """The setup's bullet naming the arms and which is the reference."""
    rest = others(run)
    named = ", ".join(f"{a} (reference)" if a == run.reference else a for a in run.arms)
    if not rest:
        return f"- Arms: {named}."
    return (f"- Arms: {named}; {'both' if len(run.arms) == 2 else f'all {len(run.arms)}'} on the same data, steps and "
            f"evaluation; {rest[0] if len(rest) == 1 else 'every other arm'} compared with the reference (`report.reference`).")


def ratio_line(params: dict, run: RunFiles) -> list[str]:
    """Trainable parameters of the reference over each other arm's (the paper's VL-JEPA/VLM is ~0.4)."""
    ref = run.reference
    ratios = [f"{ref}/{a}: {params[ref] / max(1, params[a]):.2f}" for a in others(run) if a in params]
    return [f"\nTrainable ratio {', '.join(ratios)} (the reference over each arm; paper: VL-JEPA/VLM ~0.5B/1.2B ≈ 0.4)."] \
        if ratios else []
