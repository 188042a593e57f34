"""String-keyed rows in append-only safetensors shards (text embeddings, features)."""
import pytest
import torch

from shared.tensor_store import ShardStore


def test_rows_come_back_in_the_order_asked_across_shards_and_reopening(tmp_path):
    store = ShardStore(tmp_path, dtype=torch.float32)
    a, b = torch.randn(3, 4), torch.randn(20, 4)
    store.add(["a0", "a1", "a2"], a)
    store.add([f"b{i}" for i in range(20)], b)
    again = ShardStore(tmp_path)  # a new process sees what the first one added
    assert len(again) == 23 and "b7" in again and "c" not in again
    got = again.get(["b19", "a1", "b0"])  # few rows of a large shard: read by slices
    assert torch.equal(got, torch.stack([b[19], a[1], b[0]]))
    assert torch.equal(again.get([f"b{i}" for i in range(20)]), b)  # most of a shard: read whole


def test_rows_are_stored_in_the_store_dtype_and_returned_as_float32(tmp_path):
    store = ShardStore(tmp_path, dtype=torch.bfloat16)
    x = torch.tensor([[1.0, 1.00390625, 3.0]])  # 1.0039 is not a bf16 value
    store.add(["k"], x)
    got = store.get(["k"])
    assert got.dtype == torch.float32 and torch.equal(got, x.to(torch.bfloat16).float())


def test_missing_keys_and_mismatched_rows_are_errors_naming_them(tmp_path):
    store = ShardStore(tmp_path)
    with pytest.raises(ValueError, match="2 keys for 3 rows"):
        store.add(["a", "b"], torch.zeros(3, 2))
    store.add(["a"], torch.zeros(1, 2))
    with pytest.raises(KeyError, match="1 keys not stored, e.g. 'zz'"):
        store.get(["a", "zz"])


def test_a_shard_left_half_written_by_a_crash_is_ignored(tmp_path):
    store = ShardStore(tmp_path)
    store.add(["a"], torch.ones(1, 2))
    (tmp_path / ".shard-99-1.safetensors.1.tmp").write_bytes(b"\x00" * 10)
    assert len(ShardStore(tmp_path)) == 1
