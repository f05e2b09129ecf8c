"""Flip rates: of the items where two models' answers differ, how many a patched run moves to
the donor's. The study summary reports them; the repair stage ranks components by them."""

from __future__ import annotations

from dataclasses import dataclass

from .metric import DEFAULT_METRIC
from .results import Run
from .tables import RELATED


@dataclass(frozen=True)
class Flip:
    """Items whose final integer moved to the donor's, of the items where the models differ."""

    variant: str
    flipped: int
    differing: int

    @property
    def rate(self) -> float:
        return self.flipped / self.differing if self.differing else 0.0


def flip(patched: Run, receiver: Run, donor: Run, task: str = RELATED,
         metric: str = DEFAULT_METRIC) -> Flip:
    """How many of the items where receiver and donor disagree take the donor's integer."""
    got, before, after = (r.integers(task, metric) for r in (patched, receiver, donor))
    differing = flipped = 0
    for doc in got.keys() & before.keys() & after.keys():
        if after[doc] != before[doc]:
            differing += 1
            flipped += got[doc] == after[doc]
    return Flip(patched.name, flipped, differing)
