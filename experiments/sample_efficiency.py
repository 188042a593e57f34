"""``sample-efficiency``: the main job. Train every arm on identical data, evaluate every milestone.

Writes into DIR: metrics.jsonl (one row per arm, seed and milestone), baselines.json,
control_audit.{json,md}, predictions/, figures (PNG + PDF), report.md, summary.json, and one run
directory per (arm, seed) under runs/. Re-running on the same DIR resumes: finished trainings and
evaluated checkpoints are not redone. A grid runs one comparison per cell in DIR/<key>=<value>,...:
comma lists on scalar keys (``data.synthetic.paraphrase=0,2,4 train.lr=1e-3,3e-3``) give the
cartesian product, ``--cell "k=v k2=v2"`` (repeated) an explicit list of override sets; sweep.md,
sweep.jsonl and a figure gather the cells.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import time
from pathlib import Path

from experiments.cli import add_config_args
from experiments.report import write_outputs
from experiments.report_sweep import write_sweep_outputs
from shared.data.report import data_record
from shared.config import (
    Config,
    ConfigError,
    dump_yaml,
    load_config,
    parse_override,
    split_sweeps,
)
from shared.contract import check_arms
from shared.evaluation.evaluate import (
    baselines,
    combine,
    combined_baselines,
    eval_sets,
    evaluate,
)
from shared.evaluation.metrics import METRICS
from shared.files import append_jsonl, read_jsonl, write_json_atomic, write_text_atomic
from shared.pipeline import prepare
from shared.precision import Runtime, resolve_runtime
from shared import processes
from shared.runinfo import versions
from shared.timings import Timings
from shared.milestone import load_arm
from shared.tracking import EvalLog
from shared.training.checkpoint import RunDir, folder_lock
from shared.profiling.flops import compute_breakdown, train_flops_per_sample
from shared.text_pretraining import text_pretraining_flops
from shared.training.loop import train_arm

log = logging.getLogger(__name__)


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("sample-efficiency", help=help,
                       description="Train every arm of the config (default: jepa and vlm) with the one loop on identical data, "
                                   "evaluate each milestone checkpoint (captioning CIDEr, top-1/top-5 classification, retrieval "
                                   "R@1), and write metrics.jsonl, figures, a control audit and report.md into --out. Grids: a "
                                   "comma list on scalar keys (e.g. data.synthetic.paraphrase=0,2,4) sweeps them, several "
                                   "keys give their cartesian product, and --cell runs an explicit list of override sets; "
                                   "each cell is an ordinary resumable run folder, gathered into sweep.md and one figure.")
    add_config_args(p)
    p.add_argument("--cell", action="append", metavar="'K=V [K=V ...]'",
                   help="one grid cell: overrides applied on top of the others (repeat for each cell)")
    p.set_defaults(run=run)


def metrics_row(arm_name: str, seed: int, ckpt: dict, m: dict, trainable: int, train_log: list[dict],
                flops_per_sample: float | None = None, compute: dict | None = None) -> dict:
    # the training loss on the path to this checkpoint: its cooldown branch's last rows, or the trunk's
    branch = [r for r in train_log if r.get("branch") == ckpt["milestone"]]
    logged = branch or [r for r in train_log if r["samples_seen"] <= ckpt["samples_seen"] and "branch" not in r]
    row = {"arm": arm_name, "seed": seed, "step": ckpt["step"], "samples_seen": ckpt["samples_seen"],
           "milestone": ckpt["milestone"], "cider": m.get("cider"), "top1": m.get("top1"), "top5": m.get("top5"),
           "train_loss": logged[-1]["loss"] if logged else ckpt.get("train_loss"),
           "trainable_params": trainable, "wall_s": ckpt.get("wall_s"),
           # the compute axis: what training this checkpoint cost (shared/profiling/flops.py) and took
           "train_flops": flops_per_sample * ckpt["samples_seen"] if flops_per_sample else None,
           "train_s": ckpt.get("train_s"), **(compute or {})}
    for extra in [*(x.key for x in METRICS), "phrasings", "eval_s", "caption_s", "classify_s", "sets"]:
        if extra in m and extra not in row:
            row[extra] = m[extra]
    return row


def run_comparison(cfg: Config, out: Path) -> list[dict]:
    """Train and evaluate every (seed, arm); returns the metrics rows. Under several processes
    (accelerate launch / torchrun) every process trains and evaluates its share; the main one writes."""
    runtime = resolve_runtime(cfg)  # device, processes, precision: decided here, once, for every arm and seed
    processes.check_shared_folder(out)  # every node writes and reads one --out: refuse at once if not
    with contextlib.ExitStack() as held:  # rank 0 holds the lock; a refusal there ends every rank
        processes.on_main(lambda: held.enter_context(folder_lock(out, "sample-efficiency run")) and None)
        return _run_comparison(cfg, runtime, out, runtime.rank == 0)


def _run_comparison(cfg: Config, runtime: Runtime, out: Path, main: bool) -> list[dict]:
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"phases": {}}
    summary["precision"] = runtime.precision.record()  # each run's config.yaml holds the resolved value
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", dump_yaml(cfg))
        write_json_atomic(out / "versions.json", versions())
    timings = Timings(out / "timings.json" if main else None)
    start = t = time.perf_counter()
    prepared = prepare(cfg, runtime)
    encode_s = sum(v.encode_s for v in prepared.features.stats.values())
    encoded = sum(v.encoded for v in prepared.features.stats.values())
    timings.add("tokenizer, encoder, data index", time.perf_counter() - t - encode_s)
    timings.add(f"{'synthetic clips rendered and ' if cfg.data.source == 'synthetic' else 'clips decoded and '}"
                f"encoded ({encoded:,} clips)", encode_s)
    # rank 0's reading for every rank: a rank that saw another list would skip an evaluation the others run
    done = processes.on_main(lambda: {(r["arm"], r["seed"], r["milestone"]) for r in read_jsonl(out / "metrics.jsonl")})
    pending = [a for a in cfg.arms if any((a, s, m) not in done for s in cfg.seeds for m in cfg.train.milestones)]
    with timings.phase("arm contract checked (one tiny batch per arm)"):  # before minutes of work, not after
        summary["phases"]["contract_s"] = round(check_arms(prepared, pending), 2) if pending else 0.0
    with timings.phase("evaluation sets and baselines"):
        sets = eval_sets(prepared)
        if main:
            write_json_atomic(out / "baselines.json", combined_baselines({s.name: baselines(prepared, s) for s in sets}))
        # what data ran, for the report and the model cards (which read files only)
        summary["data"] = data_record(cfg, prepared.dataset, {s.name: (s.source, s.n) for s in sets})
    summary["phases"]["prepare_s"] = round(time.perf_counter() - t, 1)
    summary["cache"] = {s: dataclasses.asdict(v) for s, v in prepared.features.stats.items()}
    if prepared.text is not None:  # what the text pretraining stage trained (cached: its first run's figures)
        summary["text_pretraining"] = prepared.text.records

    flops = summary.setdefault("flops", {})
    with timings.phase("FLOPs counted (meta device)"):
        for arm_name in cfg.arms:  # per arm, the same for every seed: counted once, on the meta device
            flops.setdefault(arm_name, train_flops_per_sample(prepared, arm_name, runtime.world))
            flops[arm_name]["text_pretraining_flops"] = text_pretraining_flops(prepared, arm_name)
        if "distinct_train_captions" not in flops:  # only where an arm embeds targets once per distinct caption
            cached = any("target_flops_per_caption" in flops[a] for a in cfg.arms)
            flops["distinct_train_captions"] = len(set(prepared.dataset.split("train").captions())) if cached else 0
    for seed in cfg.seeds:
        prep = dataclasses.replace(prepared, cfg=dataclasses.replace(cfg, seed=seed))
        for arm_name in cfg.arms:
            with timings.phase(f"train {arm_name} seed {seed}"):
                result = train_arm(prep, arm_name, RunDir.of(out, arm_name, seed).root)
            summary["phases"][f"train_{arm_name}_seed{seed}_s"] = round(result.wall_s, 1)
            previous = 0.0
            for c in result.checkpoints:  # each milestone's own training: since the one before
                timings.milestone(arm_name, seed, c["milestone"], train_s=(c.get("wall_s") or 0.0) - previous)
                previous = c.get("wall_s") or 0.0
            summary.setdefault("throughput", {})[arm_name] = round(result.samples_per_s, 1)
            todo = [c for c in result.checkpoints if (arm_name, seed, c["milestone"]) not in done]
            if todo:
                t = time.perf_counter()
                evaluate_checkpoints(prep, arm_name, seed, todo, sets, result, out, main,
                                     dict(flops[arm_name], distinct_captions=flops["distinct_train_captions"]), timings)
                summary["phases"][f"eval_{arm_name}_seed{seed}_s"] = round(time.perf_counter() - t, 1)
            if main:
                write_json_atomic(summary_path, summary)
    summary["total_s_this_invocation"] = round(time.perf_counter() - start, 1)
    if not main:
        return []
    write_json_atomic(summary_path, summary)
    with timings.phase("report and figures"):  # in timings.json; the report it writes cannot time itself
        write_outputs(out)
    return read_jsonl(out / "metrics.jsonl")


def evaluate_checkpoints(prep, arm_name: str, seed: int, todo: list[dict], sets, result, out: Path, main: bool,
                         flops: dict | None = None, timings: Timings | None = None) -> None:
    """Every set for each checkpoint (each process its share of the clips); one row each, by the main process."""
    run = RunDir.of(out, arm_name, seed)
    train_log = read_jsonl(run.log)
    trackers = EvalLog(prep.cfg, run.root, arm_name) if main else None  # metrics by samples seen (resolved config)
    arm = None
    timings = timings or Timings(None)
    for ckpt in todo:
        t0 = time.perf_counter()
        arm = load_arm(ckpt["path"], prepared=prep, reuse=arm)  # on this process's device
        t1 = time.perf_counter()  # loading and what evaluation needs first (the JEPA arm's Y-decoder fit)
        last = ckpt["milestone"] == prep.cfg.train.milestones[-1]
        with_phrasings = prep.cfg.eval.phrasings_at == "all" or last
        per_set = {s.name: evaluate(arm, prep, s if with_phrasings else s.canonical_only()) for s in sets}
        timings.add(f"load + prepare evaluation {arm_name} seed {seed}", t1 - t0)
        timings.add(f"evaluate {arm_name} seed {seed}", time.perf_counter() - t1)
        if not main:
            continue
        m = combine(per_set)
        timings.milestone(arm_name, seed, ckpt["milestone"], load_and_prepare_s=t1 - t0, eval_s=time.perf_counter() - t1,
                          caption_s=m.get("caption_s"), classify_s=m.get("classify_s"))
        info = arm.evaluation_info()
        compute = compute_breakdown(flops, ckpt["samples_seen"], info.get("decoder_samples"), flops["distinct_captions"],
                                    flops.get("text_pretraining_flops", 0.0)) if flops else None
        row = {**metrics_row(arm_name, seed, ckpt, m, result.trainable_params, train_log,
                             flops["train_flops_per_sample"] if flops else None, compute), **info}
        examples = [dict(e, set=name) for name, ms in per_set.items() for e in ms["examples"]]
        write_text_atomic(out / "predictions" / f"{arm_name}-seed{seed}-{ckpt['milestone']:010d}.jsonl",
                          "".join(json.dumps(e) + "\n" for e in examples))
        append_jsonl(out / "metrics.jsonl", row)
        trackers.log(row)
        log.info("%s seed %d @ %d samples: CIDEr %.3f, top-1 %.1f%%, top-5 %.1f%% (eval %.0fs)", arm_name, seed,
                 ckpt["samples_seen"], row["cider"] or 0, 100 * (row["top1"] or 0), 100 * (row["top5"] or 0), m["eval_s"])
    if trackers is not None:
        trackers.finish()


def grid_cells(sweeps: dict[str, list], cells: list[str]) -> list[tuple[str, list[str], dict]]:
    """(folder name, overrides, {column: value}) per cell: the cartesian product of the swept keys,
    or the explicit override sets given with --cell. Columns are the keys' last parts unless two clash."""
    if sweeps and cells:
        raise ConfigError("give either comma-list sweeps or --cell override sets, not both")
    sets = ([[f"{k}={v}" for k, v in zip(sweeps, combo)] for combo in itertools.product(*sweeps.values())]
            if sweeps else [c.split() for c in cells])
    keys = list(dict.fromkeys(parse_override(o)[0] for overrides in sets for o in overrides))
    shorts = [k.split(".")[-1] for k in keys]
    column = {k: (s if shorts.count(s) == 1 else k) for k, s in zip(keys, shorts)}
    out = []
    for overrides in sets:
        values = {column[k]: v for k, v in map(parse_override, overrides)}
        name = ",".join(f"{c}={v}" for c, v in values.items()).replace(" ", "").replace("/", "_")
        out.append((name or "base", overrides, values))
    return out


def run(args: argparse.Namespace) -> int:
    plain, sweeps = split_sweeps(args.overrides, args.config)  # the plugins first: their keys type the overrides
    cells = grid_cells(sweeps, args.cell or [])
    if not cells:
        cfg = load_config(args.config, plain)
        run_comparison(cfg, args.out)
        log.info("report: %s", args.out / "report.md")
        return 0
    for _, overrides, _ in cells:  # validate every cell before spending minutes on the first
        load_config(args.config, plain + overrides)
    rows = []
    for name, overrides, values in cells:
        sub = args.out / name
        log.info("grid cell %s -> %s", " ".join(overrides), sub)
        rows += [dict(r, cell=name, **values) for r in run_comparison(load_config(args.config, plain + overrides), sub)]

    write_sweep_outputs(args.out, rows, [(name, values) for name, _, values in cells])
    log.info("grid report: %s", args.out / "sweep.md")
    return 0
