"""The trained VLM arm as Hugging Face parts: the LM as a ``LlamaForCausalLM`` folder (with its
tokenizer) and the PerceptionLM projector as a ``PerceptionLMMultiModalProjector`` (config + weights).

Outside the suite: ``LlamaForCausalLM.from_pretrained(DIR/"lm")``, the projector rebuilt from
``PerceptionLMConfig.from_pretrained(DIR/"projector")`` with ``projector/model.safetensors``; the
input is [BOS, projector(frame tokens) frame by frame, query tokens, caption tokens] (docs/export.md).
"""
from __future__ import annotations

import copy
from pathlib import Path

from peft import PeftModel
from safetensors.torch import save_file
from transformers import LlamaConfig, PerceptionLMConfig, TimmWrapperConfig


def export_vlm(arm, folder: Path) -> dict:
    folder = Path(folder)
    lm = copy.deepcopy(arm.lm).merge_and_unload() if isinstance(arm.lm, PeftModel) else arm.lm  # LoRA merged in
    lm.save_pretrained(folder / "lm")  # safetensors
    arm.tokenizer.save_pretrained(folder / "lm")
    c = arm.arm_cfg
    plm = PerceptionLMConfig(vision_config=TimmWrapperConfig(model_args={"embed_dim": arm.ctx.visual_dim}),
                             text_config=LlamaConfig(hidden_size=lm.config.hidden_size),
                             projector_pooling_ratio=c.projector_pool)
    plm.save_pretrained(folder / "projector")
    save_file({k: v.detach().float().contiguous().cpu() for k, v in arm.projector.state_dict().items()},
              str(folder / "projector" / "model.safetensors"))
    return {
        "parts": {"lm": "LlamaForCausalLM (save_pretrained, safetensors) and its tokenizer",
                  "projector": "PerceptionLMMultiModalProjector: config.json (PerceptionLMConfig) + model.safetensors"},
        "config": {"tokens_per_frame": arm.tokens_per_frame, "visual_dim": arm.ctx.visual_dim,
                   "sequence": ["bos", "projected visual tokens (frame by frame)", "query tokens (no special tokens)",
                                "caption tokens", "eos"],
                   "bos_token_id": arm.bos, "eos_token_id": arm.eos, "pad_token_id": arm.pad,
                   "lora_merged": isinstance(arm.lm, PeftModel)},
    }
