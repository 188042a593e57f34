"""Latency figure (the paper's Figure 3, right) from latency.json: medians with their 90th percentiles."""
from __future__ import annotations

from pathlib import Path

from plots.style import arm_label, arm_palette, plt, save

STAGES = [("query_embedding", "query embedding", "#9ecae1"), ("encoder_predictor", "encoder + predictor", "#3182bd"),
          ("decoder", "decoder", "#fd8d3c")]


def latency_figure(result: dict, out_dir: Path) -> list[Path]:
    arms = list(result["arms"])
    training = result.get("training", {}).get("arms", {})
    panels = 2 + bool(training)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    palette = arm_palette(arms)
    labels = [arm_label(a).replace(" (", "\n(") for a in arms]

    ax = axes[0][0]  # batch 1: each stage's median stacked, the end-to-end p90 as a whisker on the total
    bottoms = [0.0] * len(arms)
    for key, name, colour in STAGES:
        vals = [result["arms"][a]["stages"][key]["p50_ms"] for a in arms]
        ax.bar(labels, vals, bottom=bottoms, label=name, color=colour)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    tops = []
    for i, a in enumerate(arms):
        total = result["arms"][a]["total"]
        ax.errorbar(i, total["p50_ms"], yerr=[[0], [max(0.0, total["p90_ms"] - total["p50_ms"])]], color="black",
                    capsize=4, lw=1)
        tops.append(max(bottoms[i], total["p90_ms"]))
        ax.annotate(f"p50 {total['p50_ms']:.3g} ms\np90 {total['p90_ms']:.3g} ms", (i, tops[-1]), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.55 * max(tops))  # room for the labels, then the legend above them
    ax.set_ylabel("time per request, batch 1 (ms)")
    ax.set_title(f"Inference latency, {result['frames']}-frame video, {result['caption_tokens']} tokens, batch 1",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=3, handlelength=1)
    ax.tick_params(axis="x", labelsize=8)

    ax = axes[0][1]  # the batch-size sweep: end-to-end median per sample, p90 as a band
    for a in arms:
        sweep = result["arms"][a]["batch_sweep"]
        sizes = sorted(sweep, key=int)
        b = [int(s) for s in sizes]
        p50 = [sweep[s]["total"]["p50_ms"] / int(s) for s in sizes]
        p90 = [sweep[s]["total"]["p90_ms"] / int(s) for s in sizes]
        ax.plot(b, p50, marker="o", color=palette[a], label=arm_label(a))
        ax.fill_between(b, p50, p90, color=palette[a], alpha=0.2)
    ax.set_xscale("log", base=2)
    sizes = sorted({int(s) for a in arms for s in result["arms"][a]["batch_sweep"]})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("end-to-end time per sample (ms)")
    ax.set_title("Batch sweep: p50 per sample (band: to p90)", fontsize=10)
    ax.legend(fontsize=8)

    if training:
        ax = axes[0][2]
        vals = [training[a]["samples_per_s"] for a in training]
        ax.bar([arm_label(a).replace(" (", "\n(") for a in training], vals, color=[palette.get(a, "grey") for a in training])
        for i, a in enumerate(training):
            ax.text(i, vals[i], f"{vals[i]:.0f}/s\nMFU {100 * training[a]['mfu']:.0f}%\n"
                                f"matmul {100 * training[a]['matmul_share']:.0f}%", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("training samples / s")
        ax.set_title(f"Training throughput ({result['dtype']}, {result['threads']} threads)", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylim(0, max(vals) * 1.45)
    fig.tight_layout()
    return save(fig, out_dir, "latency")
