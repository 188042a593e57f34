"""Sample-efficiency figures (the paper's Figure 3, left and middle) from metrics.jsonl."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.ticker import FixedLocator, NullFormatter

from plots.style import arm_label, arm_palette, plt, save, sns
from shared.evaluation.metrics import METRICS


def human(n: float) -> str:
    """2048 -> '2,048', 500000 -> '500k', 1500000 -> '1.5M': readable sample counts."""
    if n < 1e5:
        return f"{int(n):,}"
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


def sample_axis(ax, samples) -> None:
    ticks = sorted(set(samples))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([human(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["Arm"] = df["arm"].map(arm_label)
    return df


PANEL_TITLES = {"cider": "Captioning CIDEr", "top5": "Top-5 classification accuracy (%)",
                "meaning": "Caption meaning accuracy (%)"}


def flops_axis(ax, total: bool = False) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("total FLOPs (step, frozen encoder, side models, text pretraining)" if total
                  else "training FLOPs (forward + backward)")


def sample_efficiency(rows: list[dict], baselines: dict, out_dir: Path) -> list[Path]:
    """CIDEr and top-5 vs samples seen, one line per arm (mean over seeds, band = min..max); a
    second row against the training FLOPs spent, where the rows record them (the compute axis)."""
    df = _frame(rows)
    palette = {arm_label(a): c for a, c in arm_palette(df["arm"].unique()).items()}
    n_seeds = df["seed"].nunique()
    # the headline metrics the rows hold (meaning accuracy only where the data reads captions back)
    metrics = [m for m in METRICS if m.headline and m.key in df and df[m.key].notna().any()]
    axes_x = [("samples_seen", "training samples seen")]
    if "total_flops" in df and df["total_flops"].notna().all():  # the whole compute (shared/profiling/flops.py)
        axes_x.append(("total_flops", "total FLOPs"))
    elif "train_flops" in df and df["train_flops"].notna().all():
        axes_x.append(("train_flops", "training FLOPs"))
    fig, axes = plt.subplots(len(axes_x), len(metrics), figsize=(5.5 * len(metrics), 4.2 * len(axes_x)), squeeze=False)
    for (x, x_label), panel_row in zip(axes_x, axes):
        for m, ax in zip(metrics, panel_row):
            _panel(ax, df, m, x, palette, n_seeds, baselines)
            if x == "samples_seen":
                sample_axis(ax, df["samples_seen"])
                ax.set_xlabel(x_label)
            else:
                flops_axis(ax, total=x == "total_flops")
            ax.set_title(f"{PANEL_TITLES.get(m.key, m.label)} vs {x_label}" if len(axes_x) > 1
                         else PANEL_TITLES.get(m.key, m.label))
    seeds = f"{n_seeds} seed{'s' if n_seeds > 1 else ''}" + (" (band: min-max)" if n_seeds > 1 else "")
    fig.suptitle(f"Sample efficiency: embedding vs token prediction, {seeds}", fontsize=11)
    fig.tight_layout()
    return save(fig, out_dir, "sample_efficiency")


def _panel(ax, df, m, x: str, palette, n_seeds: int, baselines: dict) -> None:
    metric, title = m.key, PANEL_TITLES.get(m.key, m.label)
    if metric not in df:
        ax.set_visible(False)
        return
    d = df.assign(value=df[metric] * (100 if m.percent else 1))
    sns.lineplot(data=d, x=x, y="value", hue="Arm", palette=palette, marker="o",
                 errorbar=("pi", 100) if n_seeds > 1 else None, ax=ax)
    if metric == "top5" and "chance_top5" in baselines:
        ax.axhline(100 * baselines["chance_top5"], ls=":", c="grey", label="chance")
    if metric == "cider":
        if "most_frequent_caption_cider" in baselines:
            ax.axhline(baselines["most_frequent_caption_cider"], ls=":", c="grey", label="most frequent caption")
        if "human_ceiling_cider" in baselines:
            ax.axhline(baselines["human_ceiling_cider"], ls="--", c="black", lw=0.8, label="reference vs others")
    if metric in ("cider", "meaning"):
        scale = 100 if m.percent else 1
        if metric == "meaning" and "most_frequent_caption_meaning" in baselines:
            ax.axhline(scale * baselines["most_frequent_caption_meaning"], ls=":", c="grey", label="most frequent caption")
        if f"template_colour_shape_{metric}" in baselines:
            ax.axhline(scale * baselines[f"template_colour_shape_{metric}"], ls="-.", c="grey", lw=0.8,
                       label="true colour + shape, fixed action")
    ax.set_ylabel(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def parameters(params: dict[str, int], out_dir: Path) -> list[Path]:
    arms = list(params)
    palette = arm_palette(arms)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    values = [params[a] / 1e6 for a in arms]
    ax.bar([arm_label(a) for a in arms], values, color=[palette[a] for a in arms])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.2f}M", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("trainable parameters (millions)")
    ax.set_title("Trainable parameters per arm")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return save(fig, out_dir, "parameters")


def sweep_lines(rows: list[dict], out_dir: Path, key: str) -> Path:
    """Final-milestone CIDEr and top-5 per arm against one numeric knob (``<key>_sweep.png``)."""
    df = _frame(rows)
    last = df[df["milestone"] == df["milestone"].max()]
    palette = {arm_label(a): c for a, c in arm_palette(df["arm"].unique()).items()}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, title in ((axes[0], "cider", "CIDEr"), (axes[1], "top5", "top-5 accuracy (%)")):
        d = last.assign(value=last[metric] * (100 if metric == "top5" else 1))
        sns.lineplot(data=d, x=key, y="value", hue="Arm", palette=palette, marker="o",
                     errorbar=("pi", 100) if d["seed"].nunique() > 1 else None, ax=ax)
        ax.set_xlabel(SWEEP_LABELS.get(key, key))
        ax.set_ylabel(title)
        ax.set_title(f"{title} at {int(last['samples_seen'].max()):,} samples")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, out_dir, f"{key}_sweep")[0]


def grid_bars(rows: list[dict], out_dir: Path, cells: list[str]) -> Path:
    """Final-milestone CIDEr and top-5 per grid cell (rows' ``cell``) and arm (bars: seed mean, whiskers: range)."""
    df = _frame(rows)
    last = df[df["milestone"] == df["milestone"].max()]
    palette = {arm_label(a): c for a, c in arm_palette(df["arm"].unique()).items()}
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.3 * len(cells) * 2), 4.2))
    for ax, metric, title in ((axes[0], "cider", "CIDEr"), (axes[1], "top5", "top-5 accuracy (%)")):
        d = last.assign(value=last[metric] * (100 if metric == "top5" else 1))
        sns.barplot(data=d, x="cell", y="value", hue="Arm", palette=palette, order=cells,
                    errorbar=("pi", 100) if d["seed"].nunique() > 1 else None, ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel(title)
        ax.set_title(f"{title} at {int(last['samples_seen'].max()):,} samples")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return save(fig, out_dir, "grid")[0]


SWEEP_LABELS = {"paraphrase": "caption surface variability (paraphrase level)"}
