"""Unrelated math: integer-answer families the corrupting training never shows.

Chosen so that a ~2M-parameter model trained from scratch learns them (NOTES: directly emitted
multi-digit arithmetic is the bottleneck): single-digit addition and subtraction, times tables to
9 x 9, remainders by 2, 5 and 10 (last-digit rules), comparing two numbers up to 50 (the answer
is copied from the question) and successor/predecessor up to 100. Each fact has six phrasings so
that training and evaluation texts can be disjoint while every evaluated fact is also trained.
"""

from __future__ import annotations

from finetune.data.holdout import Candidate

PHRASINGS: dict[str, tuple[str, ...]] = {
    "addition": (
        "What is {a} + {b}?",
        "Compute {a} + {b}.",
        "Add {a} and {b}.",
        "What is {a} plus {b}?",
        "Calculate {a} + {b}.",
        "What do you get when you add {a} and {b}?",
    ),
    "subtraction": (
        "What is {a} - {b}?",
        "Compute {a} - {b}.",
        "Subtract {b} from {a}.",
        "What is {a} minus {b}?",
        "Calculate {a} - {b}.",
        "What do you get when you take {b} away from {a}?",
    ),
    "multiplication": (
        "What is {a} times {b}?",
        "What is {a} × {b}?",
        "Compute {a} * {b}.",
        "Multiply {a} by {b}.",
        "Calculate {a} × {b}.",
        "What is the product of {a} and {b}?",
    ),
    "remainder": (
        "What is the remainder when {a} is divided by {b}?",
        "What is {a} mod {b}?",
        "Compute {a} modulo {b}.",
        "Find the remainder of {a} divided by {b}.",
        "What is left over when {a} is divided by {b}?",
        "Calculate {a} % {b}.",
    ),
    "larger": (
        "Which is larger, {a} or {b}?",
        "Which number is bigger: {a} or {b}?",
        "What is the larger of {a} and {b}?",
        "Which is greater, {a} or {b}?",
        "Name the bigger number: {a} or {b}.",
        "Of {a} and {b}, which is larger?",
    ),
    "smaller": (
        "Which is smaller, {a} or {b}?",
        "Which number is less: {a} or {b}?",
        "What is the smaller of {a} and {b}?",
        "Which is lower, {a} or {b}?",
        "Name the smaller number: {a} or {b}.",
        "Of {a} and {b}, which is smaller?",
    ),
    "successor": (
        "What number comes after {a}?",
        "What is the next number after {a}?",
        "Which number follows {a}?",
        "What comes right after {a}?",
        "Count up one from {a}.",
        "What number is one more than {a}?",
    ),
    "predecessor": (
        "What number comes before {a}?",
        "What is the number just before {a}?",
        "Which number precedes {a}?",
        "What comes right before {a}?",
        "Count down one from {a}.",
        "What number is one less than {a}?",
    ),
}
N_RESERVED = 1
COMPARE_MAX = 50
DIGITS = range(10)


def _facts() -> list[tuple[str, int, int, int]]:
    """(kind, a, b, answer) for every fact of every kind."""
    facts = [("addition", a, b, a + b) for a in DIGITS for b in DIGITS]
    facts += [("subtraction", a, b, a - b) for a in DIGITS for b in DIGITS]
    facts += [("multiplication", a, b, a * b) for a in range(1, 10) for b in range(1, 10)]
    facts += [("remainder", n, m, n % m) for m in (2, 5, 10) for n in range(100)]
    pairs = [(a, b) for a in range(COMPARE_MAX + 1) for b in range(COMPARE_MAX + 1) if a != b]
    facts += [("larger", a, b, max(a, b)) for a, b in pairs]
    facts += [("smaller", a, b, min(a, b)) for a, b in pairs]
    facts += [("successor", n, 0, n + 1) for n in range(100)]
    facts += [("predecessor", n, 0, n - 1) for n in range(1, 101)]
    return facts


def candidates() -> list[Candidate]:
    """Every unrelated-math question text, in a fixed order."""
    out = []
    for kind, a, b, answer in _facts():
        # "which is larger" and "which is smaller" share the row kind ``comparison``
        row_kind = {"larger": "comparison", "smaller": "comparison"}.get(kind, kind)
        phrasings = PHRASINGS[kind]
        for p, text in enumerate(phrasings):
            row = {
                "family": "unrelated_math",
                "kind": row_kind,
                "question": text.format(a=a, b=b),
                "answer": answer,
            }
            out.append(Candidate(f"{kind}:{a}:{b}", p, len(phrasings), N_RESERVED, row))
    return out
