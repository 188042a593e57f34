"""The data rate a GPU needs, measured: generated H.264 video, one worker's clips/s through the suite's
reader, ``data.decode_threads`` reaching FFmpeg's decoder, the shared-memory check of the loader, and
``describe`` turning the rate a GPU needs into workers."""
import json
import logging
import math
import threading
from collections import namedtuple

import av
import pytest
import torch

import shared.data.loader as loader
import shared.data.media as media
from experiments.cli import main
from experiments.data_bench import write_manifest
from experiments.decode_bench import VideoSpec, worker_rate, write_test_video
from experiments.describe import data_rate
from shared.data.sources import build_dataset
from tests.conftest import SMOKE


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    """Six seconds of 240p H.264 with a keyframe every second (the generator of the real-video bench)."""
    folder = tmp_path_factory.mktemp("videos")
    return write_test_video(folder / "small.mp4", VideoSpec("240p", minutes=0.1, gop_s=1.0), progress=False)


def test_the_generated_video_is_h264_at_its_size_length_and_keyframe_interval(small_video):
    with av.open(str(small_video)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("h264", 426, 240)
        keyframes = [float(p.pts * p.time_base) for p in c.demux(s) if p.is_keyframe]
    assert keyframes[:6] == pytest.approx([0, 1, 2, 3, 4, 5], abs=0.05)  # x264's scene cuts could add more
    assert media.video_duration(small_video) == pytest.approx(6.0, abs=0.1)
    frames = media.read_video(small_video, 32, n_frames=4)
    assert frames.shape == (4, 32, 32, 3) and len({f.tobytes() for f in frames}) == 4  # the pattern moves


def test_one_workers_rate_is_clips_read_over_time(small_video, monkeypatch):
    calls = []
    real = media.read_media
    monkeypatch.setattr("experiments.decode_bench.read_media", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    r = worker_rate(small_video, threads=1, clips=3, clip_s=2.0, frames=4, size=32, progress=False)
    assert len(calls) == 4 and all(k == {"threads": 1} and a[1:3] == (4, 32) for a, k in calls)  # one untimed first
    assert all(0 <= a[3][0] and a[3][1] - a[3][0] == 2.0 and a[3][1] <= 6.0 for a, _ in calls)
    assert r["clips"] == 3 and r["clips_per_s"] > 0 and r["cpu_s_per_clip"] > 0


def test_decode_threads_reaches_ffmpegs_decoder(small_video, tmp_path, smoke_cfg, monkeypatch):
    seen = []
    real = media.set_decode_threads

    def spy(stream, threads):
        real(stream, threads)
        seen.append((threads, stream.codec_context.thread_count))

    monkeypatch.setattr(media, "set_decode_threads", spy)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "clip-0.mp4").symlink_to(small_video)
    manifest = write_manifest(tmp_path / "m.jsonl", 4, ["media/clip-0.mp4"])
    for threads in (3, 1):
        cfg = smoke_cfg("data.source=manifest", f"data.manifest.path={manifest}", f"data.decode_threads={threads}")
        assert build_dataset(cfg).split("train").frames(0, 2, 16).shape == (2, 16, 16, 3)
        assert seen[-1] == (threads, threads)  # set on the codec context that decodes


def test_the_loader_warns_when_batches_in_flight_do_not_fit_shared_memory(monkeypatch, caplog):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(loader.shutil, "disk_usage", lambda path: usage(64 << 20, 0, 64 << 20))  # docker's 64 MB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    frames = loader.ClipReader(frames=16, size=336)
    plan = loader.EvalPlan(0, 64, 16)
    batch = 16 * 16 * 336 * 336 * 3
    assert loader.ClipBatches(None, plan, frames, "q").batch_bytes() == batch
    with caplog.at_level(logging.WARNING, logger="shared.data.loader"):
        loader.make_loader(loader.ClipBatches(None, plan, frames, "q"), 0, 4, workers=2, prefetch=2)
        loader.make_loader(loader.ClipBatches(None, plan, frames, "q"), 0, 4, workers=2, prefetch=2)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1  # once per setting, not per evaluation loader
    assert "8 process(es) x data.workers=2 x data.prefetch=2" in warned[0] and "--shm-size=" in warned[0]
    assert f"{8 * 2 * 2 * batch / 1024 ** 3:.1f} GB in flight" in warned[0]
    assert loader.check_shared_memory(1, 2, 1 << 20)  # 2 MB fits 64 MB
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shared.data.loader"):
        loader.make_loader(loader.ClipBatches(None, plan, frames, "q"), 0, 4, workers=0, prefetch=2)
    assert not caplog.records  # no workers, no shared memory


# Held by a thread of the test process while its loader's workers start: a worker forked from this
# process would inherit it held (the CI hang); one started by the fork server imports it free.
HELD_BY_A_THREAD = threading.Lock()


class _NeedsTheLock(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def batch_bytes(self):
        return 16

    def __getitem__(self, k):
        got = HELD_BY_A_THREAD.acquire(timeout=20)  # a forked worker would wait here forever
        if got:
            HELD_BY_A_THREAD.release()
        return (k, got)


def test_loader_workers_do_not_inherit_locks_held_by_this_process_threads():
    release = threading.Event()
    holder = threading.Thread(target=lambda: (HELD_BY_A_THREAD.acquire(), release.wait(), HELD_BY_A_THREAD.release()))
    holder.start()
    try:
        items = list(loader.make_loader(_NeedsTheLock(), 0, 4, workers=2, prefetch=1))
    finally:
        release.set()
        holder.join()
    assert items == [(k, True) for k in range(4)]  # (k, False): the worker waited 20 s on a lock it inherited


def _rates_file(path, rate_720, rate_1080, frames=16, size=336):
    point = lambda r: {"clips_per_s": r, "cpu_s_per_clip": 1 / r, "clips": 4}  # noqa: E731
    path.write_text(json.dumps({"cpu": "test CPU", "frames": frames, "size": size, "clip_s": 10, "resolutions": {
        "720p": {"bitrate": 2.5e6, "threads": {"1": point(rate_720), "0": point(2 * rate_720)}},
        "1080p": {"bitrate": 5e6, "threads": {"1": point(rate_1080), "0": point(2 * rate_1080)}}}}))
    return path


def test_describe_memory_prints_the_rate_a_gpu_needs_and_the_workers_it_takes(tmp_path, cache_dir, capsys):
    rates = _rates_file(tmp_path / "decode_rates.json", 2.0, 0.5)
    args = ["describe", "--memory", "-c", str(SMOKE), "--gpus", "2", f"cache_dir={cache_dir}", "--decode-rates", str(rates)]
    assert main([*args, "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    d = m["data_rate"]
    for arm in ("jepa", "vlm"):
        h = m["time"][arm]["2"]
        need = d["per_gpu"][f"{arm} on 2"]
        # the hours' own pace: executed FLOPs per sample at the assumed share of the peak
        assert need["clips_per_s"] == pytest.approx(m["gpu_peak_flops"] * m["utilisation"] / h["executed_flops_per_sample"])
        assert need["by_resolution"]["1080p"]["workers"] == math.ceil(need["clips_per_s"] / 0.5)
        assert need["by_resolution"]["720p"]["cores"] == pytest.approx(need["clips_per_s"] / 2.0)
    assert d["worker"]["measured"] and d["worker"]["threads"] == 1  # smoke's data.decode_threads
    assert main([*args, "data.decode_threads=0"]) == 0
    out = capsys.readouterr().out
    assert "Data each GPU needs (the hours above" in out and "data.decode_threads=0: 720p 4.00, 1080p 1.00" in out
    assert "measured at 16 frames of 336 px, the config reads" in out  # smoke reads fewer, smaller frames


def test_describe_states_an_assumed_rate_and_refuses_a_missing_file(tmp_path):
    from shared.config import ConfigError, load_config

    cfg = load_config(SMOKE, [f"cache_dir={tmp_path}"])
    w = data_rate.worker_rates(cfg)
    assert not w["measured"] and "assumed" in w["source"] and w["rates"] == data_rate.ASSUMED
    with pytest.raises(ConfigError, match="--decode-rates .*nothing.json: no such file"):
        data_rate.worker_rates(cfg, tmp_path / "nothing.json")
    r = {"rows": [{"arm": "jepa", "samples_per_s": 30.0}, {"arm": "jepa", "samples_per_s": 20.0},
                  {"arm": "vlm", "error": "CRASHED"}]}
    d = data_rate.for_gpu_check(r, cfg, _rates_file(tmp_path / "r.json", 2.0, 0.5))
    assert list(d["per_gpu"]) == ["jepa"] and d["per_gpu"]["jepa"]["clips_per_s"] == 30.0  # the fastest run
    assert d["per_gpu"]["jepa"]["by_resolution"]["1080p"]["workers"] == 60
    assert any("too few for jepa" in line for line in data_rate.text(d, "measured"))


def test_data_bench_real_video_measures_and_leaves_a_file_describe_reads(tmp_path, cache_dir, capsys):
    out = tmp_path / "bench"
    assert main(["data-bench", "-c", str(SMOKE), "-o", str(out), "--real-video", "--resolutions", "240p",
                 "--minutes", "0.1", "--clip-seconds", "2", "--real-clips", "2", "--decode-threads", "1,2", "--quiet",
                 "--video-cache", str(tmp_path / "videos"), "--gpus", "2", f"cache_dir={cache_dir}"]) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "decode_rates.json").read_text())
    assert set(r["resolutions"]["240p"]["threads"]) == {"1", "2"} and r["frames"] == 4  # smoke's data.frames
    assert all(p["clips_per_s"] > 0 for p in r["resolutions"]["240p"]["threads"].values())
    assert (cache_dir / data_rate.RATES_FILE).is_file() and "| jepa |" in printed and "240p workers" in printed
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 1
    assert main(["data-bench", "-c", str(SMOKE), "-o", str(out), "--real-video", "--resolutions", "480p",
                 f"cache_dir={cache_dir}"]) == 2  # a clear error naming the flag
    assert "--resolutions: unknown 480p" in capsys.readouterr().err
    from shared.config import load_config

    assert data_rate.worker_rates(load_config(SMOKE, [f"cache_dir={cache_dir}"]))["measured"]  # describe's default
