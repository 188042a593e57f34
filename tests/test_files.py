"""Files written atomically, folders swapped in whole, JSONL read up to a torn line."""
import json

import pytest

from shared.files import append_jsonl, atomic_path, read_jsonl, swap_in, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_a_suffix_is_kept_for_writers_that_insist_on_one(tmp_path):
    import numpy as np

    with atomic_path(tmp_path / "index.npz", suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(3))  # np.savez appends .npz to a name without it
    assert np.load(tmp_path / "index.npz")["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["index.npz"]


def test_read_jsonl_stops_at_a_line_cut_by_a_crash(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"step": 1})
    append_jsonl(log, {"step": 2})
    with open(log, "a") as f:
        f.write('{"step": 3, "lo')
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_swap_in_replaces_a_folder_whole(tmp_path):
    final, tmp = tmp_path / "resume", tmp_path / "resume.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    swap_in(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume"]
