"""The VLM arm: the PerceptionLM recipe, trained with next-token cross-entropy.

Cached visual tokens -> PerceptionLM's projector (Linear-GELU-Linear, optional 2D pooling per
frame) -> the whole base causal LM, on the sequence [BOS, visual, query, caption, EOS] with the
loss on caption and EOS tokens only. Classification ranks candidate texts by their likelihood
given the visual tokens and query (lowest perplexity first), with the prefix computed once per
clip and a prefix shared by several candidates read once (a token trie under a tree attention mask).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, PerceptionLMConfig, TimmWrapperConfig
from transformers.models.perception_lm.modeling_perception_lm import (
    PerceptionLMMultiModalProjector,
)

from shared.arm import Arm, ArmContext, Batch, register_arm
from vlm_arm.candidate_trie import CandidateTrie, build_trie, group_by_prefix
from vlm_arm.config import VlmConfig


def _trie_tables(trie: CandidateTrie):
    """(trie, nodes whose logits are needed, their row for each candidate step, which steps are real)."""
    parents = trie.parents
    row = torch.full((len(trie.tokens),), -1, dtype=torch.long)
    row[parents] = torch.arange(len(parents))
    return trie, parents, row[trie.steps.clamp_min(0)], trie.steps >= 0


@register_arm("vlm", VlmConfig)
class VlmArm(Arm):
    """PerceptionLM recipe: projector + the base LM, next-token cross-entropy on the caption; classifies by perplexity."""

    capabilities = frozenset({"inference_stages", "export"})

    def __init__(self, ctx: ArmContext):
        super().__init__(ctx)
        c: VlmConfig = self.arm_cfg
        self.tokenizer = ctx.tokenizer
        lm = ctx.base_lm()
        self.tokens_per_frame = ctx.visual_tokens // ctx.cfg.data.frames
        # only the widths matter to the projector; the LM's own config object is left untouched
        plm = PerceptionLMConfig(vision_config=TimmWrapperConfig(model_args={"embed_dim": ctx.visual_dim}),
                                 text_config=LlamaConfig(hidden_size=lm.config.hidden_size),
                                 projector_pooling_ratio=c.projector_pool)
        with torch.device(ctx.device):
            self.projector = PerceptionLMMultiModalProjector(plm)
        if c.lora:
            lm = get_peft_model(lm, LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, target_modules=list(c.lora_targets),
                                               lora_dropout=0.0, bias="none"))
        self.lm = lm
        if ctx.tokenizer is not None:
            self.bos, self.eos, self.pad = ctx.tokenizer.bos_token_id, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id

    # ---- sequence building ---------------------------------------------------------------
    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def project(self, visual: torch.Tensor) -> torch.Tensor:
        """[B, T*n, Dv] -> [B, T*n', H]: the projector runs per frame so its pooling sees each frame's grid."""
        b = visual.shape[0]
        frames = visual.reshape(-1, self.tokens_per_frame, visual.shape[-1])  # any number of frames
        out = self.projector(frames.to(self.projector.linear_1.weight.dtype))
        return out.reshape(b, -1, out.shape[-1])

    def _ids(self, texts: list[str], eos: bool, left_pad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded token ids and mask (no BOS), optionally ending with EOS."""
        seqs = [t + ([self.eos] if eos else []) for t in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        L = max(1, max(map(len, seqs)))
        ids = torch.full((len(seqs), L), self.pad)
        mask = torch.zeros(len(seqs), L, dtype=torch.long)
        for i, s in enumerate(seqs):
            span = slice(L - len(s), L) if left_pad else slice(0, len(s))
            ids[i, span], mask[i, span] = torch.tensor(s, dtype=torch.long), 1
        return ids, mask

    def prefix(self, visual: torch.Tensor, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and mask of [BOS, visual tokens, query] (queries left-padded)."""
        b, dev = visual.shape[0], visual.device
        q_ids, q_mask = self._ids(queries, eos=False, left_pad=True)  # the caption follows the query directly
        v = self.project(visual)
        bos = self.embed_ids(torch.full((b, 1), self.bos, device=dev))
        x = torch.cat([bos.to(v.dtype), v, self.embed_ids(q_ids.to(dev)).to(v.dtype)], dim=1)
        mask = torch.cat([torch.ones(b, 1 + v.shape[1], dtype=torch.long, device=dev), q_mask.to(dev)], dim=1)
        return x, mask

    # ---- training ------------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean next-token cross-entropy over the caption and EOS tokens of the batch."""
        return F.cross_entropy(*self._caption_logits(batch), ignore_index=-100)

    def loss_units(self, batch: Batch) -> int:
        return int(self._ids(batch.captions, eos=True)[1].sum())

    def loss_sum(self, batch: Batch) -> torch.Tensor:
        """Summed over tokens: over micro-batches the step divides by the effective batch's token
        count, so every token weighs the same whatever micro-batch it falls in."""
        return F.cross_entropy(*self._caption_logits(batch), ignore_index=-100, reduction="sum")

    def _caption_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [tokens, V], labels [tokens], -100 at padding) of the caption and EOS positions.
        Logits are computed only at the positions that predict them (the last prefix position
        onwards): the prefix's ~2,300 positions at paper scale would otherwise cost ~10 GB of
        logits per micro-batch."""
        x, mask = self.prefix(batch.visual, batch.queries)
        ids, cmask = self._ids(batch.captions, eos=True)
        ids, cmask = ids.to(x.device), cmask.to(x.device)
        inputs = torch.cat([x, self.embed_ids(ids).to(x.dtype)], dim=1)
        p, n = x.shape[1], ids.shape[1]
        keep = torch.arange(p - 1, p - 1 + n, device=x.device)  # position j predicts token j + 1
        logits = self.lm(inputs_embeds=inputs, attention_mask=torch.cat([mask, cmask], dim=1),
                         logits_to_keep=keep, use_cache=False).logits  # no KV cache to build in training
        return logits.float().flatten(0, 1), ids.masked_fill(cmask == 0, -100).flatten()

    # ---- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def caption(self, visual: torch.Tensor, queries: list[str], max_new_tokens: int) -> list[str]:
        """Greedy (or beam) generation; its prefill computes logits at the last position only (generate
        passes ``logits_to_keep=1`` to a model that takes it, as Llama does; tested by counting rows)."""
        x, mask = self.prefix(visual, queries)
        out = self.lm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=max_new_tokens,
                               num_beams=self.arm_cfg.num_beams, do_sample=False,
                               eos_token_id=self.eos, pad_token_id=self.pad)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def score_candidates(self, visual: torch.Tensor, queries: list[str], candidates: list[str]) -> torch.Tensor:
        """[B, C] log-likelihood scores of each candidate text (higher = lower perplexity).

        Per clip: the prefix [BOS, visual, query] once, then every candidate at once as a token trie
        under a tree attention mask (vlm_arm/candidate_trie.py), logits only at nodes with children.
        """
        c = self.arm_cfg
        ids = self.tokenizer(candidates, add_special_tokens=False)["input_ids"]
        seqs = [t + ([self.eos] if c.score_eos else []) for t in ids]
        groups = [(torch.tensor(g), *_trie_tables(build_trie([seqs[i] for i in g])))
                  for g in group_by_prefix(seqs, c.trie_nodes)]
        per_forward = max(1, c.score_chunk // max(len(g[1].tokens) for g in groups))  # bounds (clip, node) pairs
        scores = []
        for s in range(0, visual.shape[0], per_forward):
            x, mask = self.prefix(visual[s:s + per_forward], queries[s:s + per_forward])
            b, p, dev = mask.shape[0], mask.shape[1], x.device
            # the prefix's logits are read at its last position only (~2,300 positions at paper scale)
            out = self.lm(inputs_embeds=x, attention_mask=mask, use_cache=True, logits_to_keep=1)
            first = F.log_softmax(out.logits[:, -1].float(), dim=-1)
            cache, total = out.cache, torch.empty(b, len(candidates), device=dev)
            for idx, trie, parents, step_rows, valid in groups:
                n = len(trie.tokens)
                # a node sees the clip's real prefix tokens and its own ancestors (itself included)
                sees = torch.cat([mask.bool()[:, None, :].expand(b, n, p), trie.visible.to(dev).expand(b, n, n)], dim=2)
                logits = self.lm(input_ids=trie.tokens.to(dev).expand(b, n), attention_mask=self._tree_mask(sees),
                                 position_ids=(p + trie.depth.to(dev)).expand(b, n), cache=cache,
                                 logits_to_keep=parents.to(dev)).logits
                cache.crop(-n)  # drop the group's nodes: back to the shared prefix for the next group
                logp = F.log_softmax(logits.float(), dim=-1)  # [b, parents, V]
                rest = logp[:, step_rows.to(dev), trie.next_tokens.to(dev)] * valid.to(dev)  # [b, C_g, L-1]
                group = first[:, trie.first.to(dev)] + rest.sum(-1)
                total[:, idx.to(dev)] = group / trie.lengths.to(dev) if c.length_norm == "mean" else group
            scores.append(total.cpu())
        return torch.cat(scores)

    def _tree_mask(self, sees: torch.Tensor) -> torch.Tensor:
        """[b, 1, q, k] mask in the form the LM's attention takes as given: additive for eager, boolean otherwise."""
        if self.lm.config._attn_implementation == "eager":
            return torch.zeros(sees.shape, device=sees.device).masked_fill_(~sees, torch.finfo(torch.float32).min)[:, None]
        return sees[:, None]


    def export_pretrained(self, folder):
        from vlm_arm.export import export_vlm

        return export_vlm(self, folder)

    def inference_stages(self, queries: list[str], max_new_tokens: int):
        """encoder+predictor (projector and prefill of [BOS, visual]), query embedding (prompt prefill
        on that cache), decoder (greedy generation of exactly ``max_new_tokens`` tokens)."""

        def encoder_predictor(visual):
            v = self.project(visual)
            b = visual.shape[0]
            x = torch.cat([self.embed_ids(torch.full((b, 1), self.bos, device=v.device)).to(v.dtype), v], dim=1)
            out = self.lm(inputs_embeds=x, use_cache=True, logits_to_keep=1)  # the cache is what is read
            return out.cache, torch.ones(x.shape[:2], dtype=torch.long, device=x.device)

        def query_embedding(state):
            cache, mask = state
            ids, qmask = self._ids(queries, eos=False)
            mask = torch.cat([mask, qmask.to(mask.device)], dim=1)
            out = self.lm(input_ids=ids.to(mask.device), attention_mask=mask, cache=cache, use_cache=True,
                          logits_to_keep=1)
            return out.cache, mask, out.logits[:, -1]

        def decoder(state):
            cache, mask, logits = state
            tokens = []
            for i in range(max_new_tokens):
                nxt = logits.argmax(-1, keepdim=True)  # the first token comes from the prompt's prefill
                tokens.append(nxt)
                if i == max_new_tokens - 1:  # the last token needs no forward pass of its own
                    break
                mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
                out = self.lm(input_ids=nxt, attention_mask=mask, cache=cache, use_cache=True)
                cache, logits = out.cache, out.logits[:, -1]
            return self.tokenizer.batch_decode(torch.cat(tokens, dim=1), skip_special_tokens=True)

        return [("encoder_predictor", encoder_predictor), ("query_embedding", query_embedding), ("decoder", decoder)]
