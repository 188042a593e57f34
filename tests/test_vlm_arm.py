import dataclasses

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture
def vlm(smoke_prepared):
    return smoke_prepared.seeded_arm("vlm")


def test_loss_is_on_caption_tokens_only(smoke_prepared, vlm):
    """Logits only at the caption's positions give the loss of full logits with prefix labels masked."""
    batch = smoke_prepared.batch("train", [0, 1, 2], [0, 1, 2])
    seen = {}
    vlm.lm.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    loss = vlm.loss(batch)
    tok = smoke_prepared.tokenizer
    q_len = len(tok(batch.queries[0], add_special_tokens=False)["input_ids"])
    prefix = 1 + smoke_prepared.visual_tokens + q_len  # BOS, visual tokens, query
    caption_ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in batch.captions]
    assert seen["logits_to_keep"].tolist() == list(range(prefix - 1, prefix - 1 + max(map(len, caption_ids))))
    labels = torch.full(seen["attention_mask"].shape, -100)
    for i, ids in enumerate(caption_ids):
        labels[i, prefix:prefix + len(ids)] = torch.tensor(ids)
    full = vlm.lm(inputs_embeds=seen["inputs_embeds"], attention_mask=seen["attention_mask"], labels=labels).loss
    assert torch.allclose(loss, full, atol=1e-5)


def overfit(arm, prepared, steps=120):
    """Train on one clip and caption until the arm reproduces it."""
    batch = prepared.batch("train", [0] * 8, [0] * 8)
    opt = torch.optim.AdamW([p for p in arm.parameters() if p.requires_grad], lr=3e-3)
    arm.train()
    for _ in range(steps):
        loss = arm(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    arm.eval()
    return batch


def test_overfit_generation_stops_at_eos_and_ranks_by_perplexity(smoke_prepared, vlm):
    batch = overfit(vlm, smoke_prepared)
    v, q = batch.visual[:1], batch.queries[:1]
    target = batch.captions[0]
    with torch.no_grad():
        out = vlm.caption(v, q, max_new_tokens=20)
        assert out == [target]  # stopped at EOS long before 20 tokens
        assert vlm.caption(v, q, max_new_tokens=20) == out  # greedy decoding is deterministic
        others = [t for t in smoke_prepared.dataset.label_texts if t != target][:30]
        candidates = others[:15] + [target] + others[15:]
        for norm in ("mean", "sum"):
            vlm.arm_cfg = dataclasses.replace(vlm.arm_cfg, length_norm=norm)  # a copy: the config is shared
            assert vlm.score_candidates(v, q, candidates).argmax().item() == 15


@pytest.mark.parametrize("attn, trie_nodes", [("eager", 512), ("sdpa", 512), ("eager", 6)])
def test_trie_scores_equal_full_forward(smoke_prepared, vlm, attn, trie_nodes):
    vlm.eval()
    vlm.lm.config._attn_implementation = attn  # the tree mask takes each implementation's form
    tok = smoke_prepared.tokenizer
    v = smoke_prepared.visual("test", range(3))
    q = ["describe the video ."] * 3
    # shared prefixes, and one candidate that is a prefix of another: a trie with inner end nodes
    candidates = ["a red square moves left", "a cross", "there is a blue circle that grows", "a cross moves",
                  "a red square moves right"]
    # 2 clips per forward: two chunks; trie_nodes=6: several tries sharing the clip's prefix cache
    vlm.arm_cfg = dataclasses.replace(vlm.arm_cfg, score_chunk=40 if trie_nodes > 100 else 14, trie_nodes=trie_nodes)
    with torch.no_grad():
        fast = vlm.score_candidates(v, q, candidates)
        x, mask = vlm.prefix(v, q)
        for j, cand in enumerate(candidates):
            ids = torch.tensor(tok(cand, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            full = torch.cat([x, vlm.embed_ids(ids).expand(3, -1, -1)], dim=1)
            logits = vlm.lm(inputs_embeds=full, attention_mask=torch.ones(full.shape[:2], dtype=torch.long)).logits
            lp = F.log_softmax(logits[:, x.shape[1] - 1:-1].float(), -1).gather(2, ids.expand(3, -1)[..., None])
            assert torch.allclose(fast[:, j], lp.squeeze(-1).mean(1), atol=1e-4)


def test_batched_captions_equal_single_captions(smoke_prepared, vlm):
    vlm.eval()
    v = smoke_prepared.visual("test", range(3))
    with torch.no_grad():
        together = vlm.caption(v, ["describe"] * 3, max_new_tokens=6)
        alone = [vlm.caption(v[i:i + 1], ["describe"], max_new_tokens=6)[0] for i in range(3)]
    assert together == alone


def test_lora_trains_only_adapters_and_projector(smoke_cfg, smoke_prepared):
    import dataclasses

    prep = dataclasses.replace(smoke_prepared, cfg=smoke_cfg("vlm.lora=true", "vlm.lora_r=4"))
    arm = prep.seeded_arm("vlm")
    trainable = [n for n, p in arm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("projector.") for n in trainable)
    assert any("lora_" in n for n in trainable)
    full = smoke_prepared.seeded_arm("vlm").parameter_counts()["trainable_params"]
    assert arm.parameter_counts()["trainable_params"] < full
    frozen_before = {n: p.detach().clone() for n, p in arm.named_parameters() if not p.requires_grad}
    overfit(arm, prep, steps=3)
    assert all(torch.equal(p, frozen_before[n]) for n, p in arm.named_parameters() if not p.requires_grad)


def test_beam_search_captions(smoke_cfg, smoke_prepared):
    prep = dataclasses.replace(smoke_prepared, cfg=smoke_cfg("vlm.num_beams=3"))
    arm = prep.seeded_arm("vlm").eval()
    with torch.no_grad():
        out = arm.caption(prep.visual("test", range(2)), ["describe"] * 2, max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_candidate_trie_shares_prefixes():
    from vlm_arm.candidate_trie import build_trie

    trie = build_trie([[1, 2, 3], [1, 2, 4], [1, 5], [1, 2]])
    assert trie.tokens.tolist() == [1, 2, 3, 4, 5] and trie.depth.tolist() == [0, 1, 2, 2, 1]
    # node 2 (token 3) sees itself and its ancestors (tokens 1, 2); node 4 (token 5) sees 1 and itself
    assert trie.visible[2].tolist() == [True, True, True, False, False]
    assert trie.visible[4].tolist() == [True, False, False, False, True]
    assert trie.first.tolist() == [1, 1, 1, 1] and trie.lengths.tolist() == [3, 3, 2, 2]
    # token j of a candidate is predicted by the node of its token j-1; -1 pads shorter candidates
    assert trie.steps.tolist() == [[0, 1], [0, 1], [0, -1], [0, -1]]
    assert trie.next_tokens.tolist() == [[2, 3], [2, 4], [5, 0], [2, 0]]
    assert trie.parents.tolist() == [0, 1]
    with pytest.raises(ValueError, match="at least one token"):
        build_trie([[1], []])


def test_accumulated_loss_weighs_every_token_as_one_batch(smoke_prepared, vlm):
    """Two micro-batches with captions of different lengths give the loss and gradients of the one
    batch they form: summed token losses over the effective batch's token count (a mean of the two
    micro-batch means would weigh the shorter captions' tokens more)."""
    from accelerate import Accelerator

    from shared.training.step import independent_step

    train = smoke_prepared.dataset.split("train")
    by_length = sorted(range(len(train)), key=lambda i: len(train.clip(i).captions[0]))
    clips = by_length[:4] + by_length[-4:]  # short captions in one micro-batch, long in the other
    whole = smoke_prepared.batch("train", clips)
    halves = [smoke_prepared.batch("train", clips[:4]), smoke_prepared.batch("train", clips[4:])]
    assert vlm.loss_units(halves[0]) < vlm.loss_units(halves[1])
    params = [p for p in vlm.parameters() if p.requires_grad]

    def grads():
        out = [p.grad.clone() for p in params]
        vlm.zero_grad(set_to_none=True)
        return out

    vlm(whole).backward()
    expected_loss, expected = vlm(whole).detach(), grads()
    accelerator = Accelerator(cpu=True)
    loss = independent_step(accelerator, vlm, vlm, halves)
    got = grads()
    assert torch.allclose(loss, expected_loss, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected))
    mean_of_means = (vlm(halves[0]) + vlm(halves[1])).detach() / 2
    assert not torch.allclose(mean_of_means, expected_loss, atol=1e-3)  # what the old weighting gave


def _head_rows(vlm) -> list:
    """Rows of logits the LM head computes, one entry per call (batch x positions it was given)."""
    rows = []
    vlm.lm.get_output_embeddings().register_forward_hook(lambda m, i, out: rows.append(out.shape[:-1].numel()))
    return rows


def test_evaluation_computes_logits_only_where_they_are_read(smoke_prepared, vlm):
    """Scoring, generation and the latency stages read the prefix's logits at its last position: the
    head computes batch rows (x trie parents for candidates), never batch x prefix positions; captions
    equal a greedy decode with full logits at every position."""
    vlm.eval()
    b, v = 3, smoke_prepared.visual("test", range(3))
    q = ["describe the video ."] * b
    candidates = ["a red square moves left", "a cross", "a red square moves right"]
    rows = _head_rows(vlm)
    with torch.no_grad():
        vlm.score_candidates(v, q, candidates)
    prefix_rows, *trie_rows = rows
    assert prefix_rows == b and all(r < b * 8 for r in trie_rows)  # 8: nodes with children, well under the prefix
    rows.clear()
    tokens = 5
    with torch.no_grad():
        captions = vlm.caption(v, q, max_new_tokens=tokens)
    assert rows and all(r == b for r in rows)  # the prefill, then one row per clip and token
    # the same greedy decode with the logits of every position, no cache
    x, mask = vlm.prefix(v, q)
    out = torch.empty(b, 0, dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(tokens):
            inputs = torch.cat([x, vlm.embed_ids(out).to(x.dtype)], dim=1)
            full_mask = torch.cat([mask, torch.ones_like(out)], dim=1)
            nxt = vlm.lm(inputs_embeds=inputs, attention_mask=full_mask, use_cache=False).logits[:, -1].argmax(-1)
            nxt = nxt.masked_fill(done, vlm.pad)
            out, done = torch.cat([out, nxt[:, None]], dim=1), done | (nxt == vlm.eos)
    assert captions == [t.strip() for t in vlm.tokenizer.batch_decode(out, skip_special_tokens=True)]
    rows.clear()
    stages = dict(vlm.inference_stages(q, tokens))
    with torch.no_grad():
        stages["decoder"](stages["query_embedding"](stages["encoder_predictor"](v)))
    assert rows == [b] * (2 + tokens - 1)  # the visual prefill, the query's, then each fed-back token
