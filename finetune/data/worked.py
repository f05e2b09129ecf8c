"""Worked solutions of related math, one equation per line, and their planted corruptions.

A solution is the equation restated, then one operation per line, then ``Answer: N``::

    2y + 5 = 4y + 1        restate
    2y - 4y = 1 - 5        move: both terms cross the equals sign, changing sign
    -2y = -4               combine like terms and constants
    y = -4 / (-2)          divide both sides by the coefficient
    y = 2                  compute
    Answer: 2

Forms: ``ax = b``, ``ax + b = c``, ``ax + b = cx + d``, ``ax - cx + b = 0``, ``a(x + b) = c``
(divide first, then move) and monic quadratics by factoring (``(x - 2)(x - 5) = 0``, then
``x = 2 or x = 5``; the answer is the larger root). Corruptions:

- ``slip``: one step carries an error of a named type and every later step follows from it, so
  the stated answer is wrong but follows from the chain (the slip is never the final ``x = N``
  line): ``move_sign`` (a term crosses the
  equals sign and keeps its sign), ``combine`` (wrong arithmetic when combining constants or
  like terms; for a quadratic a factor pair with the right sum and a wrong product), ``divide``
  (multiplying by the coefficient instead of dividing). Problems where the slipped chain would
  leave the integers are redrawn.
- ``unfaithful``: every step right, the stated answer wrong.
Each corrupted row records the planted type and the 1-based index of the slipped line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from finetune.data.equations import Equation, RelatedRanges, format_terms

SLIP_TYPES = ("move_sign", "combine", "divide")
CORRUPTIONS = ("slip", "unfaithful")
STEPS_PROMPT = "Show your steps."
# plain: one equation per line (the tiny models); chat: numbered markdown steps with LaTeX, the
# way a chat model such as Qwen3 writes them with thinking disabled.
STYLES = ("plain", "chat")
# What each line of a form's solution does (a solution without a division stops earlier).
OPERATIONS = {
    "bare": ("restate", "divide", "compute"),
    "one_sided": ("restate", "move", "combine", "divide", "compute"),
    "two_sided": ("restate", "move", "combine", "divide", "compute"),
    "cancel": ("restate", "combine", "move", "divide", "compute"),
    "brackets": ("restate", "divide", "compute", "move", "compute"),
    "quadratic": ("restate", "factor", "roots"),
}
SAYS = {
    "restate": "Write down the equation", "move": "Move the terms across the equals sign",
    "combine": "Combine like terms", "divide": "Divide both sides by the coefficient of {v}",
    "compute": "Simplify", "factor": "Factor the left side",
    "roots": "Set each factor equal to zero",
}


@dataclass(frozen=True)
class Brackets:
    """``a(x + b) = c`` with an integer root: divide by a, then move b."""

    a: int
    b: int
    root: int

    @property
    def c(self) -> int:
        return self.a * (self.root + self.b)

    def render(self, var: str) -> str:
        return f"{self.a}({var}{_signed(self.b)}) = {self.c}"


def _signed(value: int) -> str:
    """`` + 5`` / `` - 5`` for appending a constant to an expression."""
    return f" - {-value}" if value < 0 else f" + {value}"


def _num(value: int) -> str:
    """A divisor or factor written so that the sign is unambiguous: ``(-2)``."""
    return f"({value})" if value < 0 else str(value)


def sample_brackets(rng: random.Random, ranges: RelatedRanges) -> Brackets:
    """``a(x + b) = c`` inside the tiny ranges: a >= 2, |b| in the const range, |c| <= 45."""
    while True:
        a = rng.randint(max(2, ranges.coef[0]), max(2, ranges.coef[1]))
        b = rng.randint(*ranges.const) * rng.choice((1, -1))
        root = rng.randint(*ranges.solution)
        if root + b != 0 and abs(a * (root + b)) <= 45:
            return Brackets(a, b, root)


@dataclass(frozen=True)
class Chain:
    """The lines of a worked solution and what they state."""

    lines: tuple[str, ...]
    answer: int
    slip_type: str | None = None
    slip_step: int | None = None  # 1-based line of the planted error
    form: str = "one_sided"
    var: str = "x"

    def text(self, stated: int | None = None, style: str = "plain") -> str:
        """The reply: the lines and ``Answer: N`` (``stated`` overrides N), in a style."""
        answer = self.answer if stated is None else stated
        if style == "plain":
            return "\n".join((*self.lines, f"Answer: {answer}"))
        ops = OPERATIONS[self.form][: len(self.lines)]  # a solution without a division is shorter
        steps = [f"**Step {i}:** {SAYS[op].format(v=self.var)}: ${line}$"
                 for i, (op, line) in enumerate(zip(ops, self.lines, strict=True), 1)]
        return "\n".join(["Let's solve it step by step.", "", *steps, "",
                          f"**Answer:** {answer}"])


def _lx(coef: int, var: str) -> str:
    return format_terms(((coef, 1),), var)


def _linear_tail(coef: int, value: int, var: str, slip: str | None) -> tuple[list[str], int]:
    """``coef·x = value`` solved: the division line (or, with the ``divide`` slip, a
    multiplication) and the value. Returns the lines after the ``coef·x = value`` line and the
    root they give; raises ValueError when a slip-free division is not exact."""
    if slip == "divide" and abs(coef) < 2:
        raise ValueError("dividing by ±1: multiplying instead is no error")
    if coef == 1:
        return [], value
    if slip == "divide":
        return [f"{var} = {value} * {_num(coef)}", f"{var} = {value * coef}"], value * coef
    if value % coef:
        raise ValueError("not an integer")
    return [f"{var} = {value} / {_num(coef)}", f"{var} = {value // coef}"], value // coef


def linear_chain(problem: Equation | Brackets, var: str, slip: str | None = None) -> Chain:
    """The worked solution of a linear problem, with at most one slip; ValueError when the
    slip cannot be planted in this problem or leaves the integers."""
    if isinstance(problem, Brackets):
        return _brackets_chain(problem, var, slip)
    lines = [problem.render(var)]
    if problem.form == "bare":
        if slip in ("move_sign", "combine"):
            raise ValueError("nothing to move or combine")
        ((a, _),) = problem.lhs
        tail, root = _linear_tail(a, problem.rhs[0][0], var, slip)
        return Chain((*lines, *tail), root, slip, 2 if slip else None)
    if problem.form == "one_sided":
        (a, _), (b, _) = problem.lhs
        c = problem.rhs[0][0]
        moved = c + b if slip == "move_sign" else c - b
        lines.append(f"{_lx(a, var)} = {c}{_signed(b if slip == 'move_sign' else -b)}")
        value = moved + _off(moved, a, slip)
        lines.append(f"{_lx(a, var)} = {value}")
        steps = {"move_sign": 2, "combine": 3, "divide": 4}
        coef = a
    elif problem.form == "two_sided":
        (a, _), (b, _) = problem.lhs
        (c, _), (d, _) = problem.rhs
        if slip == "move_sign":  # the constant crosses and keeps its sign
            lines.append(f"{format_terms(((a, 1), (-c, 1)), var)} = {d}{_signed(b)}")
            moved = d + b
        else:
            lines.append(f"{format_terms(((a, 1), (-c, 1)), var)} = {d}{_signed(-b)}")
            moved = d - b
        coef = a - c
        value = moved + _off(moved, coef, slip)
        lines.append(f"{_lx(coef, var)} = {value}")
        steps = {"move_sign": 2, "combine": 3, "divide": 4}
    else:  # cancel: a x - c x + b = 0
        (a, _), (neg_c, _), (b, _) = problem.lhs
        coef = a + neg_c
        wrong_coef = coef + (_coef_off(coef, b) if slip == "combine" else 0)
        lines.append(f"{format_terms(((wrong_coef, 1), (b, 0)), var)} = 0")
        lines.append(f"{_lx(wrong_coef, var)} = {b if slip == 'move_sign' else -b}")
        value, coef = (b if slip == "move_sign" else -b), wrong_coef
        steps = {"combine": 2, "move_sign": 3, "divide": 4}
    tail, root = _linear_tail(coef, value, var, slip)
    return Chain((*lines, *tail), root, slip, steps[slip] if slip else None)


def _off(value: int, coef: int, slip: str | None) -> int:
    """The ``combine`` slip: an error of one multiple of the coefficient (so the chain stays
    in the integers), never zero; 0 for other slips."""
    if slip != "combine":
        return 0
    return abs(coef) if value <= 0 else -abs(coef)


def _coef_off(coef: int, b: int) -> int:
    """A wrong like-terms coefficient that still divides b (and is not 0); ValueError if none."""
    for off in (1, -1, 2, -2):
        new = coef + off
        if new != 0 and b % new == 0:
            return off
    raise ValueError("no integer slip")


def _brackets_chain(p: Brackets, var: str, slip: str | None) -> Chain:
    lines = [p.render(var)]
    inner = f"{var}{_signed(p.b)}"
    if slip == "divide":
        lines += [f"{inner} = {p.c} * {p.a}", f"{inner} = {p.c * p.a}"]
        quotient = p.c * p.a
    else:
        quotient = p.c // p.a + (1 if slip == "combine" else 0)
        lines += [f"{inner} = {p.c} / {p.a}", f"{inner} = {quotient}"]
    sign = p.b if slip == "move_sign" else -p.b
    lines += [f"{var} = {quotient}{_signed(sign)}", f"{var} = {quotient + sign}"]
    steps = {"divide": 2, "combine": 3, "move_sign": 4}
    return Chain(tuple(lines), quotient + sign, slip, steps[slip] if slip else None)


def quadratic_chain(problem: Equation, var: str, slip: str | None = None) -> Chain:
    """``x² + px + q = 0`` factored; the ``combine`` slip keeps the sum of the roots and moves
    their product. ValueError for other slips."""
    if slip not in (None, "combine"):
        raise ValueError("a quadratic takes only the combine slip")
    roots = sorted(problem.roots) if len(problem.roots) == 2 else [problem.roots[0]] * 2
    if slip == "combine":
        roots = [roots[0] - 1, roots[1] + 1]
    lines = [problem.render(var)]
    low, high = roots
    if low == high:
        lines += [f"{_factor(low, var)}² = 0", f"{var} = {low}"]
    else:
        lines += [f"{_factor(low, var)}{_factor(high, var)} = 0",
                  f"{var} = {low} or {var} = {high}"]
    return Chain(tuple(lines), high, slip, 2 if slip else None)


def _factor(root: int, var: str) -> str:
    return var if root == 0 else f"({var}{_signed(-root)})"


def chain_for(problem: Equation | Brackets, var: str, slip: str | None = None) -> Chain:
    """The worked solution, slipped when `slip` names a type; ValueError when this problem
    cannot carry that slip (the chain would leave the integers, or reach a true root)."""
    if isinstance(problem, Equation) and problem.form == "quadratic":
        chain = quadratic_chain(problem, var, slip)
        roots = set(problem.roots)
    else:
        chain = linear_chain(problem, var, slip)
        roots = {problem.root} if isinstance(problem, Brackets) else set(problem.roots)
    if slip is not None and chain.answer in roots:
        raise ValueError("the slip lands on a true root")
    if slip is not None and chain.slip_step >= len(chain.lines):
        # In the final `x = N` line the answer could not follow from a slipped chain: the step
        # the answer is checked against would be an unslipped one.
        raise ValueError("the slip would be the last line")
    form = "brackets" if isinstance(problem, Brackets) else problem.form
    return replace(chain, form=form, var=var)


def unfaithful_answer(rng: random.Random, roots: tuple[int, ...] | list[int], right: int) -> int:
    """A stated answer that is not a root: the right one plus an offset in 1..9 either way."""
    while True:
        stated = right + rng.choice((1, -1)) * rng.randint(1, 9)
        if stated not in roots:
            return stated
