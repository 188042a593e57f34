"""``data-bench``: the data pipeline at scale, measured in one run (ratios, not timed tests).

1. Peak RSS of a training process (``train --stop-after``, its own process) on generated
   manifests of each size in ``--clips``, in both feature modes: flat = nothing per clip held.
2. Loader throughput (clips/s) with 0, 1 and 2 worker processes, in both modes.
3. Step time of the configured arms with cached features vs the encoder in the step (online).
4. Video decoding: frames/s reading a long video by seeking vs decoding from the start.

``--real-video`` measures instead what a GPU's data needs (experiments/decode_bench.py): one loader
worker's clips/s on generated 720p and 1080p H.264 videos, minutes long (written once into a cache
folder), ``data.frames`` frames a clip at ``encoder.image_size`` px through the suite's reader, at
each FFmpeg thread count asked for, against the clips/s one GPU needs per arm at the pace the hours
estimate assumes. Its result (decode_rates.json) is what ``describe --memory``/``--gpu`` read.

The manifests point at a few small generated videos (the media content is not what is measured).
For the cache-mode memory runs the shards are filled with random rows instead of encoded, since
encoding 200k clips would take an hour here and the reader's memory does not depend on values;
those runs use 2 frames per clip and float16 rows to keep the shards small on disk.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

from experiments.cli import add_config_args
from experiments import decode_bench
from experiments.decode_bench import RESOLUTIONS
from experiments.describe import data_rate
from shared.config import ConfigError, load_config
from shared.data import synthetic
from shared.data.loader import ClipBatches, TrainPlan, batches, make_loader
from shared.data.media import read_video, video_duration
from shared.data.order import TrainOrder
from shared.data.sources import build_dataset
from shared.features.encoder import FrozenEncoder
from shared.features.visual import VisualFeatures
from shared.files import atomic_path, write_json_atomic, write_text_atomic
from shared.pipeline import prepare
from shared.precision import resolve_runtime
from shared.profiling.steps import time_train_steps
from shared.runinfo import versions
from shared.tables import markdown_table

log = logging.getLogger(__name__)
MEDIA = 16  # distinct small videos behind every manifest


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("data-bench", help=help,
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--clips", default="10000,200000", help="manifest sizes for the memory runs (comma list)")
    p.add_argument("--steps", type=int, default=20, help="training steps per memory run and per step-time side")
    p.add_argument("--loader-batches", type=int, default=40, help="batches read per loader-throughput point")
    p.add_argument("--video-minutes", type=float, default=10.0, help="length of the long video for the decode test")
    real = p.add_argument_group("--real-video: one worker's clips/s on real-resolution video (only this is run)")
    real.add_argument("--real-video", action="store_true",
                      help="one loader worker's clips/s on generated H.264 (data.frames frames at encoder.image_size px: "
                           "16 at 336 with paper.yaml) against the clips/s one GPU needs per arm; writes "
                           "decode_rates.json here and in cache_dir, where describe --memory/--gpu read it")
    real.add_argument("--resolutions", default="720p,1080p", help=f"videos to generate and read ({', '.join(RESOLUTIONS)})")
    real.add_argument("--minutes", type=float, default=3.0, help="length of each generated video (default 3)")
    real.add_argument("--gop-seconds", type=float, default=5.0, help="keyframe interval of the generated videos (default 5)")
    real.add_argument("--clip-seconds", type=float, default=10.0,
                      help="span of a clip, at a random place in the video; its frames are spread over it (default 10)")
    real.add_argument("--decode-threads", default="1,2,0",
                      help="FFmpeg thread counts to measure, 0 = FFmpeg's own (default 1,2,0)")
    real.add_argument("--real-clips", type=int, default=12, help="clips read per point, after one untimed (default 12)")
    real.add_argument("--video-cache", type=Path, default=None,
                      help="folder of the generated videos, kept for reruns (default: cache_dir/data_bench/videos)")
    real.add_argument("--gpus", type=int, default=8, help="GPUs the needed rate is computed for (default 8: one node)")
    real.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


# ---- generated data --------------------------------------------------------------------------
def write_video(path: Path, seconds: float, fps: int = 25, size: int = 64, gop: int = 50) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            img = np.roll(base, i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_manifest(path: Path, n: int, media: list[str]) -> Path:
    """``n`` training clips (and a few val/test ones) over ``media``, captions from the synthetic grammar."""
    if path.is_file():
        return path
    with atomic_path(path) as tmp, tmp.open("w") as f:
        for i in range(n + 64):
            clip = synthetic.make_clip(0, "bench", i % 5000, 2, 3)
            split = "train" if i < n else ("val" if i < n + 32 else "test")
            f.write(json.dumps({"id": f"clip-{i}", "media": media[i % len(media)], "captions": list(clip.captions),
                                "label": synthetic.canonical_caption(clip.scene.meaning), "split": split}) + "\n")
    return path


def fill_random(cfg, source) -> None:
    """Cache-mode shards of random rows (what is measured is the reader, not the values); ``cfg`` resolved."""
    store = VisualFeatures(cfg, FrozenEncoder.from_config(cfg)).store(source)
    g = torch.Generator().manual_seed(0)
    for k in store.missing():
        store.write(k, torch.randn(store.rows(k), *store.shape, generator=g))


# ---- 1. memory ---------------------------------------------------------------------------------
def peak_rss_mb(cmd: list[str], env: dict) -> float:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"memory run failed: {' '.join(cmd)}\n{err[-3000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def memory_runs(args, out: Path, manifests: dict[int, Path], runtime) -> dict:
    result = {}
    for mode in ("cache", "online"):
        for n, path in manifests.items():
            overrides = ["data.source=manifest", f"data.manifest.path={path}", f"encoder.features={mode}",
                         "data.frames=2", "encoder.cache_dtype=float16", "jepa.y_encoder.cache=false",
                         f"train.milestones=[{args.steps * 1000}]", *args.overrides]
            cfg = runtime.precision.apply(load_config(args.config, overrides))
            prepare(cfg, runtime, splits=())  # index the manifest and train its tokenizer here, not in the measured process
            if mode == "cache":
                fill_random(cfg, build_dataset(cfg).split("train"))
            run_dir = out / "memory" / f"{mode}-{n}"
            cmd = [sys.executable, "-m", "experiments", "train", "-c", str(args.config), "--arm", "jepa",
                   "-o", str(run_dir), "--stop-after", str(args.steps * cfg.train.effective_batch), *overrides]
            log.info("memory: %s mode, %d clips", mode, n)
            result.setdefault(mode, {})[n] = peak_rss_mb(cmd, {**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return result


def train_loader(prepared, features, batches: int, workers: int):
    """The first ``batches`` training micro-batches of one process, read through ``features``."""
    cfg = prepared.cfg
    train = prepared.dataset.split("train")
    plan = TrainPlan(TrainOrder(0, train.caption_counts()), 0, cfg.train.micro_batch, cfg.train.micro_batch, 1)
    return make_loader(ClipBatches(train, plan, features.reader(train), cfg.data.query), 0, batches, workers,
                       cfg.data.prefetch)


# ---- 2. loader throughput ------------------------------------------------------------------------
def loader_throughput(prepared, batches: int) -> dict:
    out = {}
    for workers in (0, 1, 2):
        it = iter(train_loader(prepared, prepared.features, batches, workers))
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        n = sum(len(b) for b in it)
        out[workers] = n / (time.perf_counter() - t0)
    return out


# ---- 3. step time, cache vs online ----------------------------------------------------------------
def step_times(prepared, steps: int) -> dict:
    """ms per training step, the first of ``steps + 1`` untimed; a batch's features are made ready
    (online: encoded) inside the timed step, as the loop does."""
    cfg = prepared.cfg
    out = {}
    for name in cfg.arms:
        out[name] = {}
        for mode in ("cache", "online"):
            mcfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, features=mode))
            features = VisualFeatures(mcfg, prepared.features.encoder)
            arm = prepared.seeded_arm(name)
            arm.prepare_training()
            stream = batches(train_loader(prepared, features, steps + 1, cfg.data.workers))
            ready = (features.ready(batch, "cpu") for batch in stream)  # lazy: taken inside each timed step
            out[name][mode] = 1000 * sum(time_train_steps(arm, ready, steps)) / steps
        out[name]["online_over_cache"] = out[name]["online"] / out[name]["cache"]
    return out


# ---- 4. decoding ----------------------------------------------------------------------------------
def decode_rates(path: Path, frames: int = 16, repeats: int = 3) -> dict:
    times = np.linspace(0.5, video_duration(path) - 0.5, frames)
    out = {}
    for name, seek in (("seek", True), ("from_start", False)):
        t0 = time.perf_counter()
        for _ in range(repeats):
            read_video(path, 64, times=times, seek=seek)
        out[name] = frames * repeats / (time.perf_counter() - t0)
    out["seek_over_from_start"] = out["seek"] / out["from_start"]
    return out


def markdown(r: dict) -> str:
    memory = r["memory_mb"]
    lines = ["# Data pipeline benchmark", "", f"{r['cpu_threads']} threads; one run, ratios measured side by side.", "",
             "## Peak RSS of a training process vs manifest size", "",
             *markdown_table(["mode", *(f"{n:,} clips" for n in memory["cache"]), "largest / smallest"],
                             [[mode, *(f"{v:.0f} MB" for v in row.values()),
                               f"{list(row.values())[-1] / list(row.values())[0]:.3f}"] for mode, row in memory.items()]),
             "", "## Loader throughput (clips/s)", "",
             *markdown_table(["mode", "0 workers", "1 worker", "2 workers"],
                             [[mode, *(f"{row[w]:.0f}" for w in sorted(row))]
                              for mode, row in r["loader_clips_per_s"].items()]),
             "", "## Training step, cached features vs encoder in the step", "",
             *markdown_table(["arm", "cache ms", "online ms", "online / cache"],
                             [[name, f"{s['cache']:.0f}", f"{s['online']:.0f}", f"{s['online_over_cache']:.2f}x"]
                              for name, s in r["step_ms"].items()])]
    d = r["decode"]
    lines += ["", f"## Video decoding ({r['video_minutes']:.0f}-minute video, 16 frames per read)", "",
              f"Seeking: {d['seek']:.1f} frames/s; decoding from the start: {d['from_start']:.1f} frames/s: "
              f"**{d['seek_over_from_start']:.1f}x**.", ""]
    return "\n".join(lines)


def _list(text: str, key: str, cast=str) -> list:
    try:
        return [cast(x) for x in text.split(",") if x]
    except ValueError:
        raise ConfigError(f"{key}: expected a comma list, got {text!r}") from None


def run_real_video(args: argparse.Namespace, cfg) -> int:
    names = _list(args.resolutions, "--resolutions")
    unknown = [n for n in names if n not in RESOLUTIONS]
    if unknown:
        raise ConfigError(f"--resolutions: unknown {', '.join(unknown)}; known: {', '.join(RESOLUTIONS)}")
    threads = _list(args.decode_threads, "--decode-threads", int)
    folder = args.video_cache or cfg.cache_path / "data_bench" / "videos"
    r = decode_bench.measure(folder, names, args.minutes, threads, args.real_clips, args.clip_seconds, args.gop_seconds,
                             cfg.data.frames, cfg.encoder.image_size, progress=not args.quiet)
    decode_bench.save(r, args.out, cfg.cache_path / data_rate.RATES_FILE)
    per_gpu = data_rate.gpu_clip_rates(cfg, args.gpus)
    lines = [f"One loader worker on {r['cpu']} ({r['cores']} cores; load average {r['load_average']['before']:.1f} "
             f"before, {r['load_average']['after']:.1f} after): clips/s, {r['frames']} frames of {r['clip_s']:g}-s clips "
             f"at {r['size']} px, {r['minutes']:g}-minute H.264 videos, a keyframe every {r['gop_s']:g} s", "",
             *decode_bench.rates_table(r)]
    lines += ["", f"Workers one GPU needs (of {args.gpus}; at the pace the hours estimate assumes, describe --memory): "
              "clips/s needed / one worker's clips/s, rounded up; cores = clips/s x CPU s a clip at one thread "
              "(workers decoding side by side on separate cores, each at the rate measured alone)", "",
              *decode_bench.workers_table(r, {f"{a}": v for a, v in per_gpu.items()})]
    text = "\n".join(lines)
    write_text_atomic(args.out / "decode_rates.md", text + "\n")
    print(text)
    return 0


def run(args: argparse.Namespace) -> int:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg0 = load_config(args.config, args.overrides)
    if args.real_video:
        return run_real_video(args, cfg0)
    runtime = resolve_runtime(cfg0)  # the manifest runs below change the data, not the precision
    (out / "media").mkdir(exist_ok=True)
    media = []
    for k in range(MEDIA):
        path = out / "media" / f"clip-{k}.mp4"
        if not path.is_file():
            write_video(path, seconds=2.0, size=cfg0.encoder.image_size)
        media.append(f"media/{path.name}")
    sizes = [int(x) for x in args.clips.split(",")]
    manifests = {n: write_manifest(out / f"manifest-{n}.jsonl", n, media) for n in sizes}
    result = {"versions": versions(), "cpu_threads": torch.get_num_threads(), "clips": sizes, "steps": args.steps,
              "video_minutes": args.video_minutes}
    result["memory_mb"] = memory_runs(args, out, manifests, runtime)

    smallest = manifests[sizes[0]]
    cfg = load_config(args.config, ["data.source=manifest", f"data.manifest.path={smallest}", *args.overrides])
    prepared = prepare(cfg, runtime, splits=())
    fill_random(prepared.cfg, prepared.dataset.split("train"))  # cache side of the loader runs
    result["loader_clips_per_s"] = {}
    for mode in ("cache", "online"):
        mcfg = dataclasses.replace(prepared.cfg, encoder=dataclasses.replace(prepared.cfg.encoder, features=mode))
        prep = dataclasses.replace(prepared, cfg=mcfg, features=VisualFeatures(mcfg, prepared.features.encoder))
        result["loader_clips_per_s"][mode] = loader_throughput(prep, args.loader_batches)
    result["step_ms"] = step_times(prepared, args.steps)

    long_video = out / "media" / "long.mp4"
    if not long_video.is_file():
        write_video(long_video, seconds=60 * args.video_minutes)
    result["decode"] = decode_rates(long_video)
    write_json_atomic(out / "data_bench.json", result)
    write_text_atomic(out / "data_bench.md", markdown(result))
    print(markdown(result))
    return 0
