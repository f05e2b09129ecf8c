"""The findings' figures: where patching flips related math (the across-seed mean, then each
seed), and the three localisations side by side."""

from __future__ import annotations

from pathlib import Path

from formats.files import save_figure
from leaderboard.plots import Panel, save_heatmaps
from leaderboard.tables import SITE_ORDER
from repair.localise import METHODS

from .findings import DIRECTION, Condition, mean_localisation

NAMES = {"patching": "patching flip rate", "weights": "weight change ‖ΔW‖/‖W‖",
         "restore": "recovery, restored alone"}


def where_heatmap(c: Condition, path: Path) -> Path | None:
    """Flip rate of related math by site and layer: the mean over seeds, then one panel per
    seed; the last layer's resid cell marked. None when nothing was swept."""
    if not c.flips:
        return None
    rows = sorted({site for site, _ in c.flips}, key=SITE_ORDER.get)
    cols = sorted({layer for _, layer in c.flips})
    marks = {cell: "by construction" for cell in c.by_construction}
    mean = Panel(f"flip rate, mean of {c.n} seed{'s' if c.n != 1 else ''}", rows, cols,
                 {cell: agg.mean for cell, agg in c.flips.items()}, marks=marks)
    seeds = [Panel(f"flip rate, {label}", rows, cols,
                   {cell: agg.values[i] for cell, agg in c.flips.items()}, marks=marks)
             for i, label in enumerate(c.labels)] if c.n > 1 else []
    panels = [mean, *seeds]
    for panel in panels:  # one metric, one scale: a rate
        panel.scale = (0.0, 1.0)
    return save_heatmaps(panels, f"{c.name}: related math, {DIRECTION} (flipped / differing)",
                         path)


def localisation_plot(conditions: list[Condition], path: Path) -> Path | None:
    """Per condition (rows) and method (columns), each block's score by layer: the mean over
    seeds as bars, each seed as a dot; every method on its own scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [(c, loc) for c in conditions if (loc := mean_localisation(c, "block")) is not None
             and any(v is not None for m in ("patching", "restore") for v in loc.scores[m])]
    if not drawn:
        return None
    fig, axes = plt.subplots(len(drawn), len(METHODS), figsize=(3.6 * len(METHODS),
                                                                 2.5 * len(drawn)),
                             squeeze=False)
    for row, (c, loc) in enumerate(drawn):
        for col, method in enumerate(METHODS):
            ax = axes[row][col]
            layers = list(loc.layers)
            means = [v if v is not None else 0.0 for v in loc.scores[method]]
            scored = [v is not None for v in loc.scores[method]]
            ax.bar(layers, means, color=["tab:blue" if s else "white" for s in scored],
                   edgecolor="tab:blue", alpha=0.6)
            for seed in c.per_seed["block"]:
                ax.scatter([x for x, v in zip(layers, seed.scores[method], strict=True)
                            if v is not None],
                           [v for v in seed.scores[method] if v is not None], s=10, color="k",
                           zorder=3)
            if not any(scored):
                ax.text(0.5, 0.5, "not measured", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8)
            elif method == "patching" and not scored[-1]:
                ax.text(layers[-1], 0, "by\nconstruction", ha="center", va="bottom",
                        fontsize=6, color="gray")
            ax.axhline(0, color="k", lw=0.5)
            ax.set_xticks(layers, [f"L{x}" for x in layers], fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"{c.name}: {NAMES[method]}", fontsize=9)
    fig.suptitle("Blocks by layer, three localisations (bars: mean over seeds; dots: seeds; "
                 "patching scores no last block: by construction)", fontsize=9)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
