"""paper.yaml at 8 and 16 GPUs without the GPUs: both arms laid out by the loop's own FSDP2 code over a
fake process group (meta device, fake tensors), memory per GPU from torch's tracker, every shipped
accelerate config x preset checked, the documented launch lines checked as written, the GPU check
dry-run on this CPU."""
import functools
import json
import re
import shlex

import pytest
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser

from experiments.cli import build_parser, main
from experiments.describe.memory import GPU_MEMORY_GB, memory_text, stand_in_context
from shared.config import load_config
from shared.profiling.memory import estimate_arm
from shared.training.parallel import micro_layout
from tests.conftest import PAPER, ROOT, SMOKE

ACCELERATE = sorted((ROOT / "experiments" / "accelerate").glob("*.yaml"))
PRESETS = sorted((ROOT / "experiments" / "configs").glob("*.yaml"))
DOC = ROOT / "docs" / "paper_scale.md"


@pytest.fixture(scope="module")
def paper_memory(cache_dir):
    """``describe --memory`` of paper.yaml as shipped, at 8 and 16 GPUs (run once for every test here)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["describe", "--memory", "--json", "-c", str(PAPER), f"cache_dir={cache_dir}"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("gpus", [8, 16])
def test_fake_group_builds_both_paper_arms_at_8_and_16_gpus(paper_memory, gpus):
    for name in ("jepa", "vlm"):
        built = paper_memory["layouts"][name][str(gpus)]["fsdp2"]
        assert built["world"] == gpus and built["root_is_sharded"]
        assert built["units"] == {"LlamaDecoderLayer": 8 if name == "jepa" else 16}  # from the arm, not a list
        # frozen parts stay out of the shards: the JEPA arm's SONAR Y-encoder and its token table
        replicated = built["replicated_params"]
        assert (set(replicated) == {"y_encoder", "predictor"} and replicated["predictor"] == 1) if name == "jepa" \
            else replicated == {}
        assert built["replicated_all_frozen"] and built["frozen_in_units"] == 0
        # the recipe: fp32 master weights gathered as stored, fp32 gradient reduce-scatter
        assert built["param_dtypes"] == ["float32"] and built["gather_dtype"] == ["as stored"]
        assert built["reduce_dtype"] == ["float32"]
        assert built["state_dict_keys_are_trainable_names"] and built["state_dict_sharded"]


def test_describe_memory_gives_ddp_and_fsdp2_per_gpu_at_8_and_16(paper_memory):
    m = paper_memory
    for name, per in m["layouts"].items():
        at8, at16 = per["8"], per["16"]
        assert (at8["micro_batch"], at16["micro_batch"]) == (16, 8)  # 128 over 16 GPUs: 8 each, one pass
        assert at16["fsdp2_gb"] < at8["fsdp2_gb"] < at8["ddp_gb"]  # sharded states shrink with the GPU count
        parts = at8["fsdp2"]["parts_gb"]
        assert parts["opt"] == pytest.approx(8 * m["arms"][name]["with_checkpointing"]["trainable_params"] / 8 / 1e9,
                                             rel=0.02)  # the AdamW moments, an eighth of them per GPU
    vlm = m["layouts"]["vlm"]
    assert m["parallel"] == "ddp" and m["activation_checkpointing"]
    assert vlm["8"]["fits"]["ddp"] and vlm["16"]["fits"]["ddp"]  # the VLM fits 80 GB with paper.yaml as shipped
    assert not m["arms"]["vlm"]["without_checkpointing"]["ddp_gb"] <= GPU_MEMORY_GB  # why it ships checkpointing
    text = memory_text(m)
    assert re.search(r"^vlm +16 +8 x1 +[\d.]+ GB +[\d.]+ GB +yes$", text, re.M)
    # hours count GradCache's first forward (JEPA) and the recompute; the MFU they imply is stated
    jepa = m["time"]["jepa"]["8"]
    assert jepa["flops_per_sample"]["gradcache_forward"] > 0 and jepa["flops_per_sample"]["recompute"] > 0
    assert m["time"]["vlm"]["8"]["flops_per_sample"]["gradcache_forward"] == 0
    assert jepa["mfu"] < m["utilisation"] and "MFU" in text


@functools.lru_cache
def _context(preset, cache_dir: str):
    return stand_in_context(load_config(preset, [f"cache_dir={cache_dir}"]), "meta")


def _accelerate(path):
    a = yaml.safe_load(path.read_text())
    return a, a["num_processes"], not a.get("use_cpu", False)


@pytest.mark.parametrize("accel", ACCELERATE, ids=[p.stem for p in ACCELERATE])
def test_every_accelerate_config_with_every_preset_is_a_valid_layout_that_fits(accel, paper_memory, cache_dir):
    """Each shipped accelerate config x preset: the effective batch splits over its processes into
    micro-batches, and on GPUs the preset as shipped fits 80 GB under its train.parallel (activation
    checkpointing on where the estimate needs it)."""
    a, nproc, gpu = _accelerate(accel)
    assert a["distributed_type"] in ("MULTI_GPU", "MULTI_CPU") and "fsdp_config" not in a  # the suite shards itself
    assert nproc % a["num_machines"] == 0
    for preset in PRESETS:
        cfg = load_config(preset, [f"cache_dir={cache_dir}"])
        micro, _ = micro_layout(cfg.train.effective_batch, cfg.train.micro_batch, nproc)
        if not gpu:
            continue
        if preset == PAPER and str(nproc) in paper_memory["layouts"][cfg.arms[0]]:  # describe's own 8/16-GPU rows
            fits = [paper_memory["layouts"][n][str(nproc)]["fits"][cfg.train.parallel] for n in cfg.arms]
        else:
            ctx, enc = _context(preset, str(cache_dir))
            fits = [estimate_arm(ctx, n, micro, 32, nproc, enc if cfg.encoder.features == "online" else 0,
                                 cfg.train.activation_checkpointing, count_flops=False)["ddp_gb"] <= GPU_MEMORY_GB
                    for n in cfg.arms]
        assert all(fits), f"{preset.name} on {accel.name}: over {GPU_MEMORY_GB} GB per GPU"


def launch_lines() -> list[list[str]]:
    """Every launch line the docs and the README show (the README's run as written too)."""
    text = "\n".join(p.read_text() for p in (DOC, ROOT / "README.md")).replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.startswith("accelerate launch ")]


def test_the_documented_launch_lines_run_as_written(paper_memory, cache_dir):
    """What accelerate does with each line before starting processes (its own checks and the torchrun
    layout it derives), then the suite's command line, config and layout, with no extra override."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    lines = launch_lines()
    assert len(lines) >= 3 and {"experiments/accelerate/gpu_1x8.yaml", "experiments/accelerate/gpu_2x8.yaml"} <= \
        {w for line in lines for w in line}
    for words in lines:
        args = launch_command_parser().parse_args(words[2:])
        args, defaults, _ = _validate_launch_command(args)
        env = prepare_multi_gpu_env(args)
        nodes, nproc = int(defaults.num_machines), int(defaults.num_processes)
        assert args.module and args.training_script == "experiments" and int(args.machine_rank) < nodes
        assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # the suite's train.mixed_precision decides
        command = args.training_script_args
        parsed, extra = build_parser(command[0]).parse_known_args(command)
        cfg = load_config(parsed.config, [*parsed.overrides, *extra, f"cache_dir={cache_dir}"])
        micro, _ = micro_layout(cfg.train.effective_batch, cfg.train.micro_batch, nproc)
        if parsed.config == "experiments/configs/paper.yaml":
            assert all(paper_memory["layouts"][n][str(nproc)]["fits"][cfg.train.parallel] for n in cfg.arms)


def test_the_gpu_check_runs_here_as_a_dry_run(capsys, cache_dir):
    """``describe --gpu`` on this CPU at smoke size: the same code path as on a GPU (build, both layouts,
    the online encoder on random frames, timed steps, MFU); memory is only measured on CUDA."""
    code = main(["describe", "--gpu", "--compile", "off", "--steps", "2", "--caption-tokens", "8", "--json", "-c", str(SMOKE),
                 f"cache_dir={cache_dir}", "arms=[jepa]", "train.mixed_precision=no", "train.effective_batch=16",
                 "train.micro_batch=8"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["ok"] and r["micro_batch"] == 8
    # an fp32 step is measured against the fp32 peak: against the bf16 one, a CPU without native bf16
    # (emulated, ~2 GFLOP/s) reported an MFU of 2,600%
    assert r["peak_dtype"] == "float32" and r["peak_source"] == "measured float32 matmul"
    assert [(x["arm"], x["layout"], x["compile"]) for x in r["rows"]] == [("jepa", "ddp", False), ("jepa", "fsdp2", False)]
    assert all(x["samples_per_s"] > 0 and 0 < x["mfu"] < 1 and x["peak_gb"] is None is x["estimate_gb"] for x in r["rows"])
