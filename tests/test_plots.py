"""Figures draw what the rows say: values, units, panels from the metric declarations."""
import matplotlib
import numpy as np
import pytest

import plots.curves
import plots.selective
from shared.evaluation.metrics import METRICS, Metric

matplotlib.use("Agg")

ROWS = [{"arm": arm, "seed": seed, "samples_seen": s, "cider": c + 0.1 * seed, "top5": t + 0.02 * seed}
        for arm, (c, t) in {"jepa": (0.2, 0.3), "vlm": (0.5, 0.1)}.items()
        for seed in (0, 1) for s in (64, 128, 256)]


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """The figures a plotting call makes, saved as usual and kept open for inspection."""
    figures = []

    def keep(fig, out_dir, name):
        figures.append(fig)
        fig.savefig(tmp_path / f"{name}.png")
        return [tmp_path / f"{name}.png"]

    for module in (plots.curves, plots.selective):
        monkeypatch.setattr(module, "save", keep)
    return figures


def line(ax, label):
    return next(ln for ln in ax.get_lines() if ln.get_label() == label)


def test_sample_efficiency_draws_the_mean_over_seeds_in_declared_units(drawn, tmp_path):
    plots.curves.sample_efficiency(ROWS, {"chance_top5": 0.05}, tmp_path)
    (fig,) = drawn
    cider_ax, top5_ax = [ax for ax in fig.axes if ax.get_visible()]
    assert "CIDEr" in cider_ax.get_title() and "Top-5" in top5_ax.get_title()
    def curves(ax):  # one line of 3 milestones per arm, by its first value
        return sorted(np.round(ln.get_ydata(), 6).tolist() for ln in ax.get_lines() if len(ln.get_xdata()) == 3)

    assert curves(cider_ax) == [[0.25] * 3, [0.55] * 3]  # the mean of seeds 0 and 1
    assert curves(top5_ax) == [[11.0] * 3, [31.0] * 3]  # declared percent: x100
    chance = [ln for ln in top5_ax.get_lines() if ln.get_label() == "chance"]
    assert chance and np.allclose(chance[0].get_ydata(), 5.0)
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 10_000


def test_rows_with_training_flops_get_a_compute_row(drawn, tmp_path):
    per_sample = {"jepa": 1e6, "vlm": 3e6}
    rows = [dict(r, train_flops=per_sample[r["arm"]] * r["samples_seen"]) for r in ROWS]
    plots.curves.sample_efficiency(rows, {}, tmp_path)
    axes = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert len(axes) == 4 and "FLOPs" in axes[2].get_xlabel() and axes[2].get_xscale() == "log"
    xs = sorted(tuple(ln.get_xdata()) for ln in axes[2].get_lines() if len(ln.get_xdata()) == 3)
    assert xs == [(64e6, 128e6, 256e6), (192e6, 384e6, 768e6)]  # each arm at its own cost


def test_a_declared_headline_metric_gets_its_own_panel(drawn, tmp_path):
    METRICS.append(Metric("recall1", "R@1 %", percent=True, headline=True))
    try:
        rows = [dict(r, recall1=0.5) for r in ROWS]
        plots.curves.sample_efficiency(rows, {}, tmp_path)
    finally:
        METRICS.pop()
    axes = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert len(axes) == 3 and axes[2].get_title() == "R@1 %"
    assert all(np.allclose(ln.get_ydata(), 50.0) for ln in axes[2].get_lines() if len(ln.get_xdata()) == 3)


def test_meaning_accuracy_gets_a_panel_with_its_reference_lines_only_where_rows_hold_it(drawn, tmp_path):
    rows = [dict(r, meaning=0.1 * (1 + (r["arm"] == "vlm"))) for r in ROWS]
    base = {"most_frequent_caption_cider": 0.17, "most_frequent_caption_meaning": 0.004,
            "template_colour_shape_cider": 0.74, "template_colour_shape_meaning": 0.083}
    plots.curves.sample_efficiency(rows, base, tmp_path)
    cider_ax, top5_ax, meaning_ax = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert "meaning" in meaning_ax.get_title()
    assert sorted(ln.get_ydata()[0] for ln in meaning_ax.get_lines() if len(ln.get_xdata()) == 3) == [10.0, 20.0]
    assert np.allclose(line(meaning_ax, "true colour + shape, fixed action").get_ydata(), 8.3)
    assert np.allclose(line(meaning_ax, "most frequent caption").get_ydata(), 0.4)
    assert np.allclose(line(cider_ax, "true colour + shape, fixed action").get_ydata(), 0.74)
    plots.curves.sample_efficiency(ROWS, base, tmp_path)  # manifest data: no meaning column, no empty panel
    assert len(drawn[1].axes) == 2


def test_selective_figure_has_one_curve_per_strategy_and_pooling(drawn, tmp_path):
    rows = [{"strategy": s, "pooling": p, "rate_hz": hz, "cider": c * hz}
            for s, c in (("uniform", 0.1), ("adaptive", 0.2)) for p in ("exact", "mean") for hz in (0.1, 1.0)]
    plots.selective.selective_figure(rows, tmp_path, ceiling=0.3, annotation_hz=0.5)
    ax = drawn[0].axes[0]
    labels = {ln.get_label() for ln in ax.get_lines()}
    assert {"uniform, exact embedding", "adaptive, mean embedding"} <= labels
    assert np.allclose(line(ax, "adaptive, exact embedding").get_ydata(), [0.02, 0.2])
    assert ax.get_xscale() == "log"


def test_report_publishes_the_main_figure(tmp_path):
    """`report --publish DIR` redraws a run folder and copies its figure (how the README's is made)."""
    import json

    from experiments.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(json.dumps(dict(r, milestone=r["samples_seen"], trainable_params=10))
                                               + "\n" for r in ROWS))
    (out / "config.yaml").write_text(json.dumps({"data": {"source": "manifest", "manifest": {"path": "m"}, "frames": 2,
                                                          "query": "q"},
                                                 "encoder": {"model": "e", "image_size": 8, "weights": "w"},
                                                 "lm": {"weights": "l"}, "eval": {"split": "test"},
                                                 "train": {"effective_batch": 2, "lr": 1, "schedule": "constant",
                                                           "mixed_precision": "no"}}))
    assert main(["report", "--out", str(out), "--publish", str(tmp_path / "docs")]) == 0
    assert (tmp_path / "docs" / "sample_efficiency.png").stat().st_size > 10_000


def test_three_arms_get_a_curve_and_a_colour_each(drawn, tmp_path):
    """An arm beside jepa and vlm (a plugin, a variant) is drawn like them, in a colour of its own."""
    rows = ROWS + [dict(r, arm="regress", cider=r["cider"] + 1.0) for r in ROWS if r["arm"] == "jepa"]
    plots.curves.sample_efficiency(rows, {}, tmp_path)
    plots.curves.parameters({"jepa": 1, "vlm": 3, "regress": 2}, tmp_path)
    curves, bars = drawn
    cider_ax = next(ax for ax in curves.axes if ax.get_visible())
    drawn_lines = [ln for ln in cider_ax.get_lines() if len(ln.get_xdata()) == 3]
    assert sorted(round(float(ln.get_ydata()[0]), 6) for ln in drawn_lines) == [0.25, 0.55, 1.25]
    assert len({ln.get_color() for ln in drawn_lines}) == 3
    assert "regress" in [t.get_text() for t in cider_ax.get_legend().get_texts()]
    assert len({tuple(p.get_facecolor()) for p in bars.axes[0].patches}) == 3
