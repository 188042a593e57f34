"""``selective-decoding``: recover a long video's timestamped annotations with as few decodes as possible.

The paper's section 4.5. An embedding arm embeds a window every selective.hop_s seconds of each
stream; for each average decoding rate in selective.frequencies_hz, the stream is split into that
many segments, uniformly (the baseline) or adaptively (Ward clustering with a temporal
connectivity constraint), and one embedding per segment (its middle window's, or the segment
mean) is decoded. Each annotation is matched to the decoded text nearest in time and scored by
corpus CIDEr over all matched pairs. Results, figure and report land in --out; re-running resumes.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from experiments.cli import add_config_args
from experiments.selective_report import checkpoint_spread, write_selective_outputs
from shared.config import Config, ConfigError, dump_yaml, load_config
from shared.data.streams import load_streams
from shared.evaluation.metrics import cider
from shared.evaluation.segmentation import decode_points, nearest_decoded, segments_for
from shared.features.encoder import FrozenEncoder
from shared.features.stream_windows import stream_window_features
from shared.files import (
    append_jsonl,
    read_json,
    read_jsonl,
    write_json_atomic,
    write_text_atomic,
)
from shared.pipeline import prepare
from shared.precision import Runtime, resolve_runtime
from shared.runinfo import versions
from shared.milestone import Milestone, load_arm
from shared.registry import arm_class
from shared.training.checkpoint import RunDir
from shared.training.loop import train_arm

log = logging.getLogger(__name__)

STRATEGIES = ("uniform", "adaptive")


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("selective-decoding", help=help,
                       description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--checkpoint", type=Path, action="append", default=None,
                   help="a milestone checkpoint folder, or an arm's run folder (its last milestone is used), e.g. "
                        "runs/default/runs/jepa/seed0; repeat it to run several checkpoints (each into OUT/<i>-<name>, "
                        "with the spread of the decodes saved in OUT/selective_summary.md); default: train "
                        "selective.arm into OUT/runs/<arm>/seed<k>")
    p.set_defaults(run=run)


def load_trained_arm(cfg: Config, runtime: Runtime, out: Path, checkpoint: Path | None):
    name = cfg.selective.arm
    if name not in cfg.arm:
        raise ConfigError(f"selective.arm: unknown arm {name!r}; registered: {sorted(cfg.arm)}")
    if checkpoint is None:
        prepared = prepare(cfg, runtime, splits=("train",))
        checkpoint = Path(train_arm(prepared, name, RunDir.of(out, name, cfg.seed).root).checkpoints[-1]["path"])
    else:
        prepared = prepare(cfg, runtime, splits=())
    try:
        milestone = Milestone.find(checkpoint)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--checkpoint {e}") from None
    if milestone.arm_name != name:
        raise ConfigError(f"--checkpoint {checkpoint}: a checkpoint of arm {milestone.arm_name!r}, not of "
                          f"selective.arm={name!r}")
    if not {"embed", "decode_embeddings"} <= arm_class(cfg.base_arm(name), cfg.plugins).capabilities:
        raise ConfigError(f"selective.arm: arm {name!r} has no embedding output to segment and decode")
    # the milestone's training config must be this one's (its weights fit no other), evaluation keys may differ
    return load_arm(milestone, prepared=prepared), milestone.folder, milestone.state


@torch.no_grad()
def embed_windows(arm, feats: torch.Tensor, cfg: Config, runtime: Runtime) -> np.ndarray:
    out = []
    device = next(arm.parameters()).device
    for start in range(0, len(feats), cfg.selective.batch_windows):
        visual = feats[start:start + cfg.selective.batch_windows].float().to(device)
        with runtime.autocast():
            out.append(arm.embed(visual, [cfg.data.query] * len(visual)).float())
    return torch.cat(out).cpu().numpy()


@torch.no_grad()
def decode(arm, embeddings: np.ndarray, cfg: Config, runtime: Runtime) -> list[str]:
    texts = []
    for start in range(0, len(embeddings), cfg.eval.batch_size):
        with runtime.autocast():
            texts += arm.decode_embeddings(torch.from_numpy(embeddings[start:start + cfg.eval.batch_size]).float(),
                                           cfg.eval.caption_max_tokens)
    return texts


def sweep_point(arm, streams: list[dict], strategy: str, pooling: str, hz: float, cfg: Config, runtime: Runtime,
                memo: dict | None = None) -> dict:
    """Decode every stream at an average rate of ``hz`` and score the matched annotations.

    ``memo`` keeps decoded texts by (stream, segment, pooling) across sweep points: at high rates
    both strategies pick the same one-window segments, whose exact and mean embeddings coincide.
    """
    memo = {} if memo is None else memo

    t0 = time.perf_counter()
    points, keys = [], []
    for i, st in enumerate(streams):
        n = max(1, round(hz * st["duration"]))
        segments = segments_for(strategy, st["embeddings"], n)
        points.append(decode_points(segments, st["embeddings"], st["centres"], pooling))
        keys += [(i, a, b, pooling if b - a > 1 else "exact") for a, b in segments]
    t_segment = time.perf_counter() - t0
    t0 = time.perf_counter()
    embeddings = np.concatenate([e for _, e in points])
    todo = [j for j, k in enumerate(keys) if k not in memo]
    for j, text in zip(todo, decode(arm, embeddings[todo], cfg, runtime)):
        memo[keys[j]] = text
    texts = [memo[k] for k in keys]
    t_decode = time.perf_counter() - t0
    predictions, references, offset = [], [], 0
    for st, (times, _) in zip(streams, points):
        ann_t = np.array([t for t, _ in st["events"]])
        match = nearest_decoded(times, ann_t)
        predictions += [texts[offset + j] for j in match]
        references += [[c] for _, c in st["events"]]
        offset += len(times)
    score, _ = cider(predictions, references)
    total_s = sum(st["duration"] for st in streams)
    return {"strategy": strategy, "pooling": pooling, "target_hz": hz, "decodes": len(texts),
            "rate_hz": len(texts) / total_s, "cider": score, "annotations": len(predictions), "streams": len(streams),
            "decoded_now": len(todo), "segment_s": round(t_segment, 3), "decode_s": round(t_decode, 3),
            "examples": [{"reference": r[0], "decoded": p} for p, r in zip(predictions[:5], references[:5])]}


def run_selective(cfg: Config, runtime: Runtime, out: Path, checkpoint: Path | None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", dump_yaml(cfg))
    write_json_atomic(out / "versions.json", versions())
    arm, ckpt, state = load_trained_arm(cfg, runtime, out, checkpoint)
    sources = load_streams(cfg)
    if not sources:
        raise ConfigError("no streams: set data.synthetic.streams > 0 or data.manifest.streams_path")
    # what the rows already in --out depend on: resuming under another setup would mix two experiments
    setup = {"arm": cfg.selective.arm, "checkpoint": str(ckpt.resolve()), "window_s": cfg.selective.window_s,
             "hop_s": cfg.selective.hop_s, "frames": cfg.data.frames, "query": cfg.data.query,
             "caption_max_tokens": cfg.eval.caption_max_tokens, "stream_ids": [st.id for st in sources]}
    meta_path, rows_path = out / "selective_meta.json", out / "selective_decoding.jsonl"
    if meta_path.is_file() and read_jsonl(rows_path):
        old = read_json(meta_path).get("setup", {})
        diff = sorted(k for k in setup if old.get(k) != setup[k])
        if diff:
            raise ConfigError(f"{out}: holds results of another setup (differs at {', '.join(diff)}); use another --out")
    meta = {"setup": setup, "samples_seen": state.get("samples_seen")}

    t0 = time.perf_counter()
    # the stream's frames are encoded where the arm runs, in the encoder dtype the runtime resolved
    encoder = FrozenEncoder.from_config(runtime.precision.apply(cfg)).to(arm.ctx.device)
    streams = []
    for st in sources:
        centres, feats = stream_window_features(st, encoder, cfg)
        streams.append({"id": st.id, "duration": st.duration, "events": st.events, "centres": centres,
                        "embeddings": embed_windows(arm, feats, cfg, runtime)})
    meta.update(streams=len(streams), windows=sum(len(s["centres"]) for s in streams),
                annotations=sum(len(s["events"]) for s in streams), video_s=sum(s["duration"] for s in streams),
                embed_s=round(time.perf_counter() - t0, 1))
    captions = [c for s in streams for _, c in s["events"]]
    ceiling = arm.reconstruct_texts(captions, cfg.eval.caption_max_tokens)
    if ceiling is not None:  # decoding the annotations' own text embeddings: what a perfect predictor would get
        meta["decoder_ceiling_cider"] = cider(ceiling, [[c] for c in captions])[0]
    write_json_atomic(meta_path, meta)
    log.info("%d streams, %.0f s of video, %d windows, %d annotations (embedding: %.1fs)", meta["streams"],
             meta["video_s"], meta["windows"], meta["annotations"], meta["embed_s"])

    done = {(r["strategy"], r["pooling"], r["target_hz"]) for r in read_jsonl(rows_path)}
    memo: dict = {}
    for pooling in cfg.selective.poolings:
        for hz in cfg.selective.frequencies_hz:
            for strategy in STRATEGIES:
                if (strategy, pooling, hz) in done:
                    continue
                row = sweep_point(arm, streams, strategy, pooling, hz, cfg, runtime, memo)
                append_jsonl(rows_path, row)
                log.info("%-8s %-5s %.2f Hz: %d decodes, CIDEr %.3f", strategy, pooling, row["rate_hz"], row["decodes"],
                         row["cider"])
    write_selective_outputs(out)
    return read_jsonl(rows_path)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    runtime = resolve_runtime(cfg)
    checkpoints = args.checkpoint or [None]
    if len(checkpoints) == 1:
        run_selective(cfg, runtime, args.out, checkpoints[0])
        log.info("report: %s", args.out / "selective_report.md")
        return 0
    folders = {}
    for i, ckpt in enumerate(checkpoints):  # one ordinary (resumable) selective folder per checkpoint
        name = f"{i}-" + "-".join(ckpt.resolve().parts[-3:]).replace(" ", "_")
        folders[name] = args.out / name
        run_selective(cfg, runtime, folders[name], ckpt)
    write_text_atomic(args.out / "selective_summary.md", checkpoint_spread(folders))
    log.info("summary: %s", args.out / "selective_summary.md")
    return 0
