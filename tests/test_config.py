import pytest

from shared.config import ConfigError, dump_yaml, load_config, split_sweeps
from tests.conftest import DEFAULT, PAPER, SMOKE


@pytest.mark.parametrize("preset", [SMOKE, DEFAULT, PAPER])
def test_presets_load(preset):
    cfg = load_config(preset)
    assert cfg.arms == ["jepa", "vlm"]
    assert set(cfg.arm) >= {"jepa", "vlm"}


def test_paper_preset_matches_section_4_4():
    cfg = load_config(PAPER)
    assert cfg.encoder.model == "vit_pe_core_large_patch14_336" and cfg.encoder.image_size == 336
    assert cfg.data.frames == 16 and cfg.train.effective_batch == 128
    assert cfg.train.milestones[0] == 500_000 and cfg.train.milestones[-1] == 15_000_000
    assert cfg.arm["jepa"].layers == [8, 16] and cfg.lm.num_layers == 16


def test_overrides_are_typed():
    cfg = load_config(SMOKE, ["train.lr=1e-4", "seeds=0,1,2", "jepa.loss=cosine", "data.synthetic.paraphrase=4",
                              "train.milestones=[32,64]", "encoder.weights=null"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.seeds == [0, 1, 2]
    assert cfg.arm["jepa"].loss == "cosine"
    assert cfg.data.synthetic.paraphrase == 4
    assert cfg.train.milestones == [32, 64]
    assert cfg.encoder.weights is None


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown config key train.lrr"),
    ("trian.lr=1", "unknown config key trian"),
    ("jepa.nope=1", "unknown config key jepa.nope"),
    ("train.micro_batch=abc", "train.micro_batch: expected an integer"),
    ("train.micro_batch=1.5", "train.micro_batch: expected an integer"),
    ("jepa.loss=hinge", "jepa.loss: must be one of"),
    ("train.milestones=[64,32]", "train.milestones: must be positive and strictly increasing"),
    ("train.micro_batch=7", "must be a multiple of train.micro_batch"),
    ("data.synthetic.paraphrase=9", "data.synthetic.paraphrase: must be in 0..4"),
    ("arms=[jepa,nosuch]", "unknown arm 'nosuch'"),
    ("vlm.lora=maybe", "vlm.lora: expected true/false"),
    ("novalue", "expected key=value"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [override])
    assert message in str(e.value)
    if "=" in override:  # errors in values name the preset they were applied to
        assert "smoke.yaml" in str(e.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  effective_batch: 64\n  warmupp: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown config key train.warmupp"):
        load_config(unknown)


def test_dump_roundtrip(tmp_path):
    cfg = load_config(SMOKE, ["train.lr=2e-3", "jepa.temperature=0.1"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg


def test_sweeps_split_from_plain_overrides():
    plain, sweeps = split_sweeps(["data.synthetic.paraphrase=0,2,4", "seeds=0,1", "train.lr=1e-3"])
    assert sweeps == {"data.synthetic.paraphrase": [0, 2, 4]}
    assert plain == ["seeds=0,1", "train.lr=1e-3"]
    with pytest.raises(ConfigError, match="unknown config key data.synthetic.nope"):
        split_sweeps(["data.synthetic.nope=1,2"])


def test_plugins_register_arms_and_their_sections():
    cfg = load_config(SMOKE, ["plugins=tests.toy_arm", "toy.width=3", "arms=toy"])
    assert cfg.arms == ["toy"] and cfg.arm["toy"].width == 3
    with pytest.raises(ConfigError, match="cannot import arm module 'nope.nothing'"):
        load_config(SMOKE, ["plugins=nope.nothing"])
