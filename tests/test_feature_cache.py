import numpy as np
import torch

from shared.data import build_dataset
from shared.encoder import FrozenEncoder
from shared.feature_cache import FeatureCache


def test_cache_hit_miss_and_invalidation(smoke_cfg, tmp_path):
    cfg = smoke_cfg(f"cache_dir={tmp_path}")
    records = build_dataset(cfg).split("val")[:6]
    enc = FrozenEncoder(cfg.encoder)
    cache = FeatureCache(tmp_path, enc, cfg.data.frames)
    first, stats = cache.features(records)
    assert (stats.hits, stats.misses) == (0, 6)
    assert first.shape == (6, enc.tokens_per_clip(cfg.data.frames), enc.dim)

    # a new cache object (a new process) finds everything on disk, bit for bit
    again, stats = FeatureCache(tmp_path, FrozenEncoder(cfg.encoder), cfg.data.frames).features(records)
    assert (stats.hits, stats.misses) == (6, 0)
    assert torch.equal(first, again)

    # the cached features are the encoder's output on the clip's frames
    frames = np.stack([r.frames(cfg.data.frames, cfg.encoder.image_size) for r in records[:2]])
    assert torch.allclose(enc.encode_clips(frames), first[:2], atol=1e-5)

    # a changed clip (new content fingerprint) is a miss; the others stay hits
    changed = [records[0].__class__(**{**records[0].__dict__, "fingerprint": "edited"})] + records[1:]
    _, stats = cache.features(changed)
    assert (stats.hits, stats.misses) == (5, 1)

    # another frame sampling or another encoder setting selects another cache folder
    _, stats = FeatureCache(tmp_path, enc, cfg.data.frames + 1).features(records)
    assert stats.misses == 6
    other = smoke_cfg(f"cache_dir={tmp_path}", "encoder.init_seed=1")
    _, stats = FeatureCache(tmp_path, FrozenEncoder(other.encoder), cfg.data.frames).features(records)
    assert stats.misses == 6
    pooled = smoke_cfg(f"cache_dir={tmp_path}", "encoder.pool_grid=1")
    feats, stats = FeatureCache(tmp_path, FrozenEncoder(pooled.encoder), cfg.data.frames).features(records)
    assert stats.misses == 6 and feats.shape[1] == cfg.data.frames


def test_half_written_shards_are_ignored(smoke_cfg, tmp_path):
    cfg = smoke_cfg(f"cache_dir={tmp_path}")
    records = build_dataset(cfg).split("val")[:3]
    cache = FeatureCache(tmp_path, FrozenEncoder(cfg.encoder), cfg.data.frames)
    cache.features(records)
    (cache.store.dir / ".shard-x.safetensors.tmp").write_bytes(b"truncated")
    _, stats = FeatureCache(tmp_path, FrozenEncoder(cfg.encoder), cfg.data.frames).features(records)
    assert stats.hits == 3


def test_cache_benchmark_reports_a_speedup(tmp_path, cache_dir):
    import json

    from experiments.cli import main
    from tests.conftest import SMOKE

    out = tmp_path / "bench"
    assert main(["cache-benchmark", "--config", str(SMOKE), "--out", str(out), f"cache_dir={cache_dir}",
                 "--steps", "2", "arms=[jepa]"]) == 0
    r = json.loads((out / "cache_benchmark.json").read_text())["arms"]["jepa"]
    assert r["cached_step_ms"] > 0 and r["on_the_fly_step_ms"] > 0
    assert r["speedup"] == r["on_the_fly_step_ms"] / r["cached_step_ms"]
