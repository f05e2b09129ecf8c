"""Heatmap PNGs for the leaderboard: layer x site and layer x head, one panel per metric.

Panels of one metric share a colour scale across a page's figures; a panel whose cells are all
alike is named in the caption instead of drawn; the last layer's residual-stream cell, which
copies the donor by construction, is hatched and labelled.

A sweep over 36 layers and 4 sites is 144 numbers per metric; a heatmap shows at a glance
where along the depth a behaviour flips, which a table cannot. Files are written to a
temporary name and renamed, like the page.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from formats.files import save_figure  # noqa: E402

_ANNOTATE_MAX_CELLS = 300


@dataclass
class Panel:
    """One heatmap: ``values[(row, col)]``; missing cells are left blank. ``marks``: cells to
    hatch with a word (the last layer's residual stream: "by construction"); ``scale``: the
    colour range, shared by every panel of one metric (``shared_scales``)."""

    title: str
    rows: Sequence[str]
    cols: Sequence[int | str]
    values: dict[tuple[str, int | str], float | None]
    xlabel: str = "layer"
    ylabel: str = "site"
    marks: dict[tuple[str, int | str], str] = field(default_factory=dict)
    scale: tuple[float, float] | None = None

    def finite(self) -> list[float]:
        return [v for v in self.values.values() if v is not None and math.isfinite(v)]

    @property
    def constant(self) -> float | None:
        """The one value of a panel whose cells (two or more) are all alike, else None."""
        values = self.finite()
        return values[0] if len(values) > 1 and len(set(values)) == 1 else None


def value_range(values: Sequence[float]) -> tuple[float, float]:
    """The colour range of a metric: [0, 1] for rates and fractions (so panels compare), else
    from 0 (or the least value, when negative) to the largest."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if 0.0 <= lo and hi <= 1.0:
        return 0.0, 1.0
    lo = min(lo, 0.0)
    return lo, hi if hi > lo else lo + 1.0


def shared_scales(panels: Sequence[Panel]) -> None:
    """Give every panel of one title (one metric) the same colour range, across figures."""
    by_title: dict[str, list[float]] = {}
    for panel in panels:
        by_title.setdefault(panel.title, []).extend(panel.finite())
    for panel in panels:
        panel.scale = value_range(by_title[panel.title])


def _draw(ax: plt.Axes, panel: Panel) -> None:
    grid = np.full((len(panel.rows), len(panel.cols)), np.nan)
    for i, row in enumerate(panel.rows):
        for j, col in enumerate(panel.cols):
            value = panel.values.get((row, col))
            if value is not None:
                grid[i, j] = value
    lo, hi = panel.scale or value_range(panel.finite())
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", vmin=lo,
                      vmax=hi, interpolation="nearest")
    ax.set_xticks(range(len(panel.cols)), [str(c) for c in panel.cols],
                  fontsize=7 if len(panel.cols) > 20 else 9)
    ax.set_yticks(range(len(panel.rows)), list(panel.rows))
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    annotate = grid.size <= _ANNOTATE_MAX_CELLS
    for (row, col), word in panel.marks.items():
        if row in panel.rows and col in panel.cols:
            i, j = list(panel.rows).index(row), list(panel.cols).index(col)
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                   edgecolor=(1.0, 1.0, 1.0, 0.35), linewidth=0))
            if annotate:
                ax.text(j, i + 0.32, word, ha="center", va="center", fontsize=5.5, color="w",
                        bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.6, "lw": 0})
    if annotate:
        span = hi - lo if hi > lo else 1.0
        for (i, j), value in np.ndenumerate(grid):
            if math.isfinite(value):  # dark text on viridis' bright end, light on its dark end
                color = "k" if (value - lo) / span > 0.6 else "w"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.02)


def save_heatmaps(panels: list[Panel], title: str, path: Path) -> Path:
    """Stack ``panels`` vertically in one PNG at ``path`` (written atomically). A panel whose
    cells are all alike is not drawn: the figure's caption names it and its value."""
    drawn = [p for p in panels if p.constant is None] or panels[:1]
    dropped = [p for p in panels if p not in drawn]
    width = max(6.0, 0.35 * max(len(p.cols) for p in drawn) + 2.5)
    heights = [0.45 * len(p.rows) + 1.6 for p in drawn]
    fig, axes = plt.subplots(len(drawn), 1, figsize=(width, sum(heights) + 0.3 * bool(dropped)),
                             dpi=100, squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, panel in zip(axes[:, 0], drawn, strict=True):
        _draw(ax, panel)
    fig.suptitle(textwrap.fill(title, int(width * 10)))  # about 10 characters per inch
    if dropped:
        fig.text(0.5, 0.005, "not drawn, the same in every cell: " + "; ".join(
            f"{p.title} = {p.constant:.2f}" for p in dropped), ha="center", va="bottom",
            fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.03 if dropped else 0, 1, 1))
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
