import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from shared.data import build_dataset
from shared.manifest import ManifestError, read_clips, read_streams
from shared.media import MediaError, read_video


def write_video(path: Path, n: int = 20, size: int = 48, fps: int = 10) -> None:
    """Frame i is uniformly grey at level 10 * i: sampled frames reveal their index."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((size, size, 3), 10 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture
def media(tmp_path):
    write_video(tmp_path / "clip.mp4")
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "still.png")
    (tmp_path / "frames").mkdir()
    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 30 * i, np.uint8)).save(tmp_path / "frames" / f"{i:03d}.jpg")
    return tmp_path


def write_manifest(path: Path, lines: list) -> Path:
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


def good_lines():
    return [
        {"id": "v", "media": "clip.mp4", "captions": ["a grey clip brightens"], "label": "brighten", "split": "train"},
        {"id": "i", "media": "still.png", "captions": ["a still image", "nothing moves"], "split": "test"},
        {"id": "f", "media": "frames", "captions": ["frames get lighter"], "label": "brighten", "split": "val"},
    ]


def test_reads_video_image_and_frame_folder(media, smoke_cfg):
    manifest = write_manifest(media / "data.jsonl", good_lines())
    clips = read_clips(manifest)
    assert [c.id for c in clips] == ["v", "i", "f"]
    cfg = smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}")
    ds = build_dataset(cfg)
    assert ds.label_texts == ["brighten"]
    v, = ds.split("train")
    i, = ds.split("test")
    f, = ds.split("val")
    assert i.label is None and v.label == 0
    fv = v.frames(4, 32)
    assert fv.shape == (4, 32, 32, 3)
    # uniform sampling of a 20-frame video at 4 frames: centres of 4 segments -> frames ~2, 7, 12, 17
    levels = fv.reshape(4, -1).mean(1)
    assert np.all(np.diff(levels) > 30) and abs(levels[0] - 25) < 12 and abs(levels[-1] - 175) < 12
    fi = i.frames(3, 32)
    assert fi.shape == (3, 32, 32, 3) and np.all(fi == fi[0])
    ff = f.frames(3, 16)
    assert ff.shape == (3, 16, 16, 3) and np.all(np.diff(ff.reshape(3, -1).mean(1)) > 0)


def test_video_times_pick_nearest_frames(media):
    frames = read_video(media / "clip.mp4", 16, times=np.array([0.0, 1.02, 1.9]))
    assert [round(float(x) / 10) for x in frames.reshape(3, -1).mean(1)] == [0, 10, 19]


@pytest.mark.parametrize("mutate, expected", [
    (lambda l: l[1].update(media="missing.mp4"), "data.jsonl:2: media file not found"),
    (lambda l: l[0].update(captions=[]), "data.jsonl:1: 'captions' is empty"),
    (lambda l: l[2].update(captions=["ok", "  "]), "data.jsonl:3: caption 1 is empty"),
    (lambda l: l[0].pop("split"), "data.jsonl:1: missing field 'split'"),
    (lambda l: l[1].pop("id"), "data.jsonl:2: missing field 'id'"),
    (lambda l: l[1].update(split="dev"), "data.jsonl:2: split must be one of"),
    (lambda l: l[2].update(id="v"), "data.jsonl:3: duplicate id 'v' (first at"),
    (lambda l: l[0].update(media="notes.txt"), "data.jsonl:1: "),
    (lambda l: l.insert(1, "{not json"), "data.jsonl:2: not valid JSON"),
])
def test_bad_manifest_lines_name_line_and_problem(media, mutate, expected):
    (media / "notes.txt").write_text("hello")
    lines = good_lines()
    mutate(lines)
    with pytest.raises(ManifestError) as e:
        read_clips(write_manifest(media / "data.jsonl", lines))
    assert expected in str(e.value)


def test_undecodable_video_names_manifest_line(media, smoke_cfg):
    (media / "broken.mp4").write_bytes(b"\x00\x00\x00 this is not a video" * 50)
    lines = good_lines()
    lines[0]["media"] = "broken.mp4"
    manifest = write_manifest(media / "data.jsonl", lines)
    ds = build_dataset(smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}"))
    with pytest.raises(MediaError) as e:
        ds.split("train")[0].frames(4, 32)
    assert "data.jsonl:1" in str(e.value) and "broken.mp4" in str(e.value) and "cannot decode" in str(e.value)


def test_streams_manifest(media):
    path = write_manifest(media / "streams.jsonl", [
        {"id": "s", "media": "clip.mp4", "events": [{"t": 1.5, "caption": "later"}, {"t": 0.2, "caption": "first"}]}])
    s, = read_streams(path)
    assert s.events == ((0.2, "first"), (1.5, "later"))
    bad = write_manifest(media / "bad.jsonl", [{"id": "s", "media": "clip.mp4", "events": [{"caption": "x"}]}])
    with pytest.raises(ManifestError, match=r"bad.jsonl:1: event 0 needs a numeric 't'"):
        read_streams(bad)


def test_stream_windows_read_from_a_manifest_video(media, smoke_cfg):
    from shared.streams import load_streams, window_times

    path = write_manifest(media / "streams.jsonl", [
        {"id": "s", "media": "clip.mp4", "events": [{"t": 0.5, "caption": "dark"}, {"t": 1.5, "caption": "light"}]}])
    clips = write_manifest(media / "m.jsonl", good_lines())
    cfg = lambda streams: smoke_cfg("data.source=manifest", f"data.manifest.path={clips}", f"data.manifest.streams_path={streams}")
    s, = load_streams(cfg(path))
    assert s.duration == pytest.approx(2.0, abs=0.11) and s.events[1] == (1.5, "light")
    _, times = window_times(s.duration, window_s=0.4, hop_s=1.0, frames=2)  # windows at 0.5 s and 1.5 s
    frames = s.read_frames(times.reshape(-1), 16)
    assert frames.shape == (4, 16, 16, 3)
    assert frames[:2].mean() < frames[2:].mean()  # the clip brightens over time

    (media / "still_stream.jsonl").write_text(json.dumps({"id": "x", "media": "still.png", "events": [{"t": 0, "caption": "c"}]}) + "\n")
    with pytest.raises(MediaError, match=r"still_stream.jsonl:1: a stream's media must be a video"):
        load_streams(cfg(media / "still_stream.jsonl"))
