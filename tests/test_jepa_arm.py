import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from jepa_arm.losses import embedding_loss, info_nce, same_text_mask
from jepa_arm.predictor import Predictor
from shared.lm import build_base_lm


@pytest.fixture
def tok(smoke_prepared):
    return smoke_prepared.tokenizer


def predictor(smoke_prepared, causal: bool, cfg=None) -> Predictor:
    torch.manual_seed(0)
    base = build_base_lm(cfg or smoke_prepared.cfg, smoke_prepared.tokenizer, text=smoke_prepared.text)
    return Predictor(base, (0, 2), causal, visual_dim=8, out_dim=5).eval()


def hidden(p: Predictor, visual, ids, mask):
    x = torch.cat([p.visual_proj(visual), p.embed_query(ids)], dim=1)
    full = torch.cat([torch.ones(visual.shape[:2], dtype=torch.long), mask], dim=1)
    return p.lm(inputs_embeds=x, attention_mask=full).last_hidden_state


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padded-batch"])
def test_predictor_is_bidirectional_unless_causal(smoke_prepared, smoke_cfg, tok, padded, attn):
    cfg = smoke_cfg(f"lm.attn_implementation={attn}")
    visual = torch.randn(2, 3, 8)
    ids = tok(["describe the video .", "a red square"], add_special_tokens=False, padding=True, return_tensors="pt")
    mask = ids["attention_mask"] if padded else torch.ones_like(ids["attention_mask"])
    ids = ids["input_ids"]
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 7) % len(tok)  # the last query token of the first clip
    with torch.no_grad():
        bi = predictor(smoke_prepared, causal=False, cfg=cfg)
        assert not torch.allclose(hidden(bi, visual, ids, mask)[0, 0], hidden(bi, visual, changed, mask)[0, 0])
        assert not torch.allclose(bi(visual, bi.embed_query(ids), mask)[0], bi(visual, bi.embed_query(changed), mask)[0])
        causal = predictor(smoke_prepared, causal=True, cfg=cfg)
        assert torch.allclose(hidden(causal, visual, ids, mask)[0, 0], hidden(causal, visual, changed, mask)[0, 0])


def test_mean_pool_ignores_padding(smoke_prepared, tok):
    p = predictor(smoke_prepared, causal=False)
    visual = torch.randn(2, 3, 8)
    batch = tok(["describe the video in detail please", "describe"], add_special_tokens=False, padding=True,
                return_tensors="pt")
    alone = tok(["describe"], add_special_tokens=False, return_tensors="pt")
    assert batch["attention_mask"][1].sum() < batch["attention_mask"].shape[1]  # really padded
    with torch.no_grad():
        both = p(visual, p.embed_query(batch["input_ids"]), batch["attention_mask"])
        single = p(visual[1:], p.embed_query(alone["input_ids"]), alone["attention_mask"])
    assert torch.allclose(both[1], single[0], atol=1e-5)


def test_info_nce_is_symmetric_and_prefers_matched_pairs():
    torch.manual_seed(0)
    t = F.normalize(torch.randn(16, 12), dim=-1)
    p = t + 0.1 * torch.randn(16, 12)
    assert torch.allclose(info_nce(p, t, 0.1), info_nce(t, p, 0.1))
    assert info_nce(p, t, 0.1) < info_nce(p, t[torch.randperm(16)], 0.1)


def test_duplicate_targets_are_not_negatives():
    t = F.normalize(torch.randn(4, 6), dim=-1)
    t[1] = t[0]
    p = t.clone()
    same = same_text_mask(["a", "a", "b", "c"])
    assert same.sum() == 6
    assert info_nce(p, t, 0.05, same) < info_nce(p, t, 0.05)


@pytest.mark.parametrize("kind", ["infonce", "cosine", "l1", "l2"])
def test_each_loss_trains_a_toy_regressor(kind):
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    targets = F.normalize(x @ torch.randn(10, 6), dim=-1)
    model = torch.nn.Linear(10, 6)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(150):
        loss = embedding_loss(kind, model(x), targets, temperature=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    sims = F.normalize(model(x), dim=-1) @ targets.T
    assert (sims.argmax(1) == torch.arange(64)).float().mean() > 0.9


def test_y_decoder_reconstructs_training_captions(smoke_prepared):
    from jepa_arm.config import YDecoderConfig
    from jepa_arm.y_decoder import TrainedDecoder, fit

    captions = sorted(set(smoke_prepared.dataset.split("train").captions(8)))[:12]
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(len(captions), 16), dim=-1)  # any distinct embeddings will do
    cfg = YDecoderConfig(hidden_size=64, num_layers=2, num_heads=2, steps=250, batch_size=16, lr=3e-3, noise=0.02)
    dec = TrainedDecoder(16, smoke_prepared.tokenizer, cfg)
    losses = fit(dec, emb, captions, smoke_prepared.runtime.precision.resolved, progress=False)
    assert losses[-1] < 0.1 * losses[0]
    out = dec.generate(emb, max_new_tokens=24)
    assert sum(o == c for o, c in zip(out, captions)) >= len(captions) - 1, list(zip(out, captions))


def test_minilm_y_encoder_is_real_and_frozen():
    from jepa_arm.config import YEncoderConfig
    from jepa_arm.y_encoder import YEncoder

    enc = YEncoder(YEncoderConfig())
    e = enc(["a red square moves left", "the crimson box slides to the left", "a green circle grows"])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # a paraphrase is nearer than another meaning
    assert not any(p.requires_grad for p in enc.parameters())


def _tiny_tokenizer_dir(tok, path):
    t = copy.deepcopy(tok)  # never the session's shared tokenizer: a token added there changes every later test
    t.add_special_tokens({"additional_special_tokens": ["eng_Latn"]})
    t.save_pretrained(str(path))
    return t


def test_sonar_encoder_and_decoder_load_from_tiny_random_configs(smoke_prepared, tmp_path):
    from transformers import M2M100Config, M2M100ForConditionalGeneration
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100Encoder

    from jepa_arm.config import YEncoderConfig
    from jepa_arm.y_decoder import SonarDecoder
    from jepa_arm.y_encoder import YEncoder, masked_mean

    tok = _tiny_tokenizer_dir(smoke_prepared.tokenizer, tmp_path / "enc")
    cfg = M2M100Config(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       decoder_start_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    M2M100Encoder(cfg).save_pretrained(str(tmp_path / "enc"))
    enc = YEncoder(YEncoderConfig(kind="sonar", weights=str(tmp_path / "enc")))
    texts = ["a red square moves left", "a cross"]
    e = enc(texts)
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    ids = tok(texts, padding=True, return_tensors="pt")
    ref = masked_mean(enc.model(**ids).last_hidden_state, ids["attention_mask"])
    assert torch.allclose(e, F.normalize(ref, dim=-1), atol=1e-5)

    # the converted SONAR decoders ship no tokenizer: it comes from the encoder's folder
    M2M100ForConditionalGeneration(cfg).save_pretrained(str(tmp_path / "dec"))
    with pytest.raises(ValueError, match="jepa.y_decoder.tokenizer"):
        SonarDecoder(str(tmp_path / "dec"))
    dec = SonarDecoder(str(tmp_path / "dec"), tokenizer_source=str(tmp_path / "enc"))
    out = dec.generate(torch.randn(2, 32), max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_embeddinggemma_loader_builds_from_a_tiny_sentence_transformer(smoke_prepared, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from jepa_arm.config import YEncoderConfig
    from jepa_arm.y_encoder import YEncoder

    tok = smoke_prepared.tokenizer
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                           pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Gemma3TextModel(cfg).save_pretrained(str(tmp_path / "gemma"))
    tok.save_pretrained(str(tmp_path / "gemma"))
    st = SentenceTransformer(modules=[models.Transformer(str(tmp_path / "gemma")), models.Pooling(32, "mean"),
                                      models.Dense(32, 48, bias=False), models.Normalize()])
    st.save(str(tmp_path / "st"))
    enc = YEncoder(YEncoderConfig(kind="embeddinggemma", weights=str(tmp_path / "st")))
    e = enc(["a red square moves left", "a cross"])
    assert e.shape == (2, 48) and enc.dim == 48
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_paper_parameter_counts_on_meta_device():
    from experiments.describe import describe
    from shared.config import load_config
    from shared.precision import resolve_runtime
    from tests.conftest import PAPER

    cfg = load_config(PAPER)
    info = describe(cfg, resolve_runtime(cfg))
    jepa, vlm = info["arms"]["jepa"]["trainable_params"], info["arms"]["vlm"]["trainable_params"]
    assert 0.47e9 < jepa < 0.51e9  # Llama-3.2-1B layers 8-16 plus linear maps: ~0.49B
    assert 1.22e9 < vlm < 1.26e9  # the whole Llama-3.2-1B plus the projector
    assert 0.37 < jepa / vlm < 0.42


def test_jepa_arm_trains_and_evaluates(smoke_prepared):

    prep = dataclasses.replace(smoke_prepared)
    arm = prep.seeded_arm("jepa")
    arm.prepare_training()
    batch = prep.batch("train", list(range(8)), [0] * 8)
    loss = arm(batch)
    loss.backward()
    grads = [n for n, p in arm.named_parameters() if p.grad is not None]
    assert grads and all(not n.startswith("y_encoder") and "embed_tokens" not in n for n in grads)
    with torch.no_grad():
        v = prep.visual("test", range(4))
        scores = arm.score_candidates(v, ["describe"] * 4, prep.dataset.label_texts)
        assert scores.shape == (4, 144) and scores.abs().max() <= 1.0 + 1e-5
        e = arm.embed(v, ["describe"] * 4)
        assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-4)
        caps = arm.caption(v, ["describe"] * 4, max_new_tokens=8)
        assert len(caps) == 4 and all(isinstance(c, str) for c in caps)


def test_both_arms_start_from_the_same_base_lm(smoke_prepared):

    jepa, vlm = smoke_prepared.seeded_arm("jepa"), smoke_prepared.seeded_arm("vlm")
    start, end = smoke_prepared.cfg.arm["jepa"].layers
    for i, layer in enumerate(jepa.predictor.lm.layers):
        theirs = vlm.lm.model.layers[start + i].state_dict()
        assert all(torch.equal(t, theirs[k]) for k, t in layer.state_dict().items())
    assert torch.equal(jepa.predictor.lm.embed_tokens.weight, vlm.lm.model.embed_tokens.weight)


def test_trainable_y_encoder_uses_the_lr_multiplier_and_shared_heads(smoke_cfg, smoke_prepared):

    prep = dataclasses.replace(smoke_prepared, cfg=smoke_cfg("jepa.y_encoder.trainable=true", "jepa.shared_dim=32"))
    arm = prep.seeded_arm("jepa")
    groups = arm.param_groups(1e-3, 0.01)
    y_ids = {id(p) for p in arm.y_encoder.parameters()}
    for g in groups:
        in_y = {id(p) in y_ids for p in g["params"]}
        assert len(in_y) == 1  # no group mixes the text encoder with the rest
        assert g["lr"] == pytest.approx(1e-3 * (0.05 if in_y == {True} else 1))
    arm.prepare_training()
    loss = arm(prep.batch("train", list(range(6)), [0] * 6))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in arm.y_encoder.parameters())
    assert arm.y_head.weight.grad is not None and arm.predictor.head.out_features == 32


def test_infonce_over_the_effective_batch_is_the_same_for_any_micro_batch(smoke_prepared):
    """GradCache: one batch of 32 == two micro-batches of 16 (loss and every gradient); with
    jepa.negatives=micro the loss sees only 15 negatives and differs."""
    import dataclasses

    from accelerate import Accelerator
    from shared.training.step import coupled_step

    batch = smoke_prepared.batch("train", list(range(32)), [i % 3 for i in range(32)])
    halves = [smoke_prepared.batch("train", list(range(s, s + 16)), [i % 3 for i in range(s, s + 16)]) for s in (0, 16)]
    accelerator = Accelerator(cpu=True)

    def run(micro_batches, cfg=None):
        prep = smoke_prepared if cfg is None else dataclasses.replace(smoke_prepared, cfg=cfg)
        arm = prep.seeded_arm("jepa", "cpu").train()
        loss = coupled_step(accelerator, arm, arm, micro_batches)
        return loss, {n: p.grad.clone() for n, p in arm.named_parameters() if p.requires_grad}

    whole, g_whole = run([batch])
    split, g_split = run(halves)
    assert torch.allclose(whole, split, rtol=1e-5)
    assert all(torch.allclose(g_whole[n], g_split[n], rtol=1e-4, atol=1e-7) for n in g_whole)
    arm = smoke_prepared.seeded_arm("jepa", "cpu")
    micro = sum(float(arm(h).detach()) for h in halves) / 2  # the per-micro-batch loss (jepa.negatives=micro)
    assert abs(micro - float(whole)) > 1e-3


def test_a_shared_space_prediction_maps_back_to_the_y_encoders_space(smoke_prepared, smoke_cfg):
    """With heads into a shared space, a fixed decoder of the Y-encoder's space (SONAR's) reads the
    prediction through the head's least-squares inverse: exact for true targets, at any scale."""
    import dataclasses

    import torch.nn.functional as F

    prep = dataclasses.replace(smoke_prepared, cfg=smoke_cfg("jepa.shared_dim=512"))  # > 384 (MiniLM)
    arm = prep.seeded_arm("jepa", "cpu")
    texts = ["a red circle moves left", "a blue square spins", "a green cross grows"]
    with torch.no_grad():
        unit = arm.y_encoder(texts)
        shared = arm.y_head(unit)  # what target_embeddings gives (direct: not through the session's text cache)
        assert arm.y_head.bias is None and shared.shape == (3, 512)
        back = F.normalize(arm.to_y_space(3.0 * shared), dim=-1)
    assert torch.allclose(back, unit, atol=1e-4)
