"""Frozen-encoder features of the sliding windows of long streams (selective decoding), for any arm."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from shared.config import Config
from shared.data.streams import window_times
from shared.files import atomic_path
from shared.precision import DTYPE_NAMES
from shared.progress import progress_bar


def stream_window_features(stream, encoder, cfg: Config) -> tuple[np.ndarray, torch.Tensor]:
    """Window centres and the frozen encoder's features of every window of a long stream, cached
    under ``cache_dir/features/streams`` per (stream, encoder, window times), like clip features.

    Overlapping windows share most of their frame times, and the encoder works per frame, so each
    distinct frame is read and encoded once and the windows gather their frames' tokens.
    """
    s = cfg.selective
    centres, times = window_times(stream.duration, s.window_s, s.hop_s, cfg.data.frames)
    key = hashlib.sha256(f"{encoder.fingerprint()}|{times.round(4).tobytes().hex()}".encode()).hexdigest()[:16]
    cache = cfg.cache_path / "features" / "streams"
    path = cache / f"{stream.id}-{key}.safetensors"
    if path.is_file():
        return centres, load_file(str(path))["features"]
    size, chunk = cfg.encoder.image_size, cfg.encoder.batch_frames
    unique, where = np.unique(times.round(6), return_inverse=True)
    parts = []
    for start in progress_bar(range(0, len(unique), chunk), desc=f"encode {stream.id}", unit="batch", leave=False):
        frames = stream.read_frames(unique[start:start + chunk], size)
        parts.append(encoder.encode_frames(torch.from_numpy(np.ascontiguousarray(frames))).to("cpu", DTYPE_NAMES[cfg.encoder.cache_dtype]))
    per_frame = torch.cat(parts)  # [F, tokens_per_frame, dim]
    feats = per_frame[torch.from_numpy(where.reshape(times.shape))].flatten(1, 2)  # [W, frames * tokens, dim]
    with atomic_path(path) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp))
    return centres, feats
