"""``data-bench --real-video``: the clips per second one loader worker reads from real-resolution video.

A worker's work per clip in ``encoder.features: online`` (paper.yaml): open the file, seek, decode
and resize ``data.frames`` frames to ``encoder.image_size`` (16 at 336 px), through the suite's own
reader (``read_media``, the call ``ManifestSource.frames`` makes), with FFmpeg's thread count
``data.decode_threads``. Measured here in one process (one worker) on generated H.264 videos at
720p and 1080p, minutes long, written once into a cache folder with PyAV: x264 ``superfast`` (CABAC,
B-frames, deblocking: what a decoder meets in real uploads), a keyframe every few seconds, a bitrate
typical of web video, a textured pattern panning in two directions (motion in every block).
Clips are spans at random places in the videos. Reported per point: clips/s of the worker (wall
time) and CPU seconds per clip (all its threads), the figure that says how many cores a GPU's
workers need. The load average is recorded before and after: other jobs on the machine lower the
per-worker rate, not the CPU seconds a clip costs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import av
import numpy as np

from shared.data.media import read_media, video_duration
from shared.files import atomic_path, write_json_atomic
from shared.precision import cpu_name
from shared.progress import progress_bar
from shared.tables import markdown_table

FPS = 30
# (width, height, bitrate): web video as datasets download it (YouTube serves ~2.5 / ~5 Mbit/s H.264 at 30 fps
# for 720p / 1080p); 360p: a source transcoded down for training (the encoder reads 336 px)
RESOLUTIONS = {"240p": (426, 240, 0.5e6), "360p": (640, 360, 1e6), "720p": (1280, 720, 2.5e6), "1080p": (1920, 1080, 5e6)}


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    name: str  # a key of RESOLUTIONS
    minutes: float
    gop_s: float = 5.0  # keyframe interval (uploads: 2-10 s)

    @property
    def size(self) -> tuple[int, int]:
        return RESOLUTIONS[self.name][:2]

    @property
    def bitrate(self) -> float:
        return RESOLUTIONS[self.name][2]

    def file_name(self) -> str:
        return f"{self.name}-{self.minutes:g}min-gop{self.gop_s:g}s-{self.bitrate / 1e6:g}mbps.mp4"


def _texture(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YUV 4:2:0 planes of a random texture twice the frame's size: 8-px blocks of colour, 4-px detail in luma."""
    rng = np.random.default_rng(seed)
    small = rng.integers(32, 224, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)[:2 * height, :2 * width]
    detail = rng.integers(-24, 24, size=(height // 2 + 1, width // 2 + 1), dtype=np.int16)
    y = big[..., 0] + np.repeat(np.repeat(detail, 4, axis=0), 4, axis=1)[:2 * height, :2 * width]
    return np.clip(y, 16, 235).astype(np.uint8), np.ascontiguousarray(big[::2, ::2, 1]), np.ascontiguousarray(big[::2, ::2, 2])


def _grain(width: int, height: int, n: int = 8, seed: int = 1) -> list[np.ndarray]:
    """A few frames of sensor-like noise in luma, added in turn: bits that motion cannot predict."""
    rng = np.random.default_rng(seed)
    return [rng.integers(-3, 4, size=(height, width), dtype=np.int16) for _ in range(n)]


def write_test_video(path: Path, spec: VideoSpec, progress: bool = True) -> Path:
    """An H.264 video of ``spec`` at ``path`` (written atomically; kept if it exists). Frames are crops
    of one texture along a Lissajous path, made in YUV directly: no colour conversion per frame."""
    if path.is_file():
        return path
    width, height = spec.size
    y, u, v = _texture(width, height)
    grain = _grain(width, height)
    frames = max(1, round(spec.minutes * 60 * FPS))
    with atomic_path(path, suffix=".mp4") as tmp, av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "superfast", "x264-params":
                                f"keyint={round(spec.gop_s * FPS)}:min-keyint={FPS}"})  # scene cuts may add keyframes
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", int(spec.bitrate)
        for i in progress_bar(range(frames), desc=f"writing {path.name}", unit="frame", disable=not progress):
            phase = 2 * math.pi * i / (FPS * 20)
            x = 2 * int(width / 4 * (1 + math.sin(phase)))  # even offsets: the chroma planes move with luma
            t = 2 * int(height / 4 * (1 + math.sin(1.3 * phase)))
            luma = np.clip(y[t:t + height, x:x + width] + grain[i % len(grain)], 0, 255).astype(np.uint8)
            planes = [luma, u[t // 2:(t + height) // 2, x // 2:(x + width) // 2],
                      v[t // 2:(t + height) // 2, x // 2:(x + width) // 2]]
            frame = av.VideoFrame.from_ndarray(np.concatenate([planes[0], planes[1].reshape(-1, width),
                                                               planes[2].reshape(-1, width)]), format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def worker_rate(path: Path, threads: int, clips: int, clip_s: float, frames: int = 16, size: int = 336,
                seed: int = 0, progress: bool = True) -> dict:
    """One worker reading ``clips`` clips of ``clip_s`` seconds at random places in ``path`` (one more
    first, untimed), ``frames`` frames each at ``size`` px: clips/s and CPU seconds per clip."""
    duration = video_duration(path)
    starts = np.random.default_rng(seed).uniform(0, max(0.0, duration - clip_s), clips + 1)
    read_media(path, frames, size, (float(starts[0]), float(starts[0]) + clip_s), threads=threads)  # page cache, start-up
    wall, cpu = time.perf_counter(), time.process_time()
    for s in progress_bar(starts[1:], desc=f"{path.name} threads={threads}", unit="clip", disable=not progress):
        read_media(path, frames, size, (float(s), float(s) + clip_s), threads=threads)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"clips_per_s": clips / wall, "cpu_s_per_clip": cpu / clips, "clips": clips}


def measure(folder: Path, names: list[str], minutes: float, threads: list[int], clips: int, clip_s: float,
            gop_s: float = 5.0, frames: int = 16, size: int = 336, progress: bool = True) -> dict:
    """Per resolution and thread count, one worker's rate (``worker_rate``) on a generated video."""
    load_before = os.getloadavg()[0]
    out = {"cpu": cpu_name(), "cores": os.cpu_count(), "minutes": minutes, "gop_s": gop_s, "clip_s": clip_s,
           "frames": frames, "size": size, "clips": clips, "fps": FPS, "resolutions": {}}
    for name in names:
        spec = VideoSpec(name, minutes, gop_s)
        path = write_test_video(folder / spec.file_name(), spec, progress)
        out["resolutions"][name] = {"bitrate": spec.bitrate, "threads": {
            str(t): worker_rate(path, t, clips, clip_s, frames, size, progress=progress) for t in threads}}
    out["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    return out


def threads_label(t: str | int) -> str:
    return "auto" if str(t) == "0" else str(t)


def rates_table(r: dict) -> list[str]:
    """Markdown rows: clips/s per worker and CPU s per clip, per resolution and thread count."""
    threads = list(next(iter(r["resolutions"].values()))["threads"])
    head = ["video", *(f"threads {threads_label(t)}: clips/s" for t in threads), "CPU s / clip (threads 1)"]
    rows = []
    for name, res in r["resolutions"].items():
        t = res["threads"]
        one = t.get("1")
        rows.append([f"{name} ({res['bitrate'] / 1e6:g} Mbit/s)", *(f"{t[k]['clips_per_s']:.2f}" for k in threads),
                     f"{one['cpu_s_per_clip']:.2f}" if one else "n/a"])
    return markdown_table(head, rows)


def workers_table(r: dict, per_gpu: dict[str, float]) -> list[str]:
    """Markdown rows: per arm, the clips/s a GPU needs and the workers (and cores, at one thread) that
    takes at each resolution and thread count measured."""
    first = next(iter(r["resolutions"].values()))["threads"]
    head = ["arm", "clips/s a GPU needs", *(f"{name} workers (threads {' / '.join(threads_label(t) for t in first)})"
                                           for name in r["resolutions"]),
            *(f"{name} cores" for name in r["resolutions"])]
    rows = []
    for arm, need in per_gpu.items():
        rows.append([arm, f"{need:.1f}",
                     *(" / ".join(str(math.ceil(need / x["clips_per_s"])) for x in res["threads"].values())
                       for res in r["resolutions"].values()),
                     *(f"{need * res['threads']['1']['cpu_s_per_clip']:.0f}" if "1" in res["threads"] else "n/a"
                       for res in r["resolutions"].values())])
    return markdown_table(head, rows)


def save(r: dict, out: Path, shared_copy: Path | None) -> None:
    """``out``/decode_rates.json, and the machine's copy that ``describe`` reads by default."""
    write_json_atomic(out / "decode_rates.json", r)
    if shared_copy is not None:
        write_json_atomic(shared_copy, r)
