"""Heatmap PNGs for the leaderboard: layer x site and layer x head, one panel per metric.

A sweep over 36 layers and 4 sites is 144 numbers per metric; a heatmap shows at a glance
where along the depth a behaviour flips, which a table cannot. Files are written to a
temporary name and renamed, like the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from formats.files import save_figure  # noqa: E402

_ANNOTATE_MAX_CELLS = 300


@dataclass
class Panel:
    """One heatmap: ``values[(row, col)]``; missing cells are left blank."""

    title: str
    rows: Sequence[str]
    cols: Sequence[int]
    values: dict[tuple[str, int], float | None]
    xlabel: str = "layer"
    ylabel: str = "site"


def _draw(ax: plt.Axes, panel: Panel) -> None:
    grid = np.full((len(panel.rows), len(panel.cols)), np.nan)
    for i, row in enumerate(panel.rows):
        for j, col in enumerate(panel.cols):
            value = panel.values.get((row, col))
            if value is not None:
                grid[i, j] = value
    finite = grid[np.isfinite(grid)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if 0.0 <= lo and hi <= 1.0:  # rates and fractions share one scale, so panels compare
        lo, hi = 0.0, 1.0
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", vmin=lo,
                      vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_xticks(range(len(panel.cols)), [str(c) for c in panel.cols],
                  fontsize=7 if len(panel.cols) > 20 else 9)
    ax.set_yticks(range(len(panel.rows)), list(panel.rows))
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    if grid.size <= _ANNOTATE_MAX_CELLS:
        span = hi - lo if hi > lo else 1.0
        for (i, j), value in np.ndenumerate(grid):
            if math.isfinite(value):  # dark text on viridis' bright end, light on its dark end
                color = "k" if (value - lo) / span > 0.6 else "w"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.02)


def save_heatmaps(panels: list[Panel], title: str, path: Path) -> Path:
    """Stack ``panels`` vertically in one PNG at ``path`` (written atomically)."""
    width = max(6.0, 0.35 * max(len(p.cols) for p in panels) + 2.5)
    heights = [0.45 * len(p.rows) + 1.6 for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights)), dpi=100,
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        _draw(ax, panel)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
