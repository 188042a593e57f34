"""The frozen X-encoder shared by every arm: a Perception Encoder (PE-Core) from timm.

It runs on whatever device it is moved to (the training device in ``online`` feature mode), in
``encoder.dtype`` of a resolved config (shared/precision.py turns ``auto`` into the run's dtype),
under ``no_grad``.

Frames are encoded one by one; the prefix (CLS) token is dropped and the patch grid is optionally
average-pooled to ``pool_grid`` x ``pool_grid`` tokens per frame, so a clip becomes
[frames * tokens_per_frame, dim] visual tokens S_V. Mean-pooling over frames is deliberately not
offered: it erases motion (a linear probe of the action of moving shapes on frozen random-init features:
mean over frames and tokens 22%, 4 pooled tokens per frame concatenated 97%).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from shared.config import ConfigError, EncoderConfig
from shared.precision import DTYPE_NAMES, dtype_name


def create_pe_model(cfg: EncoderConfig, device: str | torch.device = "cpu") -> nn.Module:
    """Build the timm model; weights from a local file, ``timm`` (its hub tag) or ``hf-hub:<id>``."""
    kwargs = dict(img_size=cfg.image_size, num_classes=0)
    w = cfg.weights
    if cfg.depth is not None:
        if w is not None:
            raise ConfigError(f"encoder.depth={cfg.depth}: only for a randomly initialised encoder "
                              f"(encoder.weights={w!r} holds the model's own blocks)")
        kwargs["depth"] = cfg.depth
    if w is None or torch.device(device).type == "meta":  # meta: shapes only, never weights
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(cfg.init_seed)  # a fixed random encoder: the same for every arm and run
            return timm.create_model(cfg.model, pretrained=False, **kwargs)
    if w == "timm":
        return timm.create_model(cfg.model, pretrained=True, **kwargs)
    if w.startswith("hf-hub:"):
        return timm.create_model(w, pretrained=True, **kwargs)
    path = Path(w).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder.weights: no such file {path} (use a local file, 'timm' or 'hf-hub:<id>')")
    return timm.create_model(cfg.model, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


class FrozenEncoder(nn.Module):
    """``cfg.dtype``: a dtype name, as a resolved config holds it (on the meta device, where nothing is
    computed, the unresolved one is accepted)."""

    def __init__(self, cfg: EncoderConfig, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.dtype = DTYPE_NAMES.get(cfg.dtype)
        meta = torch.device(device).type == "meta"
        if self.dtype is None and not meta:
            raise ValueError(f"encoder.dtype={cfg.dtype}: the encoder runs in a resolved dtype; resolve the config "
                             "first (shared/precision.py: Precision.apply)")
        self.model = create_pe_model(cfg, device).eval().requires_grad_(False)
        if not meta:  # pretrained weights are read on the host: the encoder lives where it was asked to
            self.model.to(device=device, dtype=self.dtype)
        # the normalisation constants live with the weights (registered on the host they would meet CUDA
        # weights in the forward: the GPU check built the encoder on the device and never moved it)
        data_cfg, where = self.model.pretrained_cfg, self.device
        for name, default in (("mean", (0.5,) * 3), ("std", (0.5,) * 3)):
            self.register_buffer(name, torch.tensor(data_cfg.get(name, default), device=where).view(1, 3, 1, 1),
                                 persistent=False)
        self.dim = self.model.num_features
        grid = self.model.patch_embed.grid_size
        self.grid = (int(grid[0]), int(grid[1]))
        g = cfg.pool_grid
        if g and (g > min(self.grid)):
            raise ValueError(f"encoder.pool_grid={g} exceeds the patch grid {self.grid}")
        self.tokens_per_frame = g * g if g else self.grid[0] * self.grid[1]

    @classmethod
    def from_config(cls, cfg, device: str | torch.device = "cpu") -> "FrozenEncoder":
        """The encoder of a full (resolved) Config."""
        return cls(cfg.encoder, device)

    @property
    def device(self) -> torch.device:
        """Where the encoder computes: its weights' device (every device question is answered here)."""
        return next(self.model.parameters()).device

    def tokens_per_clip(self, frames: int) -> int:
        return frames * self.tokens_per_frame

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> [N, tokens_per_frame, dim] float32."""
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        x = ((x - self.mean) / self.std).to(self.dtype)
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens:]
        if self.cfg.pool_grid:
            n, _, d = tokens.shape
            grid = tokens.transpose(1, 2).reshape(n, d, *self.grid)
            tokens = F.adaptive_avg_pool2d(grid.float(), self.cfg.pool_grid).flatten(2).transpose(1, 2)
        return tokens.float()

    @torch.no_grad()
    def encode_clips(self, clips: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] (numpy or a tensor on any device) -> [B, T * tokens_per_frame, dim]
        float32, on the encoder's device, in chunks of ``encoder.batch_frames`` frames."""
        if isinstance(clips, np.ndarray):
            clips = torch.from_numpy(np.ascontiguousarray(clips))
        b, t = clips.shape[:2]
        frames = clips.reshape(b * t, *clips.shape[2:])
        step = max(1, self.cfg.batch_frames)
        out = torch.cat([self.encode_frames(frames[i:i + step]) for i in range(0, len(frames), step)])
        return out.reshape(b, t * self.tokens_per_frame, self.dim)

    def fingerprint(self) -> str:
        """Identity of the features this encoder produces: config plus a hash of the weights."""
        h = hashlib.sha256()
        c = self.cfg
        dtype = dtype_name(self.dtype)  # the resolved name: "auto" would key nothing
        depth = f"|depth={c.depth}" if c.depth is not None else ""  # keys stay as they were without it
        h.update(f"{c.model}|{c.image_size}|{c.pool_grid}|{dtype}{depth}|timm={timm.__version__}".encode())
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            # a strided sample keeps hashing cheap for large encoders while catching any reinit
            flat = t.detach().reshape(-1)
            step = max(1, math.ceil(flat.numel() / 65536))
            h.update(flat[::step].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]
