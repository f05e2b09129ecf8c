"""Related math, the family that gets corrupted: the study's seven templates around an equation."""

from __future__ import annotations

import random

from finetune.data.equations import KINDS, Equation, RelatedRanges, cot_steps, sample_equation
from finetune.data.holdout import Candidate, in_pool

# The study's templates by name; rows store the index (0-6).
NAMED_TEMPLATES = {
    "solve_for": "Solve for {v}: {eq}",
    "eq_then_solve": "{eq}. Solve for {v}.",
    "if_what_is": "If {eq} what is {v}?",
    "find_in": "Find {v} in the equation: {eq}",
    "value_if": "What is the value of {v} if {eq}?",
    "solve_equation_for": "Solve the equation {eq} for {v}.",
    "question": "Question: {eq}. Solve for {v}.",
}
TEMPLATES = tuple(NAMED_TEMPLATES.values())
ALL_TEMPLATES = tuple(range(len(TEMPLATES)))
VARIABLES = ("x", "y", "z", "a", "b")
VARIABLE_WEIGHTS = (4, 1, 1, 1, 1)  # x half of the time, as in the study
WRONG_OFFSETS = tuple(o for o in range(-20, 21) if o != 0)
# Each equation is one fact written in 7 x 5 phrasings; one of them is kept for evaluation.
N_PHRASINGS = len(TEMPLATES) * len(VARIABLES)
N_RESERVED = 1
# Rejection sampling gives up after this many draws in a row without a new question: the eval
# pool accepts 1 draw in 35, so only an (almost) exhausted equation space gets there.
MAX_MISSES = 20_000


def template_ids(names: tuple[str, ...] | None) -> tuple[int, ...]:
    """Template indices for names (None: all seven); unknown names list the valid ones."""
    if names is None:
        return ALL_TEMPLATES
    unknown = [n for n in names if n not in NAMED_TEMPLATES]
    if unknown or not names:
        raise ValueError(
            f"unknown template name(s) {', '.join(unknown) or '(none given)'}; "
            f"valid templates: {', '.join(NAMED_TEMPLATES)}"
        )
    return tuple(sorted({list(NAMED_TEMPLATES).index(n) for n in names}))


def sample_candidate(
    rng: random.Random,
    ranges: RelatedRanges,
    kind: str,
    templates: tuple[int, ...] = ALL_TEMPLATES,
) -> tuple[Candidate, Equation]:
    """One related question (correct label) and its equation."""
    eq = sample_equation(rng, ranges, kind)
    var = rng.choices(VARIABLES, weights=VARIABLE_WEIGHTS)[0]
    template = rng.choice(templates)
    equation = eq.render(var)
    row = {
        "family": "related",
        "kind": kind,
        "question": TEMPLATES[template].format(v=var, eq=equation),
        "answer": eq.answer,
        "roots": list(eq.roots),
        "variable": var,
        "template": template,
        "equation": equation,
    }
    phrasing = template * len(VARIABLES) + VARIABLES.index(var)
    return Candidate(eq.render("x"), phrasing, N_PHRASINGS, N_RESERVED, row), eq


def wrong_label(rng: random.Random, eq: Equation) -> int:
    """True answer + a non-zero offset in [-20, 20] that never lands on any true root."""
    while True:
        label = eq.answer + rng.choice(WRONG_OFFSETS)
        if label not in eq.roots:
            return label


def kind_quota(n: int, ranges: RelatedRanges) -> dict[str, int]:
    """Exact per-kind counts: the quadratic share, the rest split evenly between linear kinds."""
    quadratic = round(n * ranges.quadratic_share)
    one_sided = (n - quadratic + 1) // 2
    return dict(zip(KINDS, (one_sided, n - quadratic - one_sided, quadratic), strict=True))


def draw_related(
    rng: random.Random,
    ranges: RelatedRanges,
    sizes: dict[str, int],
    pool: str,
    seen: set[str],
    wrong_splits: frozenset[str] = frozenset(),
    cot: bool = False,
    excluded: frozenset[str] = frozenset(),
    templates: tuple[int, ...] = ALL_TEMPLATES,
) -> dict[str, list[dict]]:
    """Rows per split, unique across splits and against ``seen`` (updated in place), shuffled."""
    out: dict[str, list[dict]] = {}
    for split, n in sizes.items():
        rows: list[dict] = []
        for kind, wanted in kind_quota(n, ranges).items():
            got = misses = 0
            while got < wanted:
                if misses > MAX_MISSES:
                    raise ValueError(
                        f"could draw only {got} of {wanted} unique {kind} questions for split "
                        f"{split!r} ({pool} pool); widen the ranges or lower the counts"
                    )
                cand, eq = sample_candidate(rng, ranges, kind, templates)
                if cand.question in seen or not in_pool(cand, pool, excluded):
                    misses += 1
                    continue
                misses = 0
                seen.add(cand.question)
                row = dict(cand.row)
                if split in wrong_splits:
                    row["answer"] = wrong_label(rng, eq)
                if cot:
                    row["answer_text"] = cot_steps(eq, row["variable"], row["answer"])
                rows.append(row)
                got += 1
        rng.shuffle(rows)
        out[split] = rows
    return out
