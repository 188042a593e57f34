"""The text pretraining stage: both arms' text knowledge from the training captions alone."""
import pytest
import torch

from shared import text_pretraining as tp
from shared.config import load_config
from shared.data.sources import build_dataset
from shared.evaluation.audit import audit, audit_markdown
from shared.lm import build_base_lm, load_tokenizer
from shared.pipeline import corpus_key, tokenizer_corpus
from shared.precision import resolve_runtime
from shared.profiling.flops import train_flops_per_sample
from shared.training.parallel import micro_layout
from shared.training.step import runs_gradcache
from tests.conftest import SMOKE
from tests.test_audit import fake_run

TINY = ["lm.weights=captions", "jepa.y_encoder.weights=captions", "text_pretraining.lm.steps=3",
        "text_pretraining.y_encoder.steps=3", "text_pretraining.y_encoder.batch_size=16"]


def _setup(tmp_path, *overrides):
    cfg = load_config(SMOKE, [f"cache_dir={tmp_path}", *TINY, *overrides])
    runtime = resolve_runtime(cfg)
    cfg = runtime.precision.apply(cfg)
    dataset = build_dataset(cfg)
    tokenizer = load_tokenizer(cfg, lambda: tokenizer_corpus(cfg, dataset), corpus_key(cfg, dataset))
    return cfg, runtime, dataset, tokenizer


def test_text_pretraining_trains_on_the_training_split_alone(tmp_path, monkeypatch):
    cfg, runtime, dataset, tokenizer = _setup(tmp_path)
    train = dataset.split("train")
    read = {"val": 0, "test": 0}
    for split in read:  # count every clip the stage reads from the evaluation splits
        source = dataset.split(split)
        real = source.clip

        def counting(i, _real=real, _split=split):
            read[_split] += 1
            return _real(i)

        monkeypatch.setattr(source, "clip", counting)
    seen = {}
    for role, name in (("lm", "pretrain_lm"), ("y_encoder", "pretrain_y_encoder")):
        real_trainer = getattr(tp, name)

        def spy(cfg_, groups, val, tok, rt, folder, _role=role, _real=real_trainer):
            seen[_role] = list(groups)
            before = dict(read)
            record = _real(cfg_, groups, val, tok, rt, folder)
            assert read["test"] == before["test"] == 0  # the trainer itself never reads test clips
            return record

        monkeypatch.setattr(tp, name, spy)
    text = tp.prepare_text_knowledge(cfg, dataset, tokenizer, runtime)
    expected = [train.clip(i).captions for i in range(len(train))]
    assert seen["lm"] == expected and seen["y_encoder"] == expected  # every training clip's captions, nothing else
    assert read["test"] == 0  # never the test split; val only for the record's measurements
    assert read["val"] == min(tp.VAL_GROUPS, len(dataset.split("val"))) * 2  # once per role, for the record
    assert text.records["lm"]["tokens"] > 0 and text.records["y_encoder"]["train_flops"] > 0
    assert text.records["lm"]["train_flops"] > 0 and text.records["y_encoder"]["train_flops"] > 0


def test_text_models_are_cached_and_load_through_the_real_weight_paths(tmp_path, monkeypatch):
    cfg, runtime, dataset, tokenizer = _setup(tmp_path)
    first = tp.prepare_text_knowledge(cfg, dataset, tokenizer, runtime)

    def no_training(*a, **k):
        raise AssertionError("trained again although cached")

    monkeypatch.setattr(tp, "pretrain_lm", no_training)
    monkeypatch.setattr(tp, "pretrain_y_encoder", no_training)
    again = tp.prepare_text_knowledge(cfg, dataset, tokenizer, runtime)
    assert (again.lm, again.y_encoder) == (first.lm, first.y_encoder)
    lm = build_base_lm(cfg, tokenizer, text=again)  # from_pretrained of the cached folder
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(again.lm))
    for (name, a), (_, b) in zip(lm.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    fresh = build_base_lm(load_config(SMOKE, [f"cache_dir={tmp_path}", "lm.weights=null"]), tokenizer)  # lm.weights=null: random init
    assert not torch.equal(next(fresh.parameters()), next(lm.parameters()))
    with pytest.raises(Exception, match="captions"):
        build_base_lm(cfg, tokenizer)  # asked for, not given: a clear error, not a silent random init


def test_another_recipe_is_another_model(tmp_path):
    cfg, runtime, dataset, tokenizer = _setup(tmp_path)
    a = tp.prepare_text_knowledge(cfg, dataset, tokenizer, runtime)
    cfg2, *_ = _setup(tmp_path, "text_pretraining.lm.steps=4")
    b = tp.prepare_text_knowledge(cfg2, dataset, tokenizer, runtime)
    assert a.lm != b.lm and a.y_encoder == b.y_encoder  # each model keyed by its own recipe


def test_nothing_is_trained_when_no_weights_ask_for_it(tmp_path):
    cfg, runtime, dataset, tokenizer = _setup(tmp_path, "lm.weights=null", "jepa.y_encoder.weights=random")
    assert tp.prepare_text_knowledge(cfg, dataset, tokenizer, runtime) is None


def test_the_audit_names_the_text_knowledge_each_arm_starts_from(tmp_path):
    a = fake_run(tmp_path / "jepa", "jepa", *TINY)
    b = fake_run(tmp_path / "vlm", "vlm", *TINY)
    result = audit([a, b])
    assert result["ok"]
    assert result["text_knowledge"]["jepa"]["target space"].startswith("pretrained on the training captions")
    assert result["text_knowledge"]["vlm"] == {"base LM": "pretrained on the training captions alone (text_pretraining)"}
    assert "## Text knowledge each arm starts from" in audit_markdown(result)
    c = fake_run(tmp_path / "vlm2", "vlm", *TINY[2:], "lm.weights=null")  # the control without text knowledge: a shared key differs
    assert [d["key"] for d in audit([a, c])["differences"]] == ["lm.weights"]


@pytest.mark.parametrize("gpus", [8, 16])
def test_gradcache_flops_use_the_loops_predicate_at_paper_scale(gpus):
    t = load_config("experiments/configs/paper.yaml").train
    micro, accum = micro_layout(t.effective_batch, t.micro_batch, gpus)
    assert runs_gradcache(True, accum, gpus)  # InfoNCE over 128 samples spread over the GPUs
    assert not t.effective_batch > t.micro_batch * gpus  # the former FLOP predicate missed it here


def test_the_flop_count_adds_the_second_forward_where_the_loop_runs_gradcache(smoke_prepared):
    import dataclasses

    cfg = smoke_prepared.cfg
    one_pass = dataclasses.replace(smoke_prepared, cfg=dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, effective_batch=32, micro_batch=32)))
    alone = train_flops_per_sample(one_pass, "jepa", processes=1)  # one pass on one process: no GradCache
    two = train_flops_per_sample(one_pass, "jepa", processes=2)  # 16 each on 2 processes: GradCache
    assert not alone["gradcache"] and two["gradcache"]
    assert two["train_flops_per_sample"] > alone["train_flops_per_sample"]
    assert alone["encoder_flops_per_sample"] > 0 and alone["decoder_flops_per_caption"] > 0


def test_text_pretraining_without_a_val_split_trains_and_says_so(tmp_path, monkeypatch):
    """A manifest with no val clips still trains; the record's measurements are absent, not zero."""
    from experiments.report_compute import text_pretraining_lines

    cfg, runtime, dataset, tokenizer = _setup(tmp_path)
    monkeypatch.setattr(tp, "VAL_GROUPS", 0)  # what an empty val split gives the stage
    text = tp.prepare_text_knowledge(cfg, dataset, tokenizer, runtime)
    lm, enc = text.records["lm"], text.records["y_encoder"]
    assert lm["val_loss_per_token"] is None and enc["paraphrase_nn_same_meaning"] is None
    section = "\n".join(text_pretraining_lines({"text_pretraining": text.records}))
    assert section.count("n/a (no val split)") == 4


def test_the_caption_pretrained_y_encoder_loads_without_a_load_report(smoke_prepared, capfd, caplog):
    """Its folder has no BERT pooler (never used): transformers' "pooler MISSING" report stays out of the
    terminal for this folder, and the verbosity is what it was afterwards."""
    import transformers

    assert smoke_prepared.cfg.arm["jepa"].y_encoder.weights == "captions"
    level = transformers.logging.get_verbosity()
    smoke_prepared.seeded_arm("jepa")
    seen = capfd.readouterr().err + caplog.text
    assert "LOAD REPORT" not in seen and "MISSING" not in seen
    assert transformers.logging.get_verbosity() == level
