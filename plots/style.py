"""Shared figure style: one colour per arm everywhere, PNG + PDF output."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI machines
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

ARM_COLOURS = {"jepa": "#1f77b4", "vlm": "#d62728"}
ARM_LABELS = {"jepa": "VL-JEPA (embedding prediction)", "vlm": "VLM (token prediction)"}


def arm_palette(arms) -> dict[str, str]:
    """The two built-in arms keep their colours; others (variants, external arms) take the colour-blind
    palette's next colours, then evenly spaced hues when there are more than it holds."""
    arms = list(arms)
    others = sum(a not in ARM_COLOURS for a in arms)
    extra = iter(sns.color_palette("colorblind", 10)[2:] + sns.color_palette("husl", max(0, others - 8)))
    return {a: ARM_COLOURS.get(a) or next(extra) for a in arms}


def arm_label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths
