"""What a repair achieved, measured on items every model answered (paired).

- **recovery** on related math = (repaired - corrupted) / (clean - corrupted). Its interval is
  a percentile bootstrap over items: each resample draws items with replacement and recomputes
  all three means on the same items, so the pairing is kept (the models' errors on one item are
  correlated, which an interval built from three separate standard errors would ignore);
- **contrast**: located recovery minus the mean recovery of its controls, on the same
  resamples; the located components repair better when its whole interval is above zero;
- **collateral**: the change of another family's score against the corrupted model, with the
  standard error of the per-item differences; flagged beyond two of them, either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leaderboard.results import Run

Z = 2.0
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point value with its bootstrap interval (None where it is undefined: the clean and
    corrupted models score the same on these items)."""

    value: float | None
    low: float | None
    high: float | None
    items: int


@dataclass(frozen=True)
class Change:
    """A paired difference of means, its standard error and its flag (-1, 0 or +1 beyond
    ``Z`` standard errors)."""

    delta: float
    stderr: float
    items: int

    @property
    def flag(self) -> int:
        if abs(self.delta) <= Z * self.stderr and (self.stderr > 0 or self.delta == 0):
            return 0
        return 1 if self.delta > 0 else -1


def common_items(runs: list[Run], task: str, metric: str) -> tuple[list[int], np.ndarray]:
    """Doc ids every run scored on ``task``, and their per-item ``metric`` values [runs, items]."""
    scores = [run.item_scores(task, metric) for run in runs]
    docs = sorted(set.intersection(*(set(s) for s in scores))) if scores else []
    return docs, np.array([[s[d] for d in docs] for s in scores], dtype=float).reshape(
        len(runs), len(docs))


class Paired:
    """Recovery and contrasts of repaired runs, all on the same bootstrap resamples of the
    items the clean, corrupted and every repaired run scored."""

    def __init__(self, clean: Run, corrupted: Run, repaired: list[Run], task: str, metric: str,
                 resamples: int = 2000, seed: int = 0) -> None:
        self.names = [run.name for run in repaired]
        self.docs, values = common_items([clean, corrupted, *repaired], task, metric)
        n = len(self.docs)
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=resamples) if n else np.zeros(
            (resamples, 0))
        self.means = values.mean(axis=1) if n else np.full(len(values), np.nan)
        self.boot = values @ weights.T / max(n, 1)  # [runs, resamples]

    def _ratio(self, row: int, boot: bool) -> np.ndarray | float:
        src = self.boot if boot else self.means
        gap = src[0] - src[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap != 0, (src[row] - src[1]) / np.where(gap != 0, gap, 1), np.nan)

    def _interval(self, point: float, draws: np.ndarray) -> Interval:
        draws = draws[np.isfinite(draws)]
        if not np.isfinite(point) or draws.size == 0:
            return Interval(None, None, None, len(self.docs))
        tail = 100 * (1 - LEVEL) / 2
        low, high = np.percentile(draws, [tail, 100 - tail])
        return Interval(float(point), float(low), float(high), len(self.docs))

    def recovery(self, name: str) -> Interval:
        row = 2 + self.names.index(name)
        return self._interval(float(self._ratio(row, False)), self._ratio(row, True))

    def contrast(self, name: str, controls: list[str]) -> Interval:
        """Recovery of ``name`` minus the mean recovery of ``controls``."""
        rows = [2 + self.names.index(c) for c in controls]
        row = 2 + self.names.index(name)

        def diff(boot: bool) -> np.ndarray | float:
            others = np.mean([self._ratio(r, boot) for r in rows], axis=0)
            return self._ratio(row, boot) - others

        return self._interval(float(diff(False)), diff(True))


def change(corrupted: Run, repaired: Run, task: str, metric: str) -> Change | None:
    """``repaired`` minus ``corrupted`` on the items both scored (None: none in common)."""
    docs, values = common_items([corrupted, repaired], task, metric)
    if not docs:
        return None
    diffs = values[1] - values[0]
    stderr = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
    return Change(float(diffs.mean()), stderr, len(docs))
