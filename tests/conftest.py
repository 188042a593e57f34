import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "experiments" / "configs" / "smoke.yaml"
DEFAULT = ROOT / "experiments" / "configs" / "default.yaml"
PAPER = ROOT / "experiments" / "configs" / "paper.yaml"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
