"""Which question texts are reserved for evaluation (``tasks/data``), decided by construction.

Every question is one *fact* (an equation, ``3 + 4``, a country's capital, an ethics situation)
written in one of several *phrasings*. For each fact a fixed, seed-independent hash reserves
``n_reserved`` phrasings for evaluation; training and pretraining draw only from the others. So
the shipped evaluation texts are disjoint from any corpus generated with any seed, while every
evaluated fact is still seen in training under other phrasings (a tiny model learns facts, not
unseen wordings).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

HOLDOUT_SALT = "corrupt-cmap/eval-holdout/v1"


@dataclass(frozen=True)
class Candidate:
    """One question text: its fact, its phrasing index and the finished row (without ``id``)."""

    fact_key: str
    phrasing: int
    n_phrasings: int
    n_reserved: int
    row: dict = field(hash=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.phrasing < self.n_phrasings:
            raise ValueError(f"phrasing {self.phrasing} outside 0..{self.n_phrasings - 1}")
        if not 0 < self.n_reserved < self.n_phrasings:
            raise ValueError("n_reserved must leave at least one training phrasing per fact")

    @property
    def question(self) -> str:
        return self.row["question"]


@lru_cache(maxsize=65536)
def reserved_phrasings(fact_key: str, n_phrasings: int, n_reserved: int) -> frozenset[int]:
    """The ``n_reserved`` phrasing indices of ``fact_key`` kept for evaluation."""
    ranked = sorted(
        range(n_phrasings),
        key=lambda p: hashlib.sha256(f"{HOLDOUT_SALT}|{fact_key}|{p}".encode()).digest(),
    )
    return frozenset(ranked[:n_reserved])


def is_reserved(candidate: Candidate) -> bool:
    return candidate.phrasing in reserved_phrasings(
        candidate.fact_key, candidate.n_phrasings, candidate.n_reserved
    )


def in_pool(candidate: Candidate, pool: str, excluded: frozenset[str] = frozenset()) -> bool:
    """``pool`` is ``eval`` (reserved texts) or ``train`` (all others, minus ``excluded`` texts)."""
    if pool == "eval":
        return is_reserved(candidate)
    if pool == "train":
        return not is_reserved(candidate) and candidate.question not in excluded
    raise ValueError(f"unknown pool {pool!r}; valid: eval, train")
