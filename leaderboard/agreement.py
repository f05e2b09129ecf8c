"""How often a variant's replies equal the clean or the corrupted model's, item by item.

Metrics say how often a model is right; agreement says WHOSE behaviour a patched model shows,
which is the question of the study (a patched reply can be wrong without being the corrupted
model's wrong reply). Two measures, computed from lm-eval's logged samples:
exact reply match (after stripping whitespace), and final-integer match (two replies with no
integer count as matching), the integer read as the chosen metric reads it
(``leaderboard.metric``: the final integer under ``strict``, the asserted one under
``answer_match``). For multiple-choice tasks both measures compare the chosen option.
``verdict_agreement`` compares per-item scores instead (same right/wrong verdict).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .metric import DEFAULT_METRIC
from .results import Run


@dataclass(frozen=True)
class Agreement:
    """Fractions of shared items with equal replies / equal final integers, over ``n`` items."""

    reply: float
    integer: float
    n: int


def _pairs(a: Run, b: Run, tasks: Iterable[str],
           metric: str) -> list[tuple[str, str, Any, Any]]:
    """(reply a, reply b, answer a, answer b) for every item both runs answered: the answers
    are integers of generated replies, the replies themselves for multiple choice."""
    out = []
    for task in tasks:
        if task not in a.output_types or task not in b.output_types:
            continue
        ra, rb = a.replies(task), b.replies(task)
        ia, ib = (a.integers(task, metric), b.integers(task, metric)) \
            if a.output_types[task] == "generate_until" else (ra, rb)
        out += [(ra[d], rb[d], ia[d], ib[d]) for d in sorted(ra.keys() & rb.keys())]
    return out


def agreement(a: Run, b: Run, tasks: Iterable[str],
              metric: str = DEFAULT_METRIC) -> Agreement | None:
    """Agreement of ``a`` with ``b`` over ``tasks`` pooled; None when they share no item."""
    pairs = _pairs(a, b, tasks, metric)
    if not pairs:
        return None
    reply = sum(x.strip() == y.strip() for x, y, _, _ in pairs)
    integer = sum(ix.strip() == iy.strip() if isinstance(ix, str) else ix == iy
                  for _, _, ix, iy in pairs)
    return Agreement(reply / len(pairs), integer / len(pairs), len(pairs))


def verdict_agreement(a: Run, b: Run, task: str, metric: str) -> float | None:
    """Fraction of the items both runs scored with ``metric`` where their scores are equal;
    None when they share no such item."""
    sa, sb = a.item_scores(task, metric), b.item_scores(task, metric)
    shared = sa.keys() & sb.keys()
    return sum(sa[d] == sb[d] for d in shared) / len(shared) if shared else None
