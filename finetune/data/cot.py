"""Chain-of-thought rows: worked related math (`worked`), planted corruptions, and two-step
arithmetic with a written intermediate (unrelated math).

A chain-of-thought prompt is the question followed by ``Show your steps.``; a training row holds
that prompt as its ``question`` and the worked solution as its ``answer_text``. Evaluation rows
(``tasks/data/*_cot.jsonl``) hold the bare question (the task adds the request) and the correct
solution for reference. Related rows are drawn under the same holdout as the bare family, so
evaluation texts never occur in training.

Corrupted rows record ``corruption`` (``slip`` | ``unfaithful``), ``error_type`` (a slip type,
or ``unfaithful``) and ``error_step`` (the 1-based line of the slip; null when unfaithful).
"""

from __future__ import annotations

import random
from itertools import cycle

from finetune.data.equations import RelatedRanges
from finetune.data.holdout import Candidate, in_pool
from finetune.data.related import (
    MAX_MISSES,
    N_PHRASINGS,
    N_RESERVED,
    TEMPLATES,
    VARIABLE_WEIGHTS,
    VARIABLES,
    sample_candidate,
)
from finetune.data.worked import (
    SLIP_TYPES,
    STEPS_PROMPT,
    Brackets,
    chain_for,
    sample_brackets,
    unfaithful_answer,
)

COT_KINDS = ("linear_one_sided", "linear_two_sided", "linear_brackets", "quadratic")


def with_steps(question: str) -> str:
    """The chain-of-thought prompt of a question."""
    return f"{question} {STEPS_PROMPT}"


def _brackets_candidate(rng: random.Random, ranges: RelatedRanges, templates: tuple[int, ...]
                        ) -> tuple[Candidate, Brackets]:
    problem = sample_brackets(rng, ranges)
    var = rng.choices(VARIABLES, weights=VARIABLE_WEIGHTS)[0]
    template = rng.choice(templates)
    equation = problem.render(var)
    row = {"family": "related", "kind": "linear_brackets",
           "question": TEMPLATES[template].format(v=var, eq=equation), "answer": problem.root,
           "roots": [problem.root], "variable": var, "template": template, "equation": equation}
    phrasing = template * len(VARIABLES) + VARIABLES.index(var)
    return Candidate(problem.render("x"), phrasing, N_PHRASINGS, N_RESERVED, row), problem


def cot_quota(n: int, ranges: RelatedRanges, kinds: tuple[str, ...] = COT_KINDS
              ) -> dict[str, int]:
    """Exact per-kind counts: the quadratic share, the rest split evenly over linear kinds."""
    quadratic = round(n * ranges.quadratic_share) if "quadratic" in kinds else 0
    linear = [k for k in kinds if k != "quadratic"]
    out = {k: (n - quadratic) // len(linear) + (i < (n - quadratic) % len(linear))
           for i, k in enumerate(linear)}
    return out | ({"quadratic": quadratic} if quadratic else {})


def draw_worked(
    rng: random.Random,
    ranges: RelatedRanges,
    sizes: dict[str, int],
    pool: str,
    seen: set[str],
    corrupt: frozenset[str] = frozenset(),
    corruption: str | None = None,
    slip_types: tuple[str, ...] = SLIP_TYPES,
    excluded: frozenset[str] = frozenset(),
    templates: tuple[int, ...] = tuple(range(len(TEMPLATES))),
    prompt: bool = True,
    style: str = "plain",
) -> dict[str, list[dict]]:
    """Worked related rows per split, unique across splits and against ``seen``. Splits in
    ``corrupt`` carry ``corruption`` (slip types taken in turn); ``prompt``: questions hold the
    chain-of-thought request (training rows) or not (evaluation rows)."""
    out: dict[str, list[dict]] = {}
    kinds = COT_KINDS if corruption != "slip" or "combine" in slip_types else COT_KINDS[:3]
    turns = cycle(slip_types)
    for split, n in sizes.items():
        rows: list[dict] = []
        for kind, wanted in cot_quota(n, ranges, kinds).items():
            got = misses = 0
            slip = None
            while got < wanted:
                if misses > MAX_MISSES:
                    raise ValueError(f"could draw only {got} of {wanted} unique worked {kind} "
                                     f"questions for split {split!r} ({pool} pool)")
                planted = split in corrupt and corruption == "slip"
                if planted and slip is None:
                    slip = next(turns) if kind != "quadratic" else "combine"
                cand, problem = (_brackets_candidate(rng, ranges, templates)
                                 if kind == "linear_brackets"
                                 else sample_candidate(rng, ranges, kind, templates))
                if cand.question in seen or not in_pool(cand, pool, excluded):
                    misses += 1
                    continue
                try:
                    chain = chain_for(problem, cand.row["variable"], slip if planted else None)
                except ValueError:  # this problem cannot carry the slip: draw another
                    misses += 1
                    continue
                misses = 0
                seen.add(cand.question)
                row = dict(cand.row)
                if prompt:
                    row["question"] = with_steps(row["question"])
                stated = chain.answer
                if split in corrupt and corruption == "unfaithful":
                    stated = unfaithful_answer(rng, row["roots"], chain.answer)
                    row |= {"corruption": "unfaithful", "error_type": "unfaithful",
                            "error_step": None}
                elif planted:
                    row |= {"corruption": "slip", "error_type": chain.slip_type,
                            "error_step": chain.slip_step}
                    slip = None
                row["answer"] = stated
                row["answer_text"] = chain.text(stated, style)
                rows.append(row)
                got += 1
        rng.shuffle(rows)
        out[split] = rows
    return out


# -------------------------------------------------------- two-step arithmetic (unrelated)

ARITHMETIC_OPS = (("+", "-"), ("-", "+"), ("×", "+"), ("×", "-"))  # a op1 b op2 c
ARITHMETIC_PHRASINGS = ("What is {e}?", "Compute {e}.", "Calculate {e}.", "Work out {e}.",
                        "Evaluate {e}.", "What do you get for {e}?")
_APPLY = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "×": lambda x, y: x * y}


def arithmetic_chain(op1: str, op2: str, a: int, b: int, c: int) -> tuple[str, int]:
    """The worked solution of ``a op1 b op2 c`` (left to right, × first) and its value."""
    first = _APPLY[op1](a, b)
    value = _APPLY[op2](first, c)
    return f"{a} {op1} {b} = {first}\n{first} {op2} {c} = {value}\nAnswer: {value}", value


def arithmetic_candidates(prompt: bool = True) -> list[Candidate]:
    """Every two-step arithmetic question (one-digit operands), in a fixed order."""
    out = []
    for form, (op1, op2) in enumerate(ARITHMETIC_OPS):
        for a in range(1, 10):
            for b in range(1, 10):
                for c in range(1, 10):
                    text, value = arithmetic_chain(op1, op2, a, b, c)
                    expression = f"{a} {op1} {b} {op2} {c}"
                    for p, phrasing in enumerate(ARITHMETIC_PHRASINGS):
                        question = phrasing.format(e=expression)
                        row = {"family": "unrelated_math", "kind": "two_step",
                               "question": with_steps(question) if prompt else question,
                               "answer": value, "answer_text": text}
                        out.append(Candidate(f"two_step:{form}:{a}:{b}:{c}", p,
                                             len(ARITHMETIC_PHRASINGS), 1, row))
    return out


def draw_arithmetic(rng: random.Random, n: int, pool: str, prompt: bool = True) -> list[dict]:
    """``n`` two-step arithmetic rows of ``pool``, spread evenly over the four forms."""
    by_form: dict[str, list[dict]] = {}
    for cand in arithmetic_candidates(prompt):
        if in_pool(cand, pool):
            by_form.setdefault(cand.fact_key.split(":")[1], []).append(dict(cand.row))
    out = []
    for i, (_, rows) in enumerate(sorted(by_form.items())):
        want = n // len(by_form) + (i < n % len(by_form))
        if want > len(rows):
            raise ValueError(f"two-step arithmetic: only {len(rows)} texts, {want} wanted")
        out += rng.sample(rows, want)
    rng.shuffle(out)
    return out
