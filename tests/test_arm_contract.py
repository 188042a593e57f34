"""A broken arm is named, not traced: the contract check before training, capability mistakes, and a
plugin arm's keys typed in every command (overrides, sweeps, grid cells), each a one-line error, exit 2.
The arms live in files outside the repository, imported through ``plugins=`` as a researcher's would."""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from experiments.cli import main
from shared.arm import ArmContractError
from shared.config import config_from_dict, dump_yaml, load_config, split_sweeps, to_dict
from shared.evaluation.audit import arm_controls, audit, audit_markdown
from tests.conftest import ROOT, SMOKE

ARMS = '''
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import nn

from shared.arm import Arm, register_arm
from shared.embedding_arm import EmbeddingArm, EmbeddingArmConfig


@dataclass
class ProbeConfig(EmbeddingArmConfig):
    hidden_size: int = 32
    loss: Literal["cosine", "mse"] = "cosine"


@register_arm("probe", ProbeConfig)
class ProbeArm(EmbeddingArm):
    """An embedding arm that implements only its predictor and its loss."""

    def build_predictor(self, ctx, out_dim):
        return nn.Linear(ctx.visual_dim, out_dim, device=ctx.device)

    def predict(self, visual, queries):
        return self.predictor(visual.mean(dim=1))

    def per_sample(self, batch):
        pred = self.predict(batch.visual, batch.queries)
        return 1 - F.cosine_similarity(pred, self.target_embeddings(batch.captions).to(pred.device))

    def loss(self, batch):
        return self.per_sample(batch).mean()


@register_arm("per_sample_loss", ProbeConfig)
class PerSampleLossArm(ProbeArm):
    def loss(self, batch):  # the mistake: one loss per sample, not their mean
        return self.per_sample(batch)


@register_arm("no_stages", ProbeConfig)
class NoStagesArm(ProbeArm):
    capabilities = ProbeArm.capabilities - {"inference_stages"}


@register_arm("renamed_stages", ProbeConfig)
class RenamedStagesArm(ProbeArm):
    def inference_stages(self, queries, max_new_tokens):
        return [("text" if n == "decoder" else n, fn) for n, fn in super().inference_stages(queries, max_new_tokens)]


@dataclass
class MuteConfig:
    width: int = 4


@register_arm("mute", MuteConfig)
class MuteArm(Arm):
    """Trains and classifies, but never wrote caption."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.proj = nn.Linear(ctx.visual_dim, 1, device=ctx.device)

    def loss(self, batch):
        return self.proj(batch.visual.mean(dim=1)).pow(2).mean()

    def score_candidates(self, visual, queries, candidates):
        return self.proj(visual.mean(dim=1)).expand(-1, len(candidates))
'''

# a one-class module of an arm named NAME whose capabilities are CAPS (and BODY: its methods)
CAPABILITY_ARM = '''
from dataclasses import dataclass

from shared.arm import Arm, register_arm


@dataclass
class C:
    width: int = 4


@register_arm("{name}", C)
class {cls}(Arm):
    capabilities = frozenset({caps})
{body}'''
MISSPELT = CAPABILITY_ARM.format(name="misspelt", cls="MisspeltArm", caps='{"embedd"}', body="")
HALF = CAPABILITY_ARM.format(name="half", cls="HalfArm", caps='{"embed"}', body="""
    def embed(self, visual, queries):
        return visual.mean(dim=1)
""")


@pytest.fixture(scope="session")
def plugins(tmp_path_factory):
    """The arms' files, in a folder outside the repository (one per session: a module imports once)."""
    folder = tmp_path_factory.mktemp("researcher")
    for name, code in {"probe_arms": ARMS, "misspelt_arm": MISSPELT, "half_arm": HALF}.items():
        (folder / f"{name}.py").write_text(code)
    return {name: f"plugins=[{folder / name}.py]" for name in ("probe_arms", "misspelt_arm", "half_arm")}


def one_error(capsys, args) -> str:
    """Run the command line; it must exit 2 with one ``error:`` line and no traceback. Returns that line."""
    return _one_line(main(args), capsys.readouterr().err)


def one_error_in_a_process(args) -> str:
    """The same, as ``python -m experiments`` in a process of its own (a command that builds arms:
    libraries' log handlers bound to an earlier test's captured stderr would not be this command's)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    return _one_line(done.returncode, done.stderr)


def _one_line(code: int, err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


# ---- the contract, checked before training -------------------------------------------------
def test_a_loss_of_the_wrong_shape_is_named_before_any_training(plugins, cache_dir, tmp_path):
    out = tmp_path / "run"
    line = one_error_in_a_process(["train", "-c", str(SMOKE), "--arm", "per_sample_loss", "-o", str(out),
                              plugins["probe_arms"], f"cache_dir={cache_dir}"])
    assert line == "error: arm 'per_sample_loss': loss returned shape [4], expected a scalar"
    assert not list(out.rglob("*.safetensors")) and not (out / "train_log.jsonl").exists()


def test_the_main_job_checks_every_arm_before_training_the_first(plugins, cache_dir, tmp_path):
    out = tmp_path / "main"
    line = one_error_in_a_process(["sample-efficiency", "-c", str(SMOKE), "-o", str(out), plugins["probe_arms"],
                              "arms=jepa,per_sample_loss", f"cache_dir={cache_dir}"])
    assert line == "error: arm 'per_sample_loss': loss returned shape [4], expected a scalar"
    assert not (out / "runs").exists()  # not even the JEPA arm, listed first, trained


def test_a_missing_method_is_named(plugins, cache_dir, tmp_path):
    line = one_error_in_a_process(["sample-efficiency", "-c", str(SMOKE), "-o", str(tmp_path / "main"),
                                   plugins["probe_arms"], "arms=mute", f"cache_dir={cache_dir}"])
    assert line == ("error: arm 'mute': caption not implemented by MuteArm "
                    "(every arm implements loss, caption, score_candidates)")


def test_train_alone_asks_only_for_the_training_side(smoke_prepared, plugins, cache_dir):
    """``train`` never captions or classifies: an arm without those methods trains (the evaluating commands
    still refuse it, above)."""
    import dataclasses

    from shared.contract import check_arms

    cfg = load_config(SMOKE, [plugins["probe_arms"], f"cache_dir={cache_dir}"])
    prepared = dataclasses.replace(smoke_prepared, cfg=cfg)
    check_arms(prepared, ["mute"], evaluation=False)
    with pytest.raises(ArmContractError, match="caption not implemented by MuteArm"):
        check_arms(prepared, ["mute"])


def test_latency_checks_the_stages_it_times(smoke_prepared, plugins, cache_dir, tmp_path):
    import dataclasses

    from shared.contract import check_arms

    cfg = load_config(SMOKE, [plugins["probe_arms"], f"cache_dir={cache_dir}"])
    prepared = dataclasses.replace(smoke_prepared, cfg=cfg)
    check_arms(prepared, ["jepa", "vlm", "probe"], latency=True)  # each stage runs on the previous one's output
    with pytest.raises(ArmContractError, match=r"^arm 'renamed_stages': inference_stages has no stage named decoder "
                                               r"\(it has query_embedding, encoder_predictor, text; latency reports "
                                               r"query_embedding, encoder_predictor, decoder\)$"):
        check_arms(prepared, ["renamed_stages"], latency=True)
    check_arms(prepared, ["no_stages"])  # the other commands never time stages
    line = one_error_in_a_process(["latency", "-c", str(SMOKE), "-o", str(tmp_path / "lat"), plugins["probe_arms"],
                                   "arms=jepa,no_stages", f"cache_dir={cache_dir}"])
    assert line.startswith("error: arm 'no_stages': NoStagesArm does not declare the capability inference_stages "
                           "(latency times")
    assert not (tmp_path / "lat" / "latency.json").exists()


def test_sound_arms_pass_the_check_and_leave_the_caches_alone(smoke_prepared, plugins, cache_dir):
    import dataclasses

    from shared.contract import check_arms

    cfg = load_config(SMOKE, [plugins["probe_arms"], f"cache_dir={cache_dir}"])  # registers probe
    before = sorted(p for p in cache_dir.rglob("*") if p.is_file())
    assert check_arms(dataclasses.replace(smoke_prepared, cfg=cfg), ["jepa", "vlm", "probe"]) < 60
    assert sorted(p for p in cache_dir.rglob("*") if p.is_file()) == before  # text embeddings, decoders: scratch


def test_an_exception_inside_an_arm_is_one_line_and_the_suites_own_errors_pass():
    from shared.config import ConfigError
    from shared.contract import _call

    with pytest.raises(ArmContractError, match=r"^arm 'x': caption raised ZeroDivisionError: division by zero$"):
        _call("x", "caption", lambda: 1 / 0)
    with pytest.raises(ConfigError, match="x.shared_dim"):  # already one line with its exit code: as it is
        _call("x", "building the arm", lambda: (_ for _ in ()).throw(ConfigError("x.shared_dim: too small")))


@pytest.mark.parametrize("module, message", [
    ("misspelt_arm", "error: arm class MisspeltArm (misspelt_arm): capabilities: unknown 'embedd' (known: "),
    ("half_arm", "error: arm class HalfArm (half_arm) declares capability 'embed' but does not implement embed_texts"),
])
@pytest.mark.parametrize("command", ["describe", "sample-efficiency"])
def test_capability_mistakes_are_one_line(plugins, module, message, command, tmp_path, capsys):
    args = [command, "-c", str(SMOKE), plugins[module]] + (["-o", str(tmp_path / "out")] if command != "describe" else [])
    assert one_error(capsys, args).startswith(message)


# ---- a plugin arm's keys in every command ----------------------------------------------------
COMMANDS = {  # every command that types overrides before its work; the sweep and grid forms of the main job
    "describe": ["describe"],
    "arms": ["arms"],
    "train": ["train", "--arm", "probe", "-o", "{out}"],
    "sample-efficiency": ["sample-efficiency", "-o", "{out}"],
    "sample-efficiency sweep": ["sample-efficiency", "-o", "{out}", "train.lr=1e-3,3e-3"],
    "sample-efficiency --cell": ["sample-efficiency", "-o", "{out}", "--cell", "train.lr=1e-3"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("override, message", [
    ("probe.hidden_sz=8", "unknown config key probe.hidden_sz (probe keys: hidden_size, loss, "),
    ("probe.hidden_sz=8,16", "unknown config key probe.hidden_sz (probe keys: hidden_size, loss, "),
    ("probe.loss=foo", "probe.loss: must be one of cosine, mse; got 'foo"),
    ("probe.loss=foo,mse", "probe.loss: must be one of cosine, mse; got 'foo"),
])
def test_a_bad_plugin_key_or_value_names_the_valid_ones(plugins, command, override, message, tmp_path, capsys):
    args = [a.format(out=tmp_path / "out") for a in COMMANDS[command]]
    if command.endswith("--cell"):  # the key in a grid cell of its own
        args += [plugins["probe_arms"], "--cell", override]
    else:
        args += [plugins["probe_arms"], override]
    assert message in one_error(capsys, [args[0], "-c", str(SMOKE), *args[1:]])
    assert not (tmp_path / "out" / "runs").exists()


def test_plugin_keys_sweep_and_type_in_the_main_job(plugins):
    overrides = [plugins["probe_arms"], "arms=jepa,probe", "probe.hidden_size=16,32", "probe.loss=mse",
                 "variants={probe_wide: {arm: probe}}", "probe_wide.hidden_size=64,128"]
    plain, sweeps = split_sweeps(overrides, SMOKE)
    assert sweeps == {"probe.hidden_size": [16, 32], "probe_wide.hidden_size": [64, 128]}
    assert "probe.loss=mse" in plain
    cfg = load_config(SMOKE, [*plain, "probe.hidden_size=16", "probe_wide.hidden_size=64"])
    assert (cfg.arm["probe"].hidden_size, cfg.arm["probe"].loss, cfg.arm["probe_wide"].hidden_size) == (16, "mse", 64)


@pytest.mark.slow
def test_the_main_job_sweeps_a_plugin_arms_key(plugins, cache_dir, tmp_path):
    out = tmp_path / "grid"
    assert main(["sample-efficiency", "-c", str(SMOKE), "-o", str(out), plugins["probe_arms"], "arms=probe",
                 "probe.hidden_size=16,32", "train.milestones=[64]", f"cache_dir={cache_dir}"]) == 0
    for width in (16, 32):
        (row,) = [json.loads(line) for line in (out / f"hidden_size={width}" / "metrics.jsonl").read_text().splitlines()]
        assert row["arm"] == "probe" and row["decoder_samples"] == 64
    assert "| 16 |" in (out / "sweep.md").read_text()


def test_describe_and_arms_take_a_plugin_arms_override(plugins, capsys):
    assert main(["arms", "-c", str(SMOKE), plugins["probe_arms"], "probe.hidden_size=8", "--json"]) == 0
    arms = json.loads(capsys.readouterr().out)["arms"]
    assert arms["probe"]["text_side"].startswith("the jepa section's") and arms["vlm"]["text_side"] is None
    # describe gives the trainable ratios as the report does: the reference over every other arm
    assert main(["describe", "-c", str(SMOKE), plugins["probe_arms"], "arms=jepa,vlm,probe",
                 "report.reference=vlm"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("trainable ratio")]
    assert re.fullmatch(r"trainable ratio vlm/jepa: [\d.]+, vlm/probe: [\d.]+", line)


# ---- the text side, shared -----------------------------------------------------------------
def test_an_embedding_arm_takes_the_text_side_from_jepa_unless_it_sets_it(plugins):
    from shared.text_side.config import YDecoderConfig

    cfg = load_config(SMOKE, [plugins["probe_arms"]])
    probe, jepa = cfg.arm["probe"], cfg.arm["jepa"]
    assert probe.y_decoder == jepa.y_decoder and probe.y_encoder == jepa.y_encoder
    assert probe.y_decoder.hidden_size == 64 != YDecoderConfig().hidden_size  # smoke's decoder, not the default's
    assert config_from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg  # a run's config.yaml reloads as it was

    own = load_config(SMOKE, [plugins["probe_arms"], "probe.y_decoder.num_layers=2",
                              "variants={probe_wide: {arm: probe, probe.y_decoder.hidden_size: 128}}"])
    assert (own.arm["probe"].y_decoder.num_layers, own.arm["probe"].y_decoder.hidden_size) == (2, 64)
    assert (own.arm["probe_wide"].y_decoder.hidden_size, own.arm["probe_wide"].y_decoder.num_layers) == (128, 2)
    apart = load_config(SMOKE, [plugins["probe_arms"], "probe.text_side_from=null"])
    assert apart.arm["probe"].y_decoder == YDecoderConfig()
    with pytest.raises(Exception, match="probe.text_side_from: 'vlm' is not an embedding arm's section"):
        load_config(SMOKE, [plugins["probe_arms"], "probe.text_side_from=vlm"])
    with pytest.raises(Exception, match="probe.text_side_from: a loop, probe -> probe"):
        load_config(SMOKE, [plugins["probe_arms"], "probe.text_side_from=probe"])


def test_the_audit_names_a_text_side_difference_as_a_control(plugins, tmp_path):
    from tests.test_audit import fake_run

    def run(arm, *overrides):
        return fake_run(tmp_path / f"{arm}{len(list(tmp_path.iterdir()))}", arm, plugins["probe_arms"], *overrides)

    alike = audit([run("jepa"), run("vlm"), run("probe")])
    assert alike["ok"] and alike["text_sides"] == {"reference": "jepa", "arms": ["jepa", "probe"], "differences": {}}
    assert "Identical in jepa, probe" in audit_markdown(alike)
    assert any(c.startswith("text side: the target space and Y-decoder of `jepa`") for c in alike["controls"]["probe"])

    unlike = audit([run("jepa"), run("probe", "probe.y_decoder.num_layers=2")])
    assert unlike["ok"]  # allowed: the arm's own section; named, not failed
    assert unlike["text_sides"]["differences"] == {"probe": {"y_decoder.num_layers": {"reference": 1, "arm": 2}}}
    assert "| probe | `y_decoder.num_layers` | `1` | `2` |" in audit_markdown(unlike)
    cfg = to_dict(load_config(SMOKE, [plugins["probe_arms"], "probe.y_decoder.num_layers=2"]))
    assert "text side differs from `jepa`'s: `y_decoder.num_layers`=2 (jepa: 1)" in arm_controls("probe", cfg)[-1]
