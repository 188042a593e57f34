"""Latency figure (the paper's Figure 3, right) from latency.json."""
from __future__ import annotations

from pathlib import Path

from plots.style import arm_label, arm_palette, plt, save

STAGES = [("query_embedding", "query embedding", "#9ecae1"), ("encoder_predictor", "encoder + predictor", "#3182bd"),
          ("decoder", "decoder", "#fd8d3c")]


def latency_figure(result: dict, out_dir: Path) -> list[Path]:
    arms = list(result["arms"])
    training = result.get("training", {}).get("arms", {})
    fig, axes = plt.subplots(1, 2 if training else 1, figsize=(10 if training else 5.5, 3.8), squeeze=False)
    ax = axes[0][0]
    bottoms = [0.0] * len(arms)
    labels = [arm_label(a).replace(" (", "\n(") for a in arms]
    for key, name, colour in STAGES:
        vals = [result["arms"][a]["stages"][key]["mean_ms"] for a in arms]
        ax.bar(labels, vals, bottom=bottoms, label=name, color=colour)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    for i, b in enumerate(bottoms):
        ax.text(i, b, f"{b:.0f} ms", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("mean time per sample (ms)")
    ax.set_title(f"Inference latency, {result['frames']}-frame video, {result['caption_tokens']} tokens", fontsize=10)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    if training:
        ax = axes[0][1]
        palette = arm_palette(training)
        vals = [training[a]["samples_per_s"] for a in training]
        ax.bar([arm_label(a).replace(" (", "\n(") for a in training], vals, color=[palette[a] for a in training])
        for i, a in enumerate(training):
            ax.text(i, vals[i], f"{vals[i]:.0f}/s\nMFU {100 * training[a]['mfu']:.0f}%", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("training samples / s")
        ax.set_title(f"Training throughput ({result['dtype']}, {result['threads']} threads)", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylim(0, max(vals) * 1.3)
    fig.tight_layout()
    return save(fig, out_dir, "latency")
