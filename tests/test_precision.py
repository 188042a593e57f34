"""Precision is decided once, from the hardware: the resolution rules, with the probes faked."""
import dataclasses
import json
import re

import pytest
import torch

from shared import precision
from shared.config import ConfigError
from shared.precision import Hardware, decide
from tests.conftest import ROOT

CPU_AVX2 = Hardware(device="cpu", cpu="fake AVX2 EPYC", avx512_bf16=False, amx=False, onednn_isa_cap=None)
CPU_BF16 = dataclasses.replace(CPU_AVX2, cpu="fake Zen 4", avx512_bf16=True)
CPU_AMX = dataclasses.replace(CPU_AVX2, cpu="fake Sapphire Rapids", amx=True)
GPU_BF16 = dataclasses.replace(CPU_AVX2, device="cuda", cuda_name="fake H100", cuda_bf16=True)
GPU_OLD = dataclasses.replace(CPU_AVX2, device="cuda", cuda_name="fake V100", cuda_bf16=False)


@pytest.mark.parametrize("hw, expected", [
    (GPU_BF16, "bf16"), (GPU_OLD, "no"), (CPU_BF16, "bf16"), (CPU_AMX, "bf16"), (CPU_AVX2, "no"),
    (dataclasses.replace(CPU_BF16, onednn_isa_cap="AVX2"), "no"),  # oneDNN capped below its bf16 kernels
    (dataclasses.replace(CPU_BF16, onednn_isa_cap="avx512_core_bf16"), "bf16"),
])
def test_auto_follows_the_hardware(hw, expected):
    resolved, why = decide("auto", hw)
    assert resolved == expected and why


@pytest.mark.parametrize("hw", [CPU_AVX2, CPU_BF16, GPU_BF16, GPU_OLD])
@pytest.mark.parametrize("explicit", ["no", "bf16"])
def test_explicit_values_win(hw, explicit):
    assert decide(explicit, hw) == (explicit, "set explicitly")


def test_fp16_needs_cuda():
    assert decide("fp16", GPU_BF16)[0] == "fp16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        decide("fp16", CPU_BF16)


@pytest.fixture
def fake_cpu(monkeypatch):
    """Make this process look like a CPU of the given kind to torch's capability probes."""
    def make(avx512_bf16: bool, amx: bool = False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    return make


def test_probe_reads_torch_capabilities(fake_cpu, smoke_cfg):
    fake_cpu(avx512_bf16=False)
    assert precision.resolve(smoke_cfg()).resolved == "no"
    cfg = precision.resolve(smoke_cfg()).apply(smoke_cfg())  # encoder.dtype auto follows
    assert cfg.train.mixed_precision == "no" and cfg.encoder.dtype == "float32"
    fake_cpu(avx512_bf16=True)
    cfg = precision.resolve(smoke_cfg()).apply(smoke_cfg())
    assert cfg.train.mixed_precision == "bf16" and cfg.encoder.dtype == "bfloat16"
    explicit = smoke_cfg("encoder.dtype=float32")
    assert precision.resolve(explicit).apply(explicit).encoder.dtype == "float32"


def test_a_decision_serves_other_configs_without_probing_again(fake_cpu, smoke_cfg, monkeypatch):
    fake_cpu(avx512_bf16=True)
    p = precision.resolve(smoke_cfg())
    monkeypatch.setattr(precision, "probe", lambda *a: pytest.fail("probed again"))
    assert p.for_config(smoke_cfg()) is p and p.for_config(p.apply(smoke_cfg())) is p  # as asked, or resolved
    fp32 = smoke_cfg("train.mixed_precision=no")
    assert (p.for_config(fp32).resolved, p.for_config(fp32).reason) == ("no", "set explicitly")
    assert p.apply(fp32).encoder.dtype == "float32"  # encoder.dtype auto follows the config's own precision


def test_autocast_takes_a_resolved_precision_only():
    with pytest.raises(ValueError, match="resolved precision"):
        precision.autocast("auto", "cpu")
    with precision.autocast("bf16", "cpu"):
        assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.bfloat16


def test_fp32_autocast_holds_inside_a_bf16_region():
    a = torch.randn(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with precision.autocast("no", "cpu"):
            assert (a @ a).dtype == torch.float32


def test_resume_under_another_resolved_precision_is_refused(fake_cpu, smoke_prepared, tmp_path):
    from shared.config import load_config
    from shared.training.loop import train_arm
    from tests.conftest import SMOKE

    def prep(*overrides):  # each call stands for a command: its runtime resolved on the (faked) hardware
        cfg = load_config(SMOKE, [f"cache_dir={smoke_prepared.cfg.cache_dir}", "plugins=[tests.toy_arm]", *overrides])
        return dataclasses.replace(smoke_prepared, cfg=cfg, runtime=precision.resolve_runtime(cfg))

    fake_cpu(avx512_bf16=False)
    run = tmp_path / "run"
    train_arm(prep(), "toy", run, stop_at_samples=64, progress=False)  # auto -> no on this "AVX2" CPU
    assert "mixed_precision: 'no'" in (run / "config.yaml").read_text()
    written = json.loads((run / "precision.json").read_text())
    assert written["requested"] == "auto" and written["resolved"] == "no" and "AVX512-BF16 no" in written["reason"]
    fake_cpu(avx512_bf16=True)  # the same command on a CPU with native bf16: auto -> bf16
    with pytest.raises(ConfigError, match=r"trained under train.mixed_precision=no but would resume under bf16"):
        train_arm(prep(), "toy", run, progress=False)
    assert train_arm(prep("train.mixed_precision=no"), "toy", run, progress=False).completed


def test_describe_hardware_measures_and_explains(capsys):
    from experiments.cli import main

    assert main(["describe", "--hardware", "--json"]) == 0
    h = json.loads(capsys.readouterr().out)
    assert h["matmul_gflops"]["float32"] > 0 and h["matmul_gflops"]["bfloat16"] > 0
    assert h["decision"]["requested"] == "auto"
    assert h["decision"]["resolved"] == precision.decide("auto", precision.probe())[0]
    assert main(["describe", "--hardware"]) == 0
    text = capsys.readouterr().out
    assert "AVX512-BF16" in text and "GFLOP/s" in text and "precision" in text


def test_describe_hardware_times_each_arm_in_each_precision(capsys, cache_dir):
    from experiments.cli import main
    from tests.conftest import SMOKE

    assert main(["describe", "--hardware", "--json", "-c", str(SMOKE), f"cache_dir={cache_dir}"]) == 0
    steps = json.loads(capsys.readouterr().out)["train_step_ms"]
    assert set(steps) == {"jepa", "vlm"}
    assert all(set(ms) == {"no", "bf16"} and min(ms.values()) > 0 for ms in steps.values())


def test_no_module_but_precision_names_an_autocast_dtype():
    """One place decides precision: any other autocast with a dtype would bypass the hardware check."""
    pattern = re.compile(r"autocast\([^)]*(bfloat16|float16)")
    offenders = [str(p.relative_to(ROOT)) for d in ("shared", "jepa_arm", "vlm_arm", "experiments", "plots")
                 for p in (ROOT / d).rglob("*.py") if p.name != "precision.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_only_the_precision_module_reads_the_training_precision():
    """``train.mixed_precision`` and what ``auto`` means are read in shared/precision.py alone: every
    other module receives the runtime a command resolved. Found in the syntax tree: attribute reads
    (``cfg.train.mixed_precision``), key reads (``["mixed_precision"]``) and comparisons with "auto";
    Accelerate's attribute of that name on an accelerator is Accelerate's, not the config's."""
    import ast

    readers = set()
    for d in ("shared", "jepa_arm", "vlm_arm", "experiments", "plots"):
        for p in (ROOT / d).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                attribute = isinstance(node, ast.Attribute) and node.attr == "mixed_precision" and not (
                    isinstance(node.value, ast.Name) and node.value.id == "accelerator")
                key = isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                    and node.slice.value == "mixed_precision"
                auto = isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value == "auto"
                                                            for c in [node.left, *node.comparators])
                if attribute or key or auto:
                    readers.add(str(p.relative_to(ROOT)))
    assert readers == {"shared/precision.py"}


def test_the_hardware_is_probed_once_per_command(monkeypatch, tmp_path, cache_dir):
    """A command resolves its runtime once; the loop, the evaluators, the Y-decoder's fits and the
    autocasts receive it (train: resolution, encoding, training to two milestones)."""
    from experiments.cli import main
    from tests.conftest import SMOKE

    calls = []
    real = precision.probe
    monkeypatch.setattr(precision, "probe", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main(["train", "-c", str(SMOKE), "--arm", "jepa", "-o", str(tmp_path / "run"), f"cache_dir={cache_dir}",
                 "train.milestones=[32,64]"]) == 0
    assert len(calls) == 1
