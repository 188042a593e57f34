"""One lifetime per model: what a finished training (or a row of the GPU check) leaves behind is freed.

Accelerate's ``prepare`` keeps the model, optimizer and loaders in the accelerator (``_models``,
``_optimizers``, ...; ``register_for_checkpointing`` adds ``_custom_objects``) and binds an autocast
forward to the model, a reference cycle only the collector breaks: without this, each arm's model
lived on into evaluation and the next arm, and each row of the GPU check started with the last one's.
"""
from __future__ import annotations

import gc

import torch


def release(accelerator) -> None:
    """Drop the accelerator's references to the run's objects, collect, and on CUDA hand cached
    blocks back and start the peak-memory statistics afresh for what runs next."""
    accelerator.free_memory()  # clears _models, _optimizers, _schedulers, _dataloaders; collects
    accelerator._custom_objects = []
    gc.collect()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize(accelerator.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(accelerator.device)
