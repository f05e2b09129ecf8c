"""Across-seed aggregation: one number of a condition from its fine-tune seeds.

A condition (``underfit``) is fine-tuned once per seed (``seeds:`` in a study config; the data
is the same, the data order and any adapter init vary), and each seed's model is scored like
any other. For a number measured on every seed (a score, a flip rate, a recovery) a table shows

- the across-seed mean;
- a 95% interval over seeds: mean ± t(0.975, n-1) · sd / √n (Student t; no interval from one
  seed, where the spread between seeds is unknown), clipped to the quantity's range (a rate
  lies in 0..1);
- the within-run standard error of that mean, from each run's own item-level standard error:
  √(Σ seᵢ²) / n, so a reader sees both how far the seeds disagree and how noisy each run is.

A finding says how many seeds it holds in ("resid L4 flips ≥ 0.5 in 3/3 seeds").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class AcrossSeeds:
    """One measured number on every seed of a condition (seed order); ``stderrs``: each run's
    own standard error where it has one."""

    values: tuple[float, ...]
    stderrs: tuple[float | None, ...] = ()
    bounds: tuple[float, float] | None = None  # the quantity's range (a rate: 0..1), if any

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("AcrossSeeds needs at least one seed's value")
        if self.stderrs and len(self.stderrs) != len(self.values):
            raise ValueError(f"{len(self.values)} values but {len(self.stderrs)} standard errors")

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% t interval over seeds; None from one seed."""
        if self.n < 2:
            return None
        half = float(stats.t.ppf(0.5 + LEVEL / 2, self.n - 1) * np.std(self.values, ddof=1)
                     / math.sqrt(self.n))
        low, high = self.mean - half, self.mean + half
        if self.bounds is not None:  # the mean of a bounded quantity lies within its bounds
            low, high = max(low, self.bounds[0]), min(high, self.bounds[1])
        return low, high

    @property
    def within(self) -> float | None:
        """The within-run standard error of the mean: √(Σ seᵢ²) / n; None unless every run
        has one."""
        if not self.stderrs or any(se is None for se in self.stderrs):
            return None
        return math.sqrt(sum(se * se for se in self.stderrs)) / self.n  # type: ignore[operator]

    def holds(self, test: Callable[[float], bool]) -> int:
        """How many seeds' values pass ``test``."""
        return sum(bool(test(v)) for v in self.values)

    def text(self, digits: int = 2, within: bool = True) -> str:
        """``0.43 [0.35, 0.51] ±0.04`` (mean, interval over seeds, within-run standard error);
        one seed: ``0.43 ±0.04 (1 seed)``."""
        out = f"{self.mean:.{digits}f}"
        if self.interval is not None:
            low, high = self.interval
            out += f" [{low:.{digits}f}, {high:.{digits}f}]"
        if within and self.within is not None:
            out += f" ±{self.within:.{digits}f}"
        return out + (" (1 seed)" if self.n == 1 else "")


def across(values: Sequence[float], stderrs: Sequence[float | None] | None = None,
           bounds: tuple[float, float] | None = None) -> AcrossSeeds:
    """``bounds``: the range the quantity cannot leave (a rate 0..1, a correlation -1..1),
    which clips the t interval (with two seeds it is wide: t(0.975, 1) = 12.7)."""
    return AcrossSeeds(tuple(float(v) for v in values), tuple(stderrs or ()), bounds)


def holds_in(count: int, n: int) -> str:
    """``3/3 seeds``, ``1/1 seed``."""
    return f"{count}/{n} seed{'s' if n != 1 else ''}"


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their average rank); None when either ranking is
    constant (no order to agree with) or there are fewer than 3 components."""
    if len(a) != len(b):
        raise ValueError(f"rankings of {len(a)} and {len(b)} components")
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(stats.spearmanr(a, b).statistic)
