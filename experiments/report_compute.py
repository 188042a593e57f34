"""Report sections on what each checkpoint cost and where the time went: compute by part, the
comparison at matched compute (with intervals), the text pretraining stage, wall time per phase."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.evaluation.intervals import Difference, arm_difference
from shared.evaluation.metrics import METRICS, metric
from shared.tables import fmt as _fmt, markdown_table
from shared.text_pretraining import format_measurement


def _compute(rows: list[dict], arm: str, ms: int) -> float | None:
    """Mean over seeds of a checkpoint's whole compute (total FLOPs; training FLOPs in older runs)."""
    vals = [r.get("total_flops") or r.get("train_flops") for r in rows if r["arm"] == arm and r["milestone"] == ms]
    vals = [v for v in vals if v]
    return float(np.mean(vals)) if vals else None


def matched_compute(out: Path, rows: list[dict], arms: list[str], milestones: list[int],
                    reference: str) -> list[dict]:
    """Each checkpoint of the reference arm against each other arm's first checkpoint that cost at least as
    much compute, and each other arm's against the reference's, for the headline metrics, with the paired
    interval: where the arm that spent less leads with an interval excluding zero, it is ahead per FLOP at
    that budget (the comparison gives the other arm the benefit of the rounding up). ``reference``: as
    ``report_differences.reference_arm`` chose it."""
    pairs = [p for a in arms if a != reference for p in ((reference, a), (a, reference))]
    out_rows = []
    for a, b in pairs:
        for ms in milestones:
            fa = _compute(rows, a, ms)
            later = [(f, m) for m in milestones if (f := _compute(rows, b, m)) is not None and fa is not None and f >= fa]
            if not later:
                continue
            fb, mb = min(later)
            seeds = sorted({r["seed"] for r in rows if r["arm"] == a and r["milestone"] == ms}
                           & {r["seed"] for r in rows if r["arm"] == b and r["milestone"] == mb})
            for m in (x for x in METRICS if x.headline and x.per_clip):
                d = arm_difference(out, a, b, seeds, ms, m.key, milestone_b=mb) if seeds else None
                if d is not None:
                    out_rows.append({"a": a, "a_milestone": ms, "a_flops": fa, "b": b, "b_milestone": mb, "b_flops": fb,
                                     "metric": m.key, **d.to_json()})
    return out_rows


def matched_compute_lines(matched: list[dict]) -> list[str]:
    if not matched:
        return []
    table = []
    for r in matched:
        m = metric(r["metric"])
        d = Difference(r["diff"], r["lo"], r["hi"], r["seeds"], r["clips"])
        reading = {"leads": f"{r['a']} ahead per FLOP", "trails": f"{r['b']} ahead", "ties": "tie"}[d.verdict(m.higher_is_better)]
        table.append((f"{r['a']} @ {r['a_milestone']:,} ({r['a_flops']:.2e})", f"{r['b']} @ {r['b_milestone']:,} ({r['b_flops']:.2e})",
                      m.label, _signed(d.diff, m.percent), _interval(d, m.percent), reading))
    return ["", "### At matched compute", "",
            "Each checkpoint (total FLOPs: training step, frozen encoder per sample, side models, text pretraining) "
            "against the first checkpoint of an arm it is compared with (the reference against each other arm, each "
            "other arm against the reference) that cost at least as much; difference first − second with its 95% "
            "interval. The first arm spent less, so a lead of the first is a lead per FLOP.", "",
            *markdown_table(["checkpoint (FLOPs)", "against (FLOPs)", "metric", "difference", "95% interval", "reading"],
                            table, "llllll")]


def _signed(x: float, pct: bool) -> str:
    return ("+" if x >= 0 else "") + _fmt(x, pct)


def _interval(d: Difference, pct: bool) -> str:
    return f"[{_signed(d.lo, pct)}, {_signed(d.hi, pct)}]"


def compute_lines(rows: list[dict], arms: list[str], milestones: list[int]) -> list[str]:
    """The whole compute behind each checkpoint, by part (mean over seeds, FLOPs)."""
    parts = [("train_flops", "training step"), ("encoder_flops", "frozen encoder (per sample)"),
             ("target_flops", "target embeddings"), ("decoder_flops", "Y-decoder training"),
             ("text_pretraining_flops", "text pretraining"), ("total_flops", "total")]
    if not any("total_flops" in r for r in rows):
        return []
    table = []
    for ms in milestones:
        for a in arms:
            rs = [r for r in rows if r["arm"] == a and r["milestone"] == ms]
            if rs:
                table.append([f"{ms:,}", a, *(f"{np.mean([r.get(k) or 0 for r in rs]):.2e}" for k, _ in parts)])
    return ["## Compute", "",
            "FLOPs behind each checkpoint. Training step: forward and backward of the trained parts (GradCache's "
            "second forward where the loop runs it). Frozen encoder: its forward per sample seen, as features computed "
            "in the step would cost (a feature cache pays it once per clip, the same for every arm). Target "
            "embeddings: the frozen Y-encoder once per distinct training caption. Y-decoder: its training on the "
            "captions the arm saw. Text pretraining: the models the arm starts from, counted in full for each arm.",
            "", *markdown_table(["samples seen", "arm", *(h for _, h in parts)], table, "rl" + "r" * len(parts)), ""]


def text_pretraining_lines(summary: dict) -> list[str]:
    """What the text pretraining stage trained and what it reached (summary.json, from its records)."""
    records = summary.get("text_pretraining") or {}
    if not records:
        return []
    rows = []
    if "lm" in records:
        r = records["lm"]
        rows.append(("base LM (every arm)", f"{r['params']:,}", f"{r['steps']} steps, {r['tokens']:,} tokens",
                     f"{r['seconds']:.0f}", f"{r['train_flops']:.2e}",
                     f"val loss {format_measurement(r['val_loss_per_token'])} nats/token (untrained {format_measurement(r['val_loss_per_token_untrained'])})"))
    if "y_encoder" in records:
        r = records["y_encoder"]
        rows.append(("Y-encoder (target space)", f"{r['params']:,}", f"{r['steps']} steps", f"{r['seconds']:.0f}",
                     f"{r['train_flops']:.2e}",
                     f"val captions whose nearest other caption has the same meaning: {format_measurement(r['paraphrase_nn_same_meaning'], '.1%')} "
                     f"(untrained {format_measurement(r['paraphrase_nn_same_meaning_untrained'], '.1%')})"))
    return ["## Text pretraining", "",
            "Before the comparison, from the training split's captions alone (the captions of one clip form a group; no "
            "video, no labels, no val/test text; one model for every seed): the base LM by next-token prediction on "
            "each group's captions in sequence, the Y-encoder by InfoNCE on pairs of captions of one group, then "
            "frozen. Val numbers are measurements only.", "",
            *markdown_table(["model", "parameters", "training", "seconds", "FLOPs", "reached (val)"], rows, "lrrrrl"), ""]


def time_lines(timings: dict, decoded: list[str] = ()) -> list[str]:
    """Wall seconds per phase of each invocation, and per milestone (timings.json); ``decoded``: the
    arms with a Y-decoder, whose fit is part of preparing their evaluation."""
    if not timings:
        return []
    lines = ["## Where the time went", ""]
    for i, inv in enumerate(timings.get("invocations", [])):
        phases = inv.get("phases", {})
        if len(timings["invocations"]) > 1:
            lines += [f"Invocation {i + 1} of {len(timings['invocations'])}:", ""]
        total = inv.get("total_s", sum(phases.values()))
        lines += markdown_table(["phase", "seconds", "share"],
                                [(k, f"{v:.1f}", f"{100 * v / total:.0f}%" if total else "") for k, v in phases.items()]
                                + [("**total**", f"**{total:.1f}**", "")], "lrr") + [""]
    per = list(timings.get("milestones", {}).values())
    if per:
        cols = [("train_s", "training since the previous milestone"), ("load_and_prepare_s", "load + prepare evaluation"),
                ("caption_s", "captioning"), ("classify_s", "classification"), ("eval_s", "evaluation, all")]
        fit = (f" (preparing evaluation includes the Y-decoder fit of {', '.join(decoded)} on the captions each saw)"
               if decoded else "")
        lines += [f"Per milestone, seconds{fit}:", "",
                  *markdown_table(["arm", "seed", "milestone", *(h for _, h in cols)],
                                  [(r["arm"], r["seed"], f"{r['milestone']:,}", *(f"{r[k]:.1f}" if k in r else "–" for k, _ in cols))
                                   for r in per], "llr" + "r" * len(cols)), ""]
    return lines
