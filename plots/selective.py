"""Selective decoding figure (the paper's Figure 5 style) from selective_decoding.jsonl rows."""
from __future__ import annotations

from pathlib import Path

from plots.style import plt, save

STRATEGY_COLOURS = {"uniform": "#7f7f7f", "adaptive": "#1f77b4"}
POOLING_STYLES = {"exact": "-", "mean": "--"}


def selective_figure(rows: list[dict], out_dir: Path, ceiling: float | None = None,
                     annotation_hz: float | None = None) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6, 4))
    for (strategy, pooling) in sorted({(r["strategy"], r["pooling"]) for r in rows}):
        pts = sorted((r["rate_hz"], r["cider"]) for r in rows if r["strategy"] == strategy and r["pooling"] == pooling)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], POOLING_STYLES.get(pooling, ":"), marker="o", markersize=4,
                color=STRATEGY_COLOURS.get(strategy), label=f"{strategy}, {pooling} embedding")
    if annotation_hz:
        ax.axvline(annotation_hz, color="#2ca02c", lw=0.8, ls=":", label=f"annotation rate ({annotation_hz:.2f} Hz)")
    top = max(r["cider"] for r in rows)
    if ceiling is not None and ceiling <= 1.5 * top:
        ax.axhline(ceiling, color="k", lw=0.8, ls=":", label="Y-decoder ceiling (true text embeddings)")
    title = "Selective decoding of long streams"
    if ceiling is not None and ceiling > 1.5 * top:  # off the curves' scale: say it instead of squashing them
        title += f"\n(Y-decoder ceiling, true text embeddings: CIDEr {ceiling:.2f}, off scale)"
    ax.set_xscale("log")
    ax.set_xlabel("average decoding rate (decodes per second of video, log)")
    ax.set_ylabel("CIDEr of annotations vs nearest decode")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, out_dir, "selective_decoding")
