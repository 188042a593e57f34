"""The data rate each GPU needs, and the loader workers that takes (``describe --memory`` and ``--gpu``).

A GPU training at a given pace consumes its samples per second, each one clip whose ``data.frames``
frames the loader workers decode and resize (``encoder.features: online``). ``--memory``: the pace
the hours estimate assumes (``UTILISATION`` of the bf16 peak on the FLOPs a step executes,
experiments/describe/memory.py). ``--gpu``: the pace measured on the card. Against it, one worker's
clips/s as ``data-bench --real-video`` measured it on this machine (its result file, by default
``cache_dir/data_bench/decode_rates.json``), or, when nothing was measured, ``ASSUMED`` (stated as such).
"""
from __future__ import annotations

import math
from pathlib import Path

from shared.config import ConfigError
from shared.files import read_json

RATES_FILE = "data_bench/decode_rates.json"  # under cache_dir: the last data-bench --real-video of this machine
# one worker with a core to itself (one decoding thread, 16 frames at 336 px of 10-s clips) when nothing is
# measured: 1 / the CPU seconds a clip cost in data-bench --real-video on a 2-core AMD EPYC (Zen 5), nothing
# else running (0.87 s at 720p, 1.93 s at 1080p; docs/data_pipeline.md), rounded to a slower figure
ASSUMED = {"720p": 1.1, "1080p": 0.5}
ASSUMED_CPU_S_PER_CLIP = {"720p": 0.9, "1080p": 2.0}


def worker_rates(cfg, path: str | Path | None = None) -> dict:
    """One worker's clips/s per video resolution at ``data.decode_threads``: measured (``path``, or this
    machine's last data-bench result) or assumed. A ``path`` that does not exist is an error."""
    given = path is not None
    path = Path(path) if given else cfg.cache_path / RATES_FILE
    threads = cfg.data.decode_threads
    if not path.is_file():
        if given:
            raise ConfigError(f"--decode-rates {path}: no such file (data-bench --real-video writes decode_rates.json)")
        return {"source": "assumed, not measured here (run data-bench --real-video)", "threads": 1,
                "rates": dict(ASSUMED), "cpu_s_per_clip": dict(ASSUMED_CPU_S_PER_CLIP), "measured": False}
    r = read_json(path)
    measured = next(iter(r["resolutions"].values()))["threads"]
    key = str(threads) if str(threads) in measured else ("1" if "1" in measured else next(iter(measured)))
    notes = []
    if key != str(threads):
        notes.append(f"data.decode_threads={threads} not measured: threads={key}'s rate")
    if (r.get("frames"), r.get("size")) != (cfg.data.frames, cfg.encoder.image_size):
        notes.append(f"measured at {r.get('frames')} frames of {r.get('size')} px, the config reads "
                     f"{cfg.data.frames} of {cfg.encoder.image_size}")
    return {"source": f"measured by data-bench on {r.get('cpu', '?')} ({path})" + "".join(f"; {n}" for n in notes),
            "threads": int(key), "clip_s": r.get("clip_s"), "measured": True,
            "rates": {name: res["threads"][key]["clips_per_s"] for name, res in r["resolutions"].items()},
            "cpu_s_per_clip": {name: res["threads"][key]["cpu_s_per_clip"] for name, res in r["resolutions"].items()}}


def needs(per_gpu: dict[str, float], workers: dict, configured: int) -> dict:
    """Per arm (or row): the clips/s a GPU needs, and per resolution the workers and cores that takes."""
    rows = {}
    for name, rate in per_gpu.items():
        rows[name] = {"clips_per_s": rate, "by_resolution": {
            res: {"workers": math.ceil(rate / r), "cores": rate * workers["cpu_s_per_clip"][res]}
            for res, r in workers["rates"].items()}}
    return {"per_gpu": rows, "worker": workers, "configured_workers": configured}


def text(d: dict, pace: str) -> list[str]:
    """Lines for describe: ``pace`` says where the GPU's clips/s come from."""
    w = d["worker"]
    res = list(w["rates"])
    L = ["", f"Data each GPU needs ({pace}), one clip a sample, against one loader worker's clips/s "
             f"(data.decode_threads={w['threads']}: " + ", ".join(f"{r} {w['rates'][r]:.2f}" for r in res)
         + f"; {w['source']}):",
         f"{'':<16} {'clips/s':>8} " + " ".join(f"{r + ' workers':>14} {r + ' cores':>12}" for r in res)]
    for name, row in d["per_gpu"].items():
        L.append(f"{name:<16} {row['clips_per_s']:>8.1f} " + " ".join(
            f"{row['by_resolution'][r]['workers']:>14} {row['by_resolution'][r]['cores']:>12.1f}" for r in res))
    short = [n for n, row in d["per_gpu"].items() if any(b["workers"] > d["configured_workers"]
                                                          for b in row["by_resolution"].values())]
    L.append(f"data.workers={d['configured_workers']} per GPU" + (
        f": too few for {', '.join(short)} at some resolution above; the GPU would wait on data (more workers "
        "and cores, shorter or lower-resolution source clips, or features cached)" if short else ": enough"))
    return L


def for_memory(m: dict, cfg, path: str | Path | None = None) -> dict:
    """The rates the hours estimate of ``describe --memory`` implies, per arm and GPU count."""
    per_gpu = {f"{arm} on {n}": h["clips_per_s_per_gpu"] for arm, per in m["time"].items() for n, h in per.items()}
    return needs(per_gpu, worker_rates(cfg, path), cfg.data.workers)


def for_gpu_check(r: dict, cfg, path: str | Path | None = None) -> dict:
    """The rates the GPU check measured: per arm, its fastest run that finished."""
    per_gpu = {}
    for row in r["rows"]:
        if "samples_per_s" in row:
            key = row["arm"]
            per_gpu[key] = max(per_gpu.get(key, 0.0), row["samples_per_s"])
    return needs(per_gpu, worker_rates(cfg, path), cfg.data.workers)


def gpu_clip_rates(cfg, gpus: int = 8, caption_tokens: int = 32) -> dict[str, float]:
    """Per arm, the clips/s one of ``gpus`` GPUs consumes at the pace the hours estimate assumes
    (``describe --memory``'s own FLOPs per sample, without its memory layouts)."""
    from experiments.describe.memory import UTILISATION, _hours, traced_arms

    traced = traced_arms(cfg, gpus, caption_tokens, (False, True) if cfg.train.activation_checkpointing else (False,))
    out = {}
    for name, analytic in traced.arms.items():
        analytic.setdefault(True, analytic[False])
        out[name] = _hours(cfg, analytic, gpus, traced.encoder_flops, UTILISATION)["clips_per_s_per_gpu"]
    return out
