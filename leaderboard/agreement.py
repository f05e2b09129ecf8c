"""How often a variant's replies equal the clean or the corrupted model's, item by item.

Metrics say how often a model is right; agreement says WHOSE behaviour a patched model shows,
which is the question of the study (a patched reply can be wrong without being the corrupted
model's wrong reply). Two measures, computed from lm-eval's logged samples:
exact reply match (after stripping whitespace), and final-integer match (the project's own
answer extractor; two replies with no integer count as matching). For multiple-choice tasks
both measures compare the chosen option.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness_ext.scoring import extract_final_integer

from .results import Run


@dataclass(frozen=True)
class Agreement:
    """Fractions of shared items with equal replies / equal final integers, over ``n`` items."""

    reply: float
    integer: float
    n: int


def _pairs(a: Run, b: Run, tasks: Iterable[str]) -> list[tuple[str, str, bool]]:
    """(reply a, reply b, generative?) for every item both runs answered."""
    out = []
    for task in tasks:
        if task not in a.output_types or task not in b.output_types:
            continue
        ra, rb = a.replies(task), b.replies(task)
        generative = a.output_types[task] == "generate_until"
        out += [(ra[d], rb[d], generative) for d in sorted(ra.keys() & rb.keys())]
    return out


def agreement(a: Run, b: Run, tasks: Iterable[str]) -> Agreement | None:
    """Agreement of ``a`` with ``b`` over ``tasks`` pooled; None when they share no item."""
    pairs = _pairs(a, b, tasks)
    if not pairs:
        return None
    reply = sum(x.strip() == y.strip() for x, y, _ in pairs)
    integer = sum(
        extract_final_integer(x) == extract_final_integer(y) if gen else x.strip() == y.strip()
        for x, y, gen in pairs
    )
    return Agreement(reply / len(pairs), integer / len(pairs), len(pairs))
