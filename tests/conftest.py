import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "experiments" / "configs" / "smoke.yaml"
DEFAULT = ROOT / "experiments" / "configs" / "default.yaml"
PAPER = ROOT / "experiments" / "configs" / "paper.yaml"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Under pytest-xdist each worker takes its share of the cores, set before torch starts its thread
# pool (the tests' subprocesses inherit it): workers that each use every core oversubscribe them.
# On 2 cores the suite took 0.48-0.77x its one-process time (docs/speed.md, a VM whose speed drifted).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores() // _workers))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One feature/tokenizer/decoder cache for the whole session: encoded once, reused by tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def smoke_cfg(cache_dir):
    from shared.config import load_config

    def make(*overrides):
        return load_config(SMOKE, [f"cache_dir={cache_dir}", *overrides])

    return make


@pytest.fixture(scope="session")
def smoke_prepared(cache_dir):
    from shared.config import load_config
    from shared.pipeline import prepare
    from shared.precision import resolve_runtime

    cfg = load_config(SMOKE, [f"cache_dir={cache_dir}"])
    return prepare(cfg, resolve_runtime(cfg))


def resolved(cfg):
    """``cfg`` with its precision and encoder dtype resolved for this machine, as a command runs it."""
    from shared.precision import resolve

    return resolve(cfg).apply(cfg)


def read_clips(path):
    """Every clip of a small manifest as an object, through the suite's own index."""
    from shared.data.manifest import build_index

    index = build_index(path)
    with open(index.path, "rb") as f:
        return [index.clip(i, f) for i in range(len(index))]
