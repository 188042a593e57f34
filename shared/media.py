"""Reading frames from real media: videos (PyAV), single images, folders of frames.

All readers return uint8 arrays [T, size, size, 3]: frames sampled uniformly in time, resized on
the shorter side and centre-cropped to a square (the Perception Encoder runs without tiling).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_EXTS = {".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class MediaError(ValueError):
    """Media that cannot be read; the message says which file and why."""


def media_kind(path: Path) -> str:
    if path.is_dir():
        return "frames"
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in IMAGE_EXTS:
        return "image"
    raise MediaError(f"{path}: unsupported media type {ext!r} (videos: {sorted(VIDEO_EXTS)}, images: {sorted(IMAGE_EXTS)}, or a folder of frames)")


def uniform_times(duration: float, n: int) -> np.ndarray:
    """Centres of n equal segments of [0, duration): the usual uniform frame sampling."""
    return (np.arange(n) + 0.5) * (duration / n)


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def read_image(path: Path, n_frames: int, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            frame = square_resize(img, size)
    except (OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot decode image: {e}") from None
    return np.repeat(frame[None], n_frames, axis=0)


def read_frame_folder(path: Path, n_frames: int, size: int) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise MediaError(f"{path}: folder holds no frames ({sorted(IMAGE_EXTS)})")
    idx = np.minimum((uniform_times(len(files), n_frames)).astype(int), len(files) - 1)
    return np.stack([read_image(files[i], 1, size)[0] for i in idx])


def read_video(path: Path, size: int, n_frames: int | None = None, times: np.ndarray | None = None) -> np.ndarray:
    """Frames nearest to ``times`` (seconds), or ``n_frames`` uniform over the video.

    Streams through the file once, keeping only the frames it returns, so long videos are fine.
    """
    import av

    if times is None:
        times = uniform_times(video_duration(path), n_frames)
    times = np.asarray(times, dtype=float)
    order = np.argsort(times)
    out: list[np.ndarray | None] = [None] * len(times)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 25)
            prev = None  # (index, time, frame) of the previous decoded frame
            k, converted = 0, {}

            def convert(index: int, frame) -> np.ndarray:  # each picked frame is resized once
                if index not in converted:
                    converted[index] = square_resize(frame.to_image(), size)
                return converted[index]

            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / rate
                while k < len(order) and t >= times[order[k]]:
                    target = times[order[k]]
                    use_prev = prev is not None and target - prev[1] < t - target
                    out[order[k]] = convert(prev[0], prev[2]) if use_prev else convert(i, frame)
                    k += 1
                if k == len(order):
                    break
                prev = (i, t, frame)
            if prev is None and k == 0:
                raise MediaError(f"{path}: no decodable frames")
            while k < len(order):  # targets past the last frame take the last frame
                out[order[k]] = convert(prev[0], prev[2])
                k += 1
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:  # corrupt or truncated files
        raise MediaError(f"{path}: cannot decode video: {e}") from None
    return np.stack(out)


def video_duration(path: Path) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1e6
            return max(float(f.time or 0.0) for f in container.decode(stream))
    except IndexError:
        raise MediaError(f"{path}: no video stream") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot decode video: {e}") from None


def read_media(path: Path, n_frames: int, size: int) -> np.ndarray:
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    kind = media_kind(path)
    if kind == "video":
        return read_video(path, size, n_frames=n_frames)
    if kind == "image":
        return read_image(path, n_frames, size)
    return read_frame_folder(path, n_frames, size)
