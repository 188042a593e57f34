"""Long videos with timestamped events, cut into overlapping windows (for selective decoding).

A stream comes from the synthetic benchmark (``make_stream``; an event's timestamp is its midpoint)
or from ``data.manifest.streams_path`` (a video plus ``[{"t", "caption"}]``). Windows are centred
every ``hop_s`` seconds; each spreads ``frames`` frames uniformly over ``window_s`` seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from shared.config import Config, ConfigError
from shared.data.manifest import read_streams
from shared.data.media import MediaError, media_kind, read_video, video_duration
from shared.data.synthetic import make_stream

FrameReader = Callable[[np.ndarray, int], np.ndarray]  # (times in s, image size) -> uint8 [T, H, W, 3]


@dataclass(frozen=True)
class Stream:
    id: str
    duration: float  # seconds
    events: tuple[tuple[float, str], ...]  # (time in s, caption), sorted by time
    read_frames: FrameReader


def load_streams(cfg: Config) -> list[Stream]:
    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        out = []
        for i in range(s.streams):
            st = make_stream(s.seed, i, s.stream_events, s.paraphrase)
            events = tuple((e.start + e.duration / 2, e.caption) for e in st.events)
            out.append(Stream(f"stream{i:03d}", st.duration, events, st.render))
        return out
    path = cfg.data.manifest.streams_path
    if not path:
        raise ConfigError("data.manifest.streams_path: required for selective decoding on manifest data")

    out = []
    for ms in read_streams(path):
        try:
            if media_kind(ms.media) != "video":
                raise MediaError(f"a stream's media must be a video, got {ms.media}")
            duration = video_duration(ms.media)
        except MediaError as e:
            raise MediaError(f"{ms.where}: {e}") from None

        def reader(times: np.ndarray, size: int, media: Path = ms.media) -> np.ndarray:
            return read_video(media, size, times=times, threads=cfg.data.decode_threads)

        out.append(Stream(ms.id, duration, ms.events, reader))
    return out


def window_times(duration: float, window_s: float, hop_s: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Window centres [W] and the frame times of every window [W, frames], clipped to the video."""
    if hop_s <= 0 or window_s <= 0:
        raise ConfigError(f"selective.hop_s and selective.window_s must be positive, got {hop_s}, {window_s}")
    centres = np.arange(hop_s / 2, duration, hop_s)
    offsets = (np.arange(frames) + 0.5) / frames * window_s - window_s / 2
    return centres, np.clip(centres[:, None] + offsets[None], 0.0, max(0.0, duration - 1e-3))
