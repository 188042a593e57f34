"""The real-weight loaders of the shared parts, on tiny models the tests save themselves."""
import pytest
import torch

from shared.config import ConfigError
from tests.conftest import resolved


def test_encoder_weights_from_a_local_timm_file(smoke_cfg, tmp_path):
    """encoder.weights=<file>: the frozen encoder loads that file (not its seeded random init)."""
    from safetensors.torch import save_file

    from shared.features.encoder import FrozenEncoder

    random = FrozenEncoder.from_config(resolved(smoke_cfg()))
    state = {k: torch.randn_like(v) * 0.02 for k, v in random.model.state_dict().items()}
    save_file(state, str(tmp_path / "pe.safetensors"))
    loaded = FrozenEncoder.from_config(resolved(smoke_cfg(f"encoder.weights={tmp_path / 'pe.safetensors'}")))
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v.float(), state[k].float()), k
    assert loaded.fingerprint() != random.fingerprint()  # other weights, other cached features
    with pytest.raises(FileNotFoundError, match="encoder.weights: no such file"):
        FrozenEncoder.from_config(resolved(smoke_cfg(f"encoder.weights={tmp_path / 'missing.safetensors'}")))


def test_a_random_encoder_keeps_its_first_blocks_and_a_pretrained_one_all(smoke_cfg, tmp_path):
    """encoder.depth: a seeded random encoder with fewer blocks (tokens of the same shape, another
    cache key); refused with weights, whose blocks are the model's own."""
    from shared.features.encoder import FrozenEncoder

    full = FrozenEncoder.from_config(resolved(smoke_cfg()))
    short = FrozenEncoder.from_config(resolved(smoke_cfg("encoder.depth=4")))
    assert len(full.model.blocks) == 12 and len(short.model.blocks) == 4
    assert short.fingerprint() != full.fingerprint()
    frames = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    assert short.encode_frames(frames).shape == full.encode_frames(frames).shape
    with pytest.raises(ConfigError, match="encoder.depth=4: only for a randomly initialised encoder"):
        FrozenEncoder.from_config(resolved(smoke_cfg("encoder.depth=4", f"encoder.weights={tmp_path / 'pe.safetensors'}")))


def test_base_lm_and_tokenizer_from_a_local_llama_folder(smoke_cfg, smoke_prepared, tmp_path):
    """lm.weights / lm.tokenizer = a folder: both arms start from that model and use its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from shared.lm import build_base_lm, load_tokenizer

    tok = smoke_prepared.tokenizer
    tok.save_pretrained(str(tmp_path / "llama"))
    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id))
    model.save_pretrained(str(tmp_path / "llama"))
    cfg = smoke_cfg(f"lm.weights={tmp_path / 'llama'}", f"lm.tokenizer={tmp_path / 'llama'}", "jepa.layers=[1,2]")
    loaded = build_base_lm(cfg, load_tokenizer(cfg))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    import dataclasses

    prep = dataclasses.replace(smoke_prepared, cfg=cfg, tokenizer=load_tokenizer(cfg))
    vlm = prep.seeded_arm("vlm", "cpu")
    assert torch.equal(vlm.lm.model.layers[1].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight)
    jepa = prep.seeded_arm("jepa", "cpu")  # layers [1, 2) of the same pretrained model
    assert torch.equal(jepa.predictor.lm.layers[0].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight)


def test_gguf_weights_name_a_file_or_a_package(tmp_path):
    from shared.lm import resolve_weights

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_weights(str(tmp_path / "m.gguf")) == (str(tmp_path), {"gguf_file": "m.gguf"})
    assert resolve_weights("org/model") == ("org/model", {})
    with pytest.raises(ConfigError, match="package 'no_such_pkg' is not installed"):
        resolve_weights("no_such_pkg:model.gguf")
    with pytest.raises(ConfigError, match="no such GGUF file"):
        resolve_weights(str(tmp_path / "missing.gguf"))
