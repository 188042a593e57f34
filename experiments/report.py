"""Figures, control audit and report.md from a sample-efficiency directory's files only.

``python -m experiments report --out DIR`` redraws everything from DIR without any model.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from experiments.selective_report import write_selective_outputs
from plots.curves import parameters, sample_efficiency
from shared.config import ConfigError, base_arm_name, parse_override, variant_changes
from shared.evaluation.audit import arm_controls, audit, audit_markdown
from shared.evaluation.metrics import METRICS, metric
from shared.files import atomic_path, read_json, read_jsonl, write_json_atomic, write_text_atomic
from shared.precision import describe as describe_precision, recorded
from shared.tables import markdown_table
from experiments.report_arms import arm_sections, decoder_arms
from experiments.report_differences import arm_differences, arms_line, difference_lines, ratio_line, reference_arm
from experiments.report_paper import paper_lines
from experiments.report_compute import (_fmt, _interval, _signed, compute_lines, matched_compute, matched_compute_lines,
                                        text_pretraining_lines, time_lines)
from shared.data.report import phrasings_used, with_meaning
from shared.data.report_sources import data_sections
from shared.report_sections import RunFiles, gather
from shared.training.checkpoint import RunDir

log = logging.getLogger(__name__)


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("report", help=help,
                       description="Rebuild DIR's figures and report from its result files only (sample-efficiency: "
                                   "metrics.jsonl, baselines.json, runs/*/config.yaml -> report.md and control audit; "
                                   "selective-decoding: selective_decoding.jsonl -> selective_report.md); no model is loaded. "
                                   "report.reference=ARM compares every arm with ARM instead of the run's reference.")
    p.add_argument("--out", "-o", required=True, type=Path, help="a sample-efficiency or selective-decoding output directory")
    p.add_argument("--publish", type=Path, default=None, metavar="DIR",
                   help="also copy the redrawn main figure into DIR (the README's docs/figures/ is made this way: "
                        "report --out runs/seeds --publish docs/figures)")
    p.set_defaults(run=redraw)


def redraw(args: argparse.Namespace) -> int:
    selective = (args.out / "selective_decoding.jsonl").is_file() and not (args.out / "metrics.jsonl").is_file()
    if selective:
        write_selective_outputs(args.out)
    else:
        write_outputs(args.out, _reference(getattr(args, "overrides", [])))
    if args.publish:
        name = "selective_decoding.png" if selective else "sample_efficiency.png"
        args.publish.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.publish / name) as tmp:
            shutil.copyfile(args.out / name, tmp)
        log.info("published %s", args.publish / name)
    return 0


def _reference(overrides: list[str]) -> str | None:
    """A redraw takes report.* overrides only: what was trained is fixed by then."""
    ref = None
    for key, value in map(parse_override, overrides):
        if key != "report.reference":
            raise ConfigError(f"{key}: a redraw takes only report.reference=ARM; the rest is fixed by the run")
        ref = str(value)
    return ref


def aggregate(rows: list[dict]) -> dict:
    """(arm, milestone) -> {metric: (mean, min, max)} and samples_seen."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["arm"], r["milestone"])].append(r)
    out = {}
    for key, rs in groups.items():
        agg = {"samples_seen": rs[0]["samples_seen"], "seeds": len(rs)}
        for m in [*(x.key for x in METRICS), "train_loss", "decoder_samples"]:
            vals = [r[m] for r in rs if r.get(m) is not None]
            if vals:
                agg[m] = (float(np.mean(vals)), float(np.min(vals)), float(np.max(vals)))
        out[key] = agg
    return out


def _cell(agg: dict, m: str, pct: bool) -> str:
    if m not in agg:
        return "–"
    mean, lo, hi = agg[m]
    s = _fmt(mean, pct)
    return s + (f" ({_fmt(lo, pct)}–{_fmt(hi, pct)})" if agg["seeds"] > 1 else "")


def write_outputs(out: Path, reference: str | None = None) -> bool:
    """Everything from OUT's files; ``reference``: compare against this arm, not the run's report.reference."""
    out = Path(out)
    rows = read_jsonl(out / "metrics.jsonl")
    if not rows:
        raise FileNotFoundError(f"{out / 'metrics.jsonl'}: no results to report")
    base = read_json(out / "baselines.json") if (out / "baselines.json").exists() else {}
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    summary = read_json(out / "summary.json") if (out / "summary.json").exists() else {}
    ran = set(r["arm"] for r in rows)  # in the run's order of `arms`, then any others its rows hold
    arms = [a for a in dict.fromkeys([*(cfg.get("arms") or []), *(r["arm"] for r in rows)]) if a in ran]
    reference = reference_arm(cfg, arms, reference)
    seeds = sorted({r["seed"] for r in rows})
    milestones = sorted({r["milestone"] for r in rows})

    # control audit, per seed: every arm's run directory of that seed
    audits = {}
    for seed in seeds:
        dirs = [RunDir.of(out, a, seed).root for a in arms if RunDir.of(out, a, seed).config.is_file()]
        if len(dirs) >= 2:
            audits[seed] = audit(dirs)
    if audits:
        write_json_atomic(out / "control_audit.json", {str(s): r for s, r in audits.items()})
        write_text_atomic(out / "control_audit.md", "\n\n".join(
            f"<!-- seed {s} -->\n" + audit_markdown(r).replace("# Control audit", f"# Control audit, seed {s}", 1)
            for s, r in audits.items()))

    figs = sample_efficiency(rows, base, out)
    params = {a: next(r["trainable_params"] for r in rows if r["arm"] == a) for a in arms}
    parameters(params, out)
    agg = aggregate(rows)
    variants = cfg.get("variants") or {}
    pairs = list(dict.fromkeys([(reference, a) for a in arms if a != reference]
                               + [(v, base_arm_name(variants, v)) for v in arms
                                  if v in variants and base_arm_name(variants, v) in arms]))
    diffs = arm_differences(out, rows, pairs, milestones)
    matched = matched_compute(out, rows, arms, milestones, reference)
    write_json_atomic(out / "matched_compute.json", matched)
    write_json_atomic(out / "differences.json", [{"a": a, "b": b, "milestone": ms, "metric": k, **d.to_json()}
                                                 for (a, b, ms, k), d in diffs.items()])
    timings = read_json(out / "timings.json") if (out / "timings.json").exists() else {}
    run = RunFiles(cfg, rows, base, summary, arms, seeds, milestones, diffs, reference)
    write_text_atomic(out / "report.md", render_report(run, agg, audits, params, matched)
                      + "\n".join(["", *time_lines(timings, decoder_arms(run))]))
    log.info("wrote %s, %s and report.md", figs[0].name, "control_audit.md")
    return True


def _precision(cfg, summary) -> str:
    p = summary.get("precision")
    return describe_precision(p) if p else recorded(cfg)  # recorded: a run from before precision was recorded


def control_lines(run: RunFiles, sections: dict) -> list[str]:
    """Every setting that gives one arm something the others lack, as the run was configured."""
    lm = run.cfg["lm"]
    start = {"captions": "pretrained on the training captions alone (text_pretraining), the same for every arm",
             None: "seeded random init, the same for every arm: no text knowledge"}
    lines = ["- Base LM (every arm's starting weights): " + start.get(lm["weights"], f"pretrained `{lm['weights']}`") + "."]
    for a in run.arms:
        lines += [f"- {a}: {line}" for line in arm_controls(a, run.cfg)]
    return lines + sections["controls"]  # the data's (classification candidates), then each arm's


def results_table(agg: dict, arms: list[str], milestones: list[int]) -> list[str]:
    """One row per (milestone, arm), a column per declared table metric (shared/evaluation/metrics.py) that
    some row holds: a metric the data cannot give (meaning % of free-text captions) gets no empty column."""
    columns = [m for m in METRICS if m.in_table and any(m.key in g for g in agg.values())]
    rows = []
    for ms in milestones:
        for a in arms:
            g = agg.get((a, ms))
            if g:
                dec = f"{g['decoder_samples'][0]:,.0f}" if "decoder_samples" in g else "–"
                rows.append([f"{g['samples_seen']:,}", a, *(_cell(g, m.key, m.percent) for m in columns),
                             _cell(g, "train_loss", False), dec])
    header = ["samples seen", "arm", *(m.label for m in columns), "train loss", "Y-decoder samples"]
    return markdown_table(header, rows, "rl" + "r" * (len(columns) + 2))


ABLATION_METRICS = ("cider", "top5", "recall1")  # the paper's Table 5 reports these per row


def variant_lines(cfg: dict, agg: dict, arms: list[str], last: int, diffs: dict) -> list[str]:
    """Each variant against its base arm at the last milestone: the ablation table (paper's Table 5
    shape), each difference with its 95% interval where the predictions allow one."""
    variants = cfg.get("variants") or {}
    rows = [a for a in arms if a in variants and base_arm_name(variants, a) in arms]
    if not rows:
        return []
    table = []
    for a in dict.fromkeys([base_arm_name(variants, v) for v in rows] + rows):
        base = base_arm_name(variants, a)
        g, b = agg.get((a, last), {}), agg.get((base, last), {})
        changes = ", ".join(f"`{base}.{k}={v}`" for k, (_, v) in variant_changes(cfg, a).items()) if a != base else "(base arm)"
        cells = []
        for m in ABLATION_METRICS:
            x = metric(m)
            d = diffs.get((a, base, last, m))
            if d is not None:
                delta = f"{_signed(d.diff, x.percent)} {_interval(d, x.percent)}"
            elif m in g and m in b and a != base:
                delta = _signed(g[m][0] - b[m][0], x.percent)
            else:
                delta = ""
            cells += [_cell(g, m, x.percent) if g else "–", delta]
        table.append([a, changes, *cells])
    header = ["arm", "changes", *(h for m in ABLATION_METRICS for h in (metric(m).label, "Δ"))]
    return ["## Variants against their base arm", "",
            f"Last milestone ({last:,} samples); mean over seeds (min–max); Δ = variant − base arm, in the metric's "
            "unit, with its 95% interval (seed t-interval + label-cluster bootstrap).", "",
            *markdown_table(header, table, "ll" + "r" * 2 * len(ABLATION_METRICS)), ""]


def _base_lm(lm: dict) -> str:
    arch = f"Llama architecture, {lm.get('num_layers', '?')} layers, width {lm.get('hidden_size', '?')}"
    if lm.get("weights") == "captions":
        return arch + ", pretrained on the training captions (see Text pretraining)"
    return f"`{lm['weights']}`" if lm.get("weights") else arch + ", seeded random init (no text knowledge)"


def _setup_lines(run: RunFiles, sections: dict) -> list[str]:
    """Title and what was run: data, encoder, LM, training, evaluation, time spent; then any warning."""
    cfg, base, d, milestones = run.cfg, run.base, run.cfg["data"], run.milestones
    lines = ["# Sample efficiency: embedding prediction (VL-JEPA) vs token prediction (VLM)", "",
         arms_line(run),
         *sections["data"], f"- Clips: {d['frames']} frames per clip; query “{d['query']}”.",
         f"- Encoder (frozen, shared): `{cfg['encoder']['model']}` at {cfg['encoder']['image_size']} px"
         + ("" if cfg["encoder"]["weights"] else " (seeded random init: no pretrained weights offline)") + ".",
         f"- Base LM: {_base_lm(cfg['lm'])}.",
         f"- Training: effective batch {cfg['train']['effective_batch']}, lr {cfg['train']['lr']} ({cfg['train']['schedule']}), "
         f"precision {_precision(cfg, run.summary)}, milestones {', '.join(f'{m:,}' for m in milestones)} samples; seeds {run.seeds}.",
         f"- Evaluation: {base.get('eval_clips', '?')} clips of the `{cfg['eval']['split']}` split"
         + (f" of {len(base['sets'])} sets ({', '.join(base['sets'])}), metrics averaged over sets" if "sets" in base else "")
         + "; corpus CIDEr-D "
         "(pycocoevalcap, PTB tokenizer, all references); top-k over all label texts; text-to-video R@1 for arms with embeddings.",
         "- Time spent: see [Where the time went](#where-the-time-went) (`timings.json`).", ""]
    return lines + sections["warnings"]


def _results_lines(run: RunFiles, agg: dict, sections: dict) -> list[str]:
    """The results table, per-set results and who leads at each milestone."""
    rows, arms, seeds, milestones = run.rows, run.arms, run.seeds, run.milestones
    phr = phrasings_used(rows)
    lines = ["## Results", "", (f"Mean over {len(seeds)} seeds (min–max in brackets)." if len(seeds) > 1 else
                          "One seed: at small sample counts the seed-to-seed spread is large; run seeds=0,1,2 before concluding."),
          "", " ".join(["CIDEr-D on pycocoevalcap's scale (0–10, not x100). top-k: each label scored by its text.",
                        *([f"\"top-5 % phrasings\": by the mean score of {phr:g} phrasings of it."] if phr > 1 else []),
                        *sections["notes"]]), ""]
    lines += results_table(agg, arms, milestones)
    if any("sets" in r for r in rows):
        last, per_set = max(milestones), []
        for a in arms:
            rs = [r for r in rows if r["arm"] == a and r["milestone"] == last and "sets" in r]
            for name in (rs[0]["sets"] if rs else {}):
                c = np.mean([r["sets"][name].get("cider", np.nan) for r in rs])
                t5 = np.mean([r["sets"][name].get("top5", np.nan) for r in rs])
                per_set.append([name, a, _fmt(c), _fmt(t5, True)])
        lines += ["", "Per evaluation set (last milestone, mean over seeds):", "",
              *markdown_table(["set", "arm", "CIDEr", "top-5 %"], per_set, "llrr")]
    return lines + difference_lines(run) + [""]


def _reference_lines(base: dict, sections: dict) -> list[str]:
    """Baselines and ceilings that put the results on a scale: the data's own, then the data source's and arms'."""
    refs = []
    if "chance_top5" in base:
        classes = f"{base['classes']} classes" if "classes" in base else "mean over sets"
        refs.append((f"chance top-1 / top-5 ({classes})", f"{100 * base['chance_top1']:.1f}% / {100 * base['chance_top5']:.1f}%"))
    if "most_frequent_caption_cider" in base:
        said = f" (“{base['most_frequent_caption']}”)" if "most_frequent_caption" in base else " (mean over sets)"
        refs.append((f"CIDEr of always answering the most frequent training caption{said}",
                     with_meaning(base, base["most_frequent_caption_cider"], "most_frequent_caption_meaning")))
    if "retrieval_r1_ceiling" in base:
        refs.append(("text-to-video R@1 of a perfect model (clips sharing a label are indistinguishable)",
                     f"{100 * base['retrieval_r1_ceiling']:.1f}%"))
    if "human_ceiling_cider" in base:
        refs.append(("CIDEr of one reference against the others (annotator ceiling)",
                     with_meaning(base, base["human_ceiling_cider"], "human_ceiling_meaning")))
    refs += sections["references"]
    return ["## Reference points", "", *markdown_table(["reference", "value"], refs)]


def _parameter_lines(params, run: RunFiles) -> list[str]:
    """Figures, trainable parameters and training throughput."""
    lines: list[str] = []
    lines += ["", "## Figures", "", "![sample efficiency](sample_efficiency.png)", "", "![parameters](parameters.png)", "",
          "## Parameters", "", *markdown_table(["arm", "trainable parameters"], [(a, f"{p:,}") for a, p in params.items()])]
    lines += ratio_line(params, run)
    if run.summary.get("throughput"):
        lines += ["", "Training throughput (samples/s, this machine): " + ", ".join(f"{a} {v:,.0f}" for a, v in run.summary["throughput"].items()) + "."]
    return lines


def _audit_lines(audits) -> list[str]:
    """The control audit per seed, and the files of the run."""
    lines: list[str] = []
    lines += ["## Control audit", ""]
    if audits:
        for s, r in audits.items():
            status = "PASS" if r["ok"] else "FAIL"
            lines.append(f"- seed {s}: **{status}** — {len(r['shared'])} shared training keys identical, data order "
                     f"sha256 {'identical' if len(set(r['data_order'].values())) == 1 else 'DIFFERENT'} "
                     f"({next(iter(r['data_order'].values()))[:12]}…); arm-specific keys: "
                     + ", ".join(f"{a} {len(k)}" for a, k in r["arm_keys"].items()) + ". Details: [control_audit.md](control_audit.md).")
    else:
        lines.append("- a single arm: nothing to compare.")
    lines += ["", "Files: `metrics.jsonl` (one row per arm, seed, milestone), `baselines.json`, `predictions/` "
          "(every caption with its references and CIDEr), `runs/<arm>/seed<k>/` (resolved config, data order, "
          "training log, checkpoints), `summary.json`, `timings.json` (seconds per phase and milestone).", ""]
    return lines


def render_report(run: RunFiles, agg: dict, audits: dict, params: dict, matched=()) -> str:
    """report.md: the suite's layout, its data-specific and arm-specific slots filled by their providers."""
    sections = gather([data_sections(run.cfg), *arm_sections(run)], run)
    return "\n".join([
        *_setup_lines(run, sections),
        *_results_lines(run, agg, sections),
        *matched_compute_lines(list(matched)), "",
        *compute_lines(run.rows, run.arms, run.milestones),
        *text_pretraining_lines(run.summary),
        *variant_lines(run.cfg, agg, run.arms, max(run.milestones), run.diffs),
        *_reference_lines(run.base, sections),
        *_parameter_lines(params, run),
        "", "## Controls: what differs between the arms besides the prediction target", "",
        *control_lines(run, sections),
        *paper_lines(run, sections),
        *_audit_lines(audits),
    ])
