import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from shared.data.manifest import ManifestError, read_streams
from tests.conftest import read_clips
from shared.data.media import MediaError, read_video
from shared.data.sources import build_dataset


def write_video(path: Path, n: int = 20, size: int = 48, fps: int = 10, codec: str = "mpeg4",
                width: int | None = None, height: int | None = None, gop: int | None = None) -> None:
    """Frame i is uniformly grey at level (10 * i) % 250: sampled frames reveal their index."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width or size, height or size
        if gop:
            stream.gop_size = gop
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((stream.height, stream.width, 3), (10 * i) % 250, dtype=np.uint8)
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
    v, i, f = ds.split("train"), ds.split("test"), ds.split("val")
    assert (len(v), len(i), len(f)) == (1, 1, 1)
    assert i.clip(0).label == -1 and v.clip(0).label == 0 and i.clip(0).captions == ("a still image", "nothing moves")
    fv = v.frames(0, 4, 32)
    assert fv.shape == (4, 32, 32, 3)
    # uniform sampling of a 20-frame video at 4 frames: centres of 4 segments -> frames ~2, 7, 12, 17
    levels = fv.reshape(4, -1).mean(1)
    assert np.all(np.diff(levels) > 30) and abs(levels[0] - 25) < 12 and abs(levels[-1] - 175) < 12
    fi = i.frames(0, 3, 32)
    assert fi.shape == (3, 32, 32, 3) and np.all(fi == fi[0])
    ff = f.frames(0, 3, 16)
    assert ff.shape == (3, 16, 16, 3) and np.all(np.diff(ff.reshape(3, -1).mean(1)) > 0)


def test_video_times_pick_nearest_frames(media):
    frames = read_video(media / "clip.mp4", 16, times=np.array([0.0, 1.02, 1.9]))
    assert [round(float(x) / 10) for x in frames.reshape(3, -1).mean(1)] == [0, 10, 19]


@pytest.mark.parametrize("mutate, expected", [
    (lambda l: l[0].update(captions=[]), "data.jsonl:1: 'captions' is empty"),
    (lambda l: l[2].update(captions=["ok", "  "]), "data.jsonl:3: caption 1 is empty"),
    (lambda l: l[0].pop("split"), "data.jsonl:1: missing field 'split'"),
    (lambda l: l[1].pop("id"), "data.jsonl:2: missing field 'id'"),
    (lambda l: l[1].update(split="dev"), "data.jsonl:2: split must be one of"),
    (lambda l: l[2].update(id="v"), "data.jsonl:3: duplicate id 'v' (first at"),
    (lambda l: l[0].update(media=""), "data.jsonl:1: media is empty"),
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
        ds.split("train").frames(0, 4, 32)
    assert "data.jsonl:1" in str(e.value) and "broken.mp4" in str(e.value) and "cannot decode" in str(e.value)
    # the message ends with the fix: the command that writes a check folder, and the key that skips what it lists
    check = media / "data.check"
    assert f"python -m experiments validate -m {manifest} -o {check}`" in str(e.value)
    assert str(e.value).endswith(f"data.manifest.exclude={check}")


def test_media_root_header_old_absolute_paths_and_the_override(media, smoke_cfg, tmp_path):
    lines = good_lines()
    lines[1]["media"] = str(media / "still.png")  # an old manifest's absolute path: read as it is
    (tmp_path / "elsewhere").mkdir()
    manifest = write_manifest(tmp_path / "elsewhere" / "m.jsonl", [{"media_root": str(media)}, *lines])
    ds = build_dataset(smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}"))
    assert ds.split("train").frames(0, 2, 16).shape == (2, 16, 16, 3) and len(ds.split("test").frames(0, 2, 16))
    assert [c.where.rsplit(":", 1)[1] for c in read_clips(manifest)] == ["2", "3", "4"]  # lines counted as in the file
    # re-pointed: data.manifest.media_root wins over the header (relative paths only)
    import shutil

    moved = shutil.copytree(media, tmp_path / "moved")
    (media / "clip.mp4").unlink()
    cfg = smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}", f"data.manifest.media_root={moved}")
    assert build_dataset(cfg).split("train").frames(0, 2, 16).shape == (2, 16, 16, 3)
    with pytest.raises(MediaError, match="file not found"):
        build_dataset(smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}")).split("train").frames(0, 2, 16)
    from shared.data.media_check import validate

    assert validate(manifest, tmp_path / "r", workers=1)["problems"]["not found"]["files"] == 1
    assert validate(manifest, tmp_path / "r", workers=1, media_root=moved)["invalid"] == 0  # not resumed from the old root
    # a header anywhere but the first line is refused
    with pytest.raises(ManifestError, match=r"m2.jsonl:2: a media_root line must be the manifest's first line"):
        read_clips(write_manifest(tmp_path / "m2.jsonl", [lines[0], {"media_root": "x"}]))


def test_streams_manifest(media):
    path = write_manifest(media / "streams.jsonl", [
        {"id": "s", "media": "clip.mp4", "events": [{"t": 1.5, "caption": "later"}, {"t": 0.2, "caption": "first"}]}])
    s, = read_streams(path)
    assert s.events == ((0.2, "first"), (1.5, "later"))
    (media / "sub").mkdir()
    headed = write_manifest(media / "sub" / "headed.jsonl", [{"media_root": ".."}, json.loads(path.read_text())])
    assert read_streams(headed)[0].media == media / "sub" / ".." / "clip.mp4"  # a media_root first line, as clips have
    bad = write_manifest(media / "bad.jsonl", [{"id": "s", "media": "clip.mp4", "events": [{"caption": "x"}]}])
    with pytest.raises(ManifestError, match=r"bad.jsonl:1: event 0 needs a numeric 't'"):
        read_streams(bad)


def test_stream_windows_read_from_a_manifest_video(media, smoke_cfg):
    from shared.data.streams import load_streams, window_times

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


@pytest.mark.parametrize("name, codec, size", [
    ("clip.flv", "flv", (48, 48)), ("clip.wmv", "wmv2", (48, 48)), ("clip.ts", "mpeg2video", (48, 48)),
    ("clip.3gp", "h263", (128, 96)), ("clip.mkv", "ffv1", (48, 48)), ("clip.gif", "gif", (48, 48)),
])
def test_any_container_ffmpeg_decodes_is_a_video(tmp_path, name, codec, size):
    """No list of container extensions: whatever FFmpeg opens is read (flv, wmv, ts, 3gp, ...)."""
    pix = {"gif": "rgb8", "ffv1": "yuv420p"}.get(codec, "yuv420p")
    with av.open(str(tmp_path / name), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = pix
        for i in range(20):
            img = np.full((size[1], size[0], 3), 10 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    frames = read_video(tmp_path / name, 16, n_frames=4)
    levels = frames.reshape(4, -1).mean(1)
    assert frames.shape == (4, 16, 16, 3) and np.all(np.diff(levels) > 20), levels


def test_seeking_reads_the_frames_decoding_from_the_start_reads(tmp_path):
    write_video(tmp_path / "long.mp4", n=250, fps=10, gop=10)  # 25 s, a keyframe every second
    times = np.array([0.05, 24.9, 3.0, 12.34, 12.36, 7.0])
    seek = read_video(tmp_path / "long.mp4", 16, times=times)
    scan = read_video(tmp_path / "long.mp4", 16, times=times, seek=False)
    assert np.array_equal(seek, scan)
    assert [round(float(x) / 10) for x in seek.reshape(len(times), -1).mean(1)] == [1, 24, 5, 23, 24, 20]


def test_validate_lists_unreadable_media_resumes_and_excludes(media, smoke_cfg, tmp_path, capsys):
    from shared.data.media_check import validate

    (media / "notes.txt").write_text("hello")
    (media / "broken.mp4").write_bytes(b"not a video" * 50)
    lines = good_lines() + [
        {"id": "gone", "media": "missing.mp4", "captions": ["x"], "split": "train"},
        {"id": "txt", "media": "notes.txt", "captions": ["x"], "split": "train"},
        {"id": "bad", "media": "broken.mp4", "captions": ["x"], "split": "train"},
    ]
    manifest = write_manifest(media / "data.jsonl", lines)
    out = tmp_path / "report"
    s = validate(manifest, out, workers=2)
    assert s["clips"] == 6 and s["invalid"] == 3 and s["chunks_resumed"] == 0
    bad = [json.loads(l) for l in (out / "invalid.jsonl").read_text().splitlines()]
    assert [(b["line"], b["id"]) for b in bad] == [(4, "gone"), (5, "txt"), (6, "bad")]
    assert "not found" in bad[0]["problem"] and "cannot decode" in bad[2]["problem"]
    # the summary counts files by problem kind (not one entry per file), with a few examples each
    assert s["problems"] == {"cannot decode": {"files": 2, "examples": [str(media / "notes.txt"), str(media / "broken.mp4")]},
                             "not found": {"files": 1, "examples": [str(media / "missing.mp4")]}}
    assert validate(manifest, out, workers=1)["chunks_resumed"] == 1  # nothing redone
    from experiments.cli import main

    assert main(["validate", "-m", str(manifest), "-o", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().err
    assert "cannot decode: 2 files, e.g." in printed and "not found: 1 file, e.g." in printed
    assert f"data.manifest.exclude={out}" in printed
    ds = build_dataset(smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}", f"data.manifest.exclude={out}"))
    train = ds.split("train")
    assert len(train) == 1 and train.clip(0).id == "v"


@pytest.mark.slow
def test_a_large_manifest_is_indexed_as_columns(tmp_path):
    """200k lines: the index holds a few numbers per line, not one object per row (measured)."""
    import tracemalloc

    from shared.data.manifest import build_index

    n = 200_000
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"clip-{i}", "media": f"v/{i % 100}.mp4", "captions": [f"caption {i % 977}", "x"],
                                "label": f"class {i % 50}", "split": "train" if i % 10 else "test"}) + "\n")
    tracemalloc.start()
    index = build_index(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(index) == n and len(index.rows("test")) == n // 10 and len(index.labels) == 50
    # columns, their copies and the duplicate-id sort: ~100 bytes a line; one object per row would be >= 500
    assert peak / n < 150, f"{peak / n:.0f} bytes per line"
    with open(path, "rb") as f:
        c = index.clip(123_457, f)
    assert c.id == "clip-123457" and c.where.endswith(":123458") and index.labels[index.label[123_457]] == "class 7"


def test_tokenizer_corpus_holds_only_the_training_split_texts(media, smoke_cfg):
    from shared.pipeline import tokenizer_corpus

    lines = good_lines()
    lines[1] = dict(lines[1], label="zebra crossing")  # a label that only a test clip has
    manifest = write_manifest(media / "data.jsonl", lines)
    cfg = smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}")
    ds = build_dataset(cfg)
    assert "zebra crossing" in ds.label_texts
    corpus = tokenizer_corpus(cfg, ds)
    assert "zebra crossing" not in corpus and "a still image" not in corpus  # test texts stay out
    assert {"a grey clip brightens", "brighten", cfg.data.query} <= set(corpus)
    assert "frames get lighter" not in corpus  # val captions too


def test_a_cached_index_keeps_a_relative_media_root(media, tmp_path, monkeypatch):
    """Indexed once, read from the cache: a relative header and a relative manifest path resolve alike."""
    from shared.data.manifest import load_index

    (media / "data").mkdir()
    write_manifest(media / "data" / "m.jsonl", [{"media_root": ".."}, *good_lines()])
    monkeypatch.chdir(media)
    for _ in range(2):  # built, then cached
        index = load_index("data/m.jsonl", tmp_path / "cache")
        with open(index.path, "rb") as f:
            assert index.clip(0, f).media.resolve() == (media / "clip.mp4").resolve()
    assert load_index("data/m.jsonl", tmp_path / "cache", media_root=tmp_path).media_root == tmp_path
