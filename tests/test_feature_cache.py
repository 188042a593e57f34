"""The feature store (cache mode) and the online encoder give the same visual tokens."""
import dataclasses

import numpy as np
import pytest
import torch

from shared.data.sources import build_dataset
from shared.features.encoder import FrozenEncoder
from shared.features.store import SHARD_CLIPS, FeatureStore
from shared.features.visual import VisualFeatures
from tests.conftest import resolved


def features(cfg):
    cfg = resolved(cfg)  # the encoder runs in the dtype the run's precision gives it
    return VisualFeatures(cfg, FrozenEncoder.from_config(cfg))


def test_cache_encodes_once_and_equals_the_encoder(smoke_cfg, tmp_path):
    cfg = smoke_cfg(f"cache_dir={tmp_path}")
    source = build_dataset(cfg).split("val")
    f = features(cfg)
    stats = f.prepare(source, "val")
    assert (stats.clips, stats.encoded) == (len(source), len(source))
    assert features(cfg).prepare(source, "val").encoded == 0  # a new process finds every shard on disk
    store = f.store(source)
    idx = [5, 0, 3, 5]
    rows = store.read(idx)
    assert rows.shape == (4, f.encoder.tokens_per_clip(cfg.data.frames), f.encoder.dim)
    frames = np.stack([source.frames(i, cfg.data.frames, cfg.encoder.image_size) for i in idx])
    assert torch.allclose(f.encoder.encode_clips(frames), rows, atol=1e-5)
    assert not list(store.folder.glob("*.tmp"))

    # another frame sampling or encoder setting is another folder; another split length shares shards
    assert features(smoke_cfg(f"cache_dir={tmp_path}", "encoder.init_seed=1")).prepare(source, "v").encoded == len(source)
    assert features(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, frames=3))).prepare(source, "v").encoded
    longer = build_dataset(smoke_cfg(f"cache_dir={tmp_path}", "data.synthetic.val_clips=30")).split("val")
    assert longer.content_key == source.content_key  # the same videos at the same positions


def test_half_written_shards_are_ignored_and_redone(smoke_cfg, tmp_path):
    cfg = smoke_cfg(f"cache_dir={tmp_path}")
    source = build_dataset(cfg).split("val")
    f = features(cfg)
    store = f.store(source)
    store.folder.mkdir(parents=True)
    (store.folder / f".{store.path(0).name}.123.tmp").write_bytes(b"truncated")
    assert store.missing() == [0]
    assert f.prepare(source, "val").encoded == len(source)
    assert store.missing() == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_store_round_trips_rows_across_shards(tmp_path, dtype):
    n = SHARD_CLIPS + 7
    store = FeatureStore(tmp_path / "s", n, 3, 2, dtype)
    data = torch.randn(n, 3, 2)
    for k in range(store.shards):
        store.write(k, data[k * SHARD_CLIPS:(k + 1) * SHARD_CLIPS])
    assert [p.name for p in sorted(store.folder.glob("*.npy"))] == ["shard-000000-n1024.npy", "shard-000001-n7.npy"]
    idx = [n - 1, 0, SHARD_CLIPS, 3, 3]
    assert torch.equal(store.read(idx), data[idx].to(dtype).float())
    with pytest.raises(IndexError):
        store.read([n])


def test_cache_and_online_modes_train_the_same(smoke_prepared, tmp_path):
    """A few training steps from cached features and from frames encoded in the step: same losses."""
    from shared.training.loop import train_arm
    from shared.files import read_jsonl

    def run(mode):
        cfg = dataclasses.replace(smoke_prepared.cfg, encoder=dataclasses.replace(smoke_prepared.cfg.encoder, features=mode),
                                  train=dataclasses.replace(smoke_prepared.cfg.train, mixed_precision="no", milestones=[128]))
        prep = dataclasses.replace(smoke_prepared, cfg=cfg, features=VisualFeatures(cfg, smoke_prepared.features.encoder))
        prep.features.prepare(prep.dataset.split("train"), "train")
        train_arm(prep, "jepa", tmp_path / mode, progress=False)
        return [r["loss"] for r in read_jsonl(tmp_path / mode / "train_log.jsonl")]

    cached, online = run("cache"), run("online")
    assert len(cached) == 2 and cached == pytest.approx(online, rel=1e-5)


@pytest.mark.slow
def test_data_bench_reports_every_measure(tmp_path, cache_dir):
    import json

    from experiments.cli import main
    from tests.conftest import SMOKE

    out = tmp_path / "bench"
    assert main(["data-bench", "-c", str(SMOKE), "-o", str(out), f"cache_dir={cache_dir}", "--clips", "200,2000",
                 "--steps", "2", "--loader-batches", "3", "--video-minutes", "0.2"]) == 0
    r = json.loads((out / "data_bench.json").read_text())
    assert set(r["memory_mb"]) == {"cache", "online"} and all(v > 0 for m in r["memory_mb"].values() for v in m.values())
    assert set(r["loader_clips_per_s"]["cache"]) == {"0", "1", "2"}
    assert r["step_ms"]["jepa"]["cache"] > 0 and r["decode"]["seek"] > 0
    assert (out / "data_bench.md").is_file()
