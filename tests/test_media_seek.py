"""Media that FFmpeg decodes but cannot seek: a raw H.264 stream (its demuxer raises EPERM on seek, its
header has no duration, its frames carry no timestamps) is read by decoding from the start, and
``validate`` lists it as readable but slow."""
import json

import av
import numpy as np
import pytest

from shared.data.media import _rate, read_media, read_video, seek_problem, uniform_times
from shared.data.media_check import validate


def write_raw_h264(path, n: int, fps: int = 25) -> None:
    """Frame i is grey at level 2 * i: a frame's level tells its index."""
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0"}  # lossless: levels survive the codec
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 2 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "clip.h264"
    write_raw_h264(path, 100)  # 4 s at the rate FFmpeg assumes for a raw stream
    with av.open(str(path)) as c:  # what makes it unseekable: no duration, seeking refused
        assert c.duration is None and c.streams.video[0].duration is None
        with pytest.raises(PermissionError):
            c.seek(0)
    return path


def sequential_levels(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.array([f.to_ndarray(format="rgb24").mean() for f in c.decode(video=0)])


def test_an_unseekable_stream_is_read_from_the_start(raw):
    levels = sequential_levels(raw)
    assert len(levels) == 100
    with av.open(str(raw)) as c:
        rate = _rate(c.streams.video[0])
    # no duration: the frames are counted, and uniform times chosen over their count at the stream's rate
    frames = read_media(raw, 4, 16)
    expected = np.rint(uniform_times(99 / rate, 4) * rate).astype(int)
    assert np.allclose(frames.reshape(4, -1).mean(1), levels[expected], atol=1.5)
    # explicit times far apart: the forward gap asks for a seek, which the demuxer refuses
    times = np.array([0.13, 3.5, 1.0])
    got = read_video(raw, 16, times=times).reshape(3, -1).mean(1)
    assert np.allclose(got, levels[np.rint(times * rate).astype(int)], atol=1.5)
    assert np.array_equal(read_video(raw, 16, times=times), read_video(raw, 16, times=times, seek=False))
    # a segment of it, as a manifest's start/end asks
    seg = read_media(raw, 2, 16, span=(2.0, 3.0)).reshape(2, -1).mean(1)
    assert np.allclose(seg, levels[np.rint((2.0 + np.array([0.25, 0.75])) * rate).astype(int)], atol=1.5)


def test_validate_lists_unseekable_media_as_slow(raw, tmp_path):
    from tests.test_manifest import write_video

    write_video(tmp_path / "fine.mp4")
    assert seek_problem(tmp_path / "fine.mp4") is None and "cannot seek" in seek_problem(raw)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "ok", "media": "fine.mp4", "captions": ["c"], "split": "train"},
        {"id": "raw", "media": "clip.h264", "captions": ["c"], "split": "train"}]))
    s = validate(manifest, tmp_path / "report", workers=1)
    assert s["invalid"] == 0 and s["slow"] == 1
    slow = [json.loads(l) for l in (tmp_path / "report" / "slow.jsonl").read_text().splitlines()]
    assert [(r["line"], r["id"]) for r in slow] == [(2, "raw")] and "decodes from the start" in slow[0]["problem"]
