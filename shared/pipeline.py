"""From a config to everything an arm needs: clip sources, tokenizer, visual features, context.

Nothing per clip is loaded here: sources address clips by position, and in ``cache`` mode the
features of the asked splits are made to exist on disk (encoded once, read later by the loader).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from shared.arm import ArmContext, Batch, build_arm
from shared.config import Config
from shared.data.loader import ClipBatches, batches, make_loader
from shared.data.order import TrainOrder
from shared.data.sources import Dataset, build_dataset, digest
from shared.features.encoder import FrozenEncoder
from shared.features.visual import VisualFeatures
from shared.lm import build_base_lm, load_tokenizer
from shared.precision import Runtime
from shared.text_pretraining import TextKnowledge, prepare_text_knowledge

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """What a config prepares once for every arm: the dataset (clips by position), the shared
    tokenizer, the frozen encoder's token shape and its features, and the command's runtime (device,
    process layout, precision); arms and contexts are built from it. ``cfg`` is held as it runs here
    (precision and encoder dtype resolved by the runtime), also after ``dataclasses.replace``."""

    cfg: Config
    dataset: Dataset
    tokenizer: object
    visual_dim: int
    visual_tokens: int
    features: VisualFeatures
    runtime: Runtime
    text: TextKnowledge | None = None  # the caption-pretrained LM / Y-encoder, where the config asks for them

    def __post_init__(self):  # a config replaced later keeps the runtime's hardware, with its own precision
        self.runtime = self.runtime.for_config(self.cfg)
        self.cfg = self.runtime.precision.apply(self.cfg)

    def context(self, device: torch.device | str = "cpu") -> ArmContext:
        train = self.dataset.split("train")
        return ArmContext(cfg=self.cfg, tokenizer=self.tokenizer, visual_dim=self.visual_dim,
                          visual_tokens=self.visual_tokens, device=torch.device(device),
                          make_base_lm=base_lm_maker(self.cfg, self.tokenizer, self.text), text=self.text,
                          captions_of_train=lambda limit=None: list(train.captions(limit)),
                          captions_at=self.seen_captions, stream_key=digest(self.cfg.seed, train.text_key),
                          runtime=self.runtime)

    def seeded_arm(self, name: str, device=None):
        """Arm ``name`` built on ``device`` (default: this process's accelerator device), its
        initialisation seeded by the run's seed: the same weights wherever it is built."""
        torch.manual_seed(self.cfg.seed)
        return build_arm(name, self.context(device if device is not None else self.runtime.device))

    def seen_captions(self, start: int, stop: int) -> list[str]:
        """The target captions at training positions [start, stop) of this seed's order."""
        train = self.dataset.split("train")
        clips, caps = TrainOrder(self.cfg.seed, train.caption_counts()).take(start, stop - start)
        return [train.clip(int(c)).captions[int(j)] for c, j in zip(clips, caps)]

    def batch(self, split: str, clip_idx, cap_idx=None, device: torch.device | str = "cpu") -> Batch:
        """One batch of given clips (and caption choices), read synchronously, ``visual`` on ``device``."""
        clip_idx = np.asarray(clip_idx, dtype=np.int64)
        cap_idx = np.zeros_like(clip_idx) if cap_idx is None else np.asarray(cap_idx, dtype=np.int64)
        source = self.dataset.split(split)
        ds = ClipBatches(source, GivenClips(clip_idx, cap_idx), self.features.reader(source), self.cfg.data.query,
                         references=True)
        batch, = batches(make_loader(ds, 0, 1, workers=0, prefetch=2))
        return self.features.ready(batch, device)

    def visual(self, split: str, clip_idx) -> torch.Tensor:
        return self.batch(split, clip_idx).visual


@dataclass(frozen=True)
class GivenClips:
    """A plan of one batch: these clips with these caption choices (``Pipeline.batch``)."""

    clip_idx: np.ndarray
    cap_idx: np.ndarray

    def clips(self, k: int):
        return self.clip_idx, self.cap_idx


def base_lm_maker(cfg: Config, tokenizer, text: TextKnowledge | None = None):
    """What an ArmContext builds its base LM with: the config's LM for the shared tokenizer, on a device."""
    return lambda device: build_base_lm(cfg, tokenizer, device=device, text=text)


def random_visual_batch(prepared: Pipeline, size: int, device) -> Batch:
    """The first ``size`` training clips' first captions with random visual tokens: a batch of the
    right shapes for timing a step, without reading any frames or features."""
    train = prepared.dataset.split("train")
    clips = [train.clip(i) for i in range(min(size, len(train)))]
    g = torch.Generator().manual_seed(0)
    visual = torch.randn(len(clips), prepared.visual_tokens, prepared.visual_dim, generator=g)
    return Batch(ids=[c.id for c in clips], queries=[prepared.cfg.data.query] * len(clips),
                 captions=[c.captions[0] for c in clips], visual=visual.to(device))


def tokenizer_corpus(cfg: Config, dataset: Dataset) -> list[str]:
    """Texts the captions tokenizer is trained on: the training split's own texts (its captions and
    the label texts of the labels it holds) and the prompt. Labels seen only in evaluation stay out:
    their words are as new to the tokenizer as to the arms."""
    train = dataset.split("train")
    labels = np.unique(train.labels())
    return [*train.captions(), *(dataset.label_texts[i] for i in labels[labels >= 0]), cfg.data.query]


def corpus_key(cfg: Config, dataset: Dataset) -> str:
    """Identity of the tokenizer corpus, known without reading it (the split's key covers its labels)."""
    return digest("train-split-texts", dataset.split("train").text_key, cfg.data.query)


def prepare(cfg: Config, runtime: Runtime, splits: tuple[str, ...] = ("train", "val", "test")) -> Pipeline:
    """The pipeline of ``cfg`` under the command's ``runtime`` (shared/precision.py: resolve_runtime)."""
    runtime = runtime.for_config(cfg)
    cfg = runtime.precision.apply(cfg)
    dataset = build_dataset(cfg)
    tokenizer = load_tokenizer(cfg, lambda: tokenizer_corpus(cfg, dataset), corpus_key(cfg, dataset))
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    text = prepare_text_knowledge(cfg, dataset, tokenizer, runtime)  # before any arm: both start from it
    encoder = FrozenEncoder.from_config(cfg).to(runtime.device)
    features = VisualFeatures(cfg, encoder)
    prepared = Pipeline(cfg, dataset, tokenizer, encoder.dim, encoder.tokens_per_clip(cfg.data.frames), features,
                        runtime, text)
    for split in splits:
        features.prepare(dataset.split(split), desc=f"encode {split}")
    log.info("data %s: %s clips; %d visual tokens x %d dims per clip; features: %s", dataset.name,
             {s: len(dataset.split(s)) for s in ("train", "val", "test")}, prepared.visual_tokens,
             prepared.visual_dim, cfg.encoder.features)
    return prepared
