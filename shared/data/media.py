"""Reading frames from real media: videos (PyAV/FFmpeg), single images, folders of frames.

All readers return uint8 arrays [T, size, size, 3]: frames sampled at given times (uniform by
default), resized on the shorter side and centre-cropped to a square (the Perception Encoder runs
without tiling). A file is a video whenever FFmpeg can decode it (mp4, mkv, webm, flv, wmv, ts,
3gp, ogv, gif, ...): no list of container extensions; only still images (by extension) go to PIL.
Videos are opened once per clip and read by seeking to each sampled time, not decoded from the
start, so a frame at minute 50 costs about what a frame at second 5 costs. Files whose demuxer
cannot seek (a raw H.264/HEVC stream: seeking raises EPERM and the header has no duration) are
decoded from the start instead: frames are chosen by their decoded timestamps, or by their count
at the stream's rate when they carry none, and ``validate`` lists such files as slow.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

STILL_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# a forward gap (seconds) past which seeking beats decoding through: keyframes are usually <= 2 s apart
SEEK_GAP_S = 2.0
THREADED_PIXELS = 640 * 360  # frame threads (decode_threads != 1) only from this size: below it their start-up dominates


class MediaError(ValueError):
    """Media that cannot be read; the message says which file and why."""

    exit_code = 2


def media_kind(path: Path) -> str:
    if path.is_dir():
        return "frames"
    return "image" if path.suffix.lower() in STILL_EXTS else "video"


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
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in STILL_EXTS)
    if not files:
        raise MediaError(f"{path}: folder holds no frames ({sorted(STILL_EXTS)})")
    idx = np.minimum((uniform_times(len(files), n_frames)).astype(int), len(files) - 1)
    return np.stack([read_image(files[i], 1, size)[0] for i in idx])


def _frame_square(frame, size: int) -> np.ndarray:
    # PIL's resize: FFmpeg's reformat with a size change builds a new scaler per call (~7 ms a frame)
    return square_resize(frame.to_image(), size)


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return None


def _rate(stream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 25)


def _scanned_duration(path: Path) -> float:
    """The last frame's time, found by decoding the whole file once (for headers without a duration).
    Frames without a timestamp are counted at the stream's rate, as ``_Walker`` times them. A fresh
    opening, not a seek back: some demuxers cannot seek at all."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate, last, count = _rate(stream), None, 0
        for frame in container.decode(stream):
            last = float(frame.time) if frame.time is not None else count / rate
            count += 1
    if last is None:
        raise MediaError(f"{path}: no decodable frames")
    return last


class _SeekRefused(Exception):
    """The demuxer refused a seek: the file is read again from the start, without seeking."""


class _Walker:
    """Nearest decoded frame to increasing target times, seeking over long forward gaps."""

    def __init__(self, container, stream, seek: bool):
        self.container, self.stream, self.seek_ok = container, stream, seek
        self.rate = _rate(stream)
        self._restart(None)

    def _restart(self, target: float | None) -> None:
        if target is not None:
            try:
                self.container.seek(int(target / self.stream.time_base), stream=self.stream, backward=True)
            except PermissionError:  # the demuxer cannot seek (EPERM); the refused seek ends its stream too
                raise _SeekRefused() from None
        self.frames = self.container.decode(self.stream)
        self.prev = None  # (time, frame) of the last decoded frame before the current target
        self.count = 0
        self.pending = None  # a decoded frame past the last target, kept for the next one

    def _next(self):
        if self.pending is not None:
            item, self.pending = self.pending, None
            return item
        frame = next(self.frames, None)
        if frame is None:
            return None
        t = float(frame.time) if frame.time is not None else self.count / self.rate
        self.count += 1
        return t, frame

    def nearest(self, target: float) -> tuple[float, object]:
        ahead = target - (self.prev[0] if self.prev else 0.0)
        if self.seek_ok and ahead > SEEK_GAP_S:
            self._restart(target)
        while True:
            item = self._next()
            if item is None:  # past the last frame: the last one
                if self.prev is None:
                    raise MediaError("no decodable frames")
                return self.prev
            t, _ = item
            if t >= target:
                self.pending = item
                if self.prev is not None and target - self.prev[0] < t - target:
                    return self.prev
                return item
            self.prev = item


def set_decode_threads(stream, threads: int) -> None:
    """FFmpeg's decoding threads for ``stream`` (``data.decode_threads``): 1 = one thread, the most
    clips per core when many loader workers share the cores; N > 1 = N threads; 0 = FFmpeg's own
    count (one per core, up to 16). More than one thread uses frame and slice threads on large frames."""
    if threads != 1 and (stream.codec_context.width or 0) * (stream.codec_context.height or 0) >= THREADED_PIXELS:
        stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads


def read_video(path: Path, size: int, n_frames: int | None = None, times: np.ndarray | None = None,
               seek: bool = True, span: tuple[float, float | None] | None = None, threads: int = 0) -> np.ndarray:
    """Frames nearest to ``times`` (seconds), or ``n_frames`` uniform over the video (over ``span``,
    (start, end or None = the end), when given), from one opening of the file (more when the header
    has no duration or the demuxer refuses to seek). ``seek=False`` decodes from the start instead.
    ``threads``: FFmpeg's decoding threads (:func:`set_decode_threads`; 0 = FFmpeg's choice)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            set_decode_threads(stream, threads)
            if times is None:
                times = _sampled_times(path, _duration(container, stream), n_frames, span)
            times = np.asarray(times, dtype=float)
            walker = _Walker(container, stream, seek)
            out: list[np.ndarray | None] = [None] * len(times)
            last_t, last = None, None  # targets are visited in order: repeats of a frame are adjacent
            for k in np.argsort(times, kind="stable"):
                t, frame = walker.nearest(float(times[k]))
                if t != last_t:
                    last_t, last = t, _frame_square(frame, size)
                out[k] = last
    except _SeekRefused:  # a fresh opening, decoded from the start: same frames, chosen by decoded time
        return read_video(path, size, times=times, seek=False, threads=threads)
    except MediaError as e:
        raise MediaError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:  # unreadable, corrupt or truncated
        raise MediaError(f"{path}: cannot decode video: {e}") from None
    return np.stack(out)


def _sampled_times(path: Path, duration: float | None, n_frames: int, span: tuple[float, float | None] | None):
    """``n_frames`` uniform times over the video, or over ``span`` within it."""
    start, end = span if span is not None else (0.0, None)
    if end is None or start > 0:  # the video's length is needed: the span's end, or a check on its start
        duration = duration if duration is not None else _scanned_duration(path)
        if start >= duration:
            raise MediaError(f"{path}: the clip starts at {start:g} s, after the video's end ({duration:.2f} s)")
        end = duration if end is None else end
    return start + uniform_times(end - start, n_frames)


def video_duration(path: Path) -> float:
    try:
        with av.open(str(path)) as container:
            d = _duration(container, container.streams.video[0])
        return d if d is not None else _scanned_duration(path)
    except IndexError:
        raise MediaError(f"{path}: no video stream") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot decode video: {e}") from None


def read_media(path: Path, n_frames: int, size: int, span: tuple[float, float | None] | None = None,
               threads: int = 0) -> np.ndarray:
    """``n_frames`` frames of a video (over ``span`` = (start, end or None) seconds when given), an
    image repeated, or a folder of frames; a time span is refused for stills and frame folders.
    ``threads``: FFmpeg's decoding threads for a video (``data.decode_threads``; 0 = FFmpeg's choice)."""
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    kind = media_kind(path)
    if kind == "video":
        return read_video(path, size, n_frames=n_frames, span=span, threads=threads)
    if span is not None:
        raise MediaError(f"{path}: a clip with start/end times needs a video, not {'an image' if kind == 'image' else 'a folder of frames'}")
    if kind == "image":
        return read_image(path, n_frames, size)
    return read_frame_folder(path, n_frames, size)


def seek_problem(path: Path) -> str | None:
    """Why reading ``path`` is slow (no seeking, or no duration in its header), or None: for ``validate``."""
    if media_kind(path) != "video":
        return None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        no_duration = _duration(container, stream) is None
        try:
            container.seek(0, stream=stream, backward=True)
        except PermissionError:
            return ("cannot seek: every read decodes from the start" + (" and counts the frames first (no duration)"
                    if no_duration else "") + "; remux it (ffmpeg -i IN -c copy OUT.mp4) to read it fast")
    return "no duration in the header: the frames are counted by decoding the file once per read" if no_duration else None


@dataclass(frozen=True)
class MediaCheck:
    problem: str | None  # why the media cannot be read, or None
    slow: str | None = None  # readable, but why each read costs a full decode, or None


def check_media(path: Path, span: tuple[float, float | None] | None = None) -> MediaCheck:
    """Whether the media is readable (one frame decoded) and whether reading it is slow: for ``validate``."""
    try:
        read_media(path, 1, 8, span)
        return MediaCheck(None, seek_problem(path))
    except MediaError as e:
        return MediaCheck(str(e))
    except (av.error.FFmpegError, OSError) as e:
        return MediaCheck(f"{path}: cannot decode video: {e}")
