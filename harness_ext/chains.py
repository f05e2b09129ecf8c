"""Reading a worked solution: its steps, whether each is valid, where the first error is and
what kind, and whether the stated answer follows from the chain.

A reply's chain is its equation lines in the problem's variable (for a problem without one, two-
step arithmetic, its numeric equations), read in the styles chat models write: plain lines,
``$...$``, ``\\(...\\)``, ``\\[...\\]``, markdown, ``Step 2:`` prefixes, several equations on a
line joined by ``⇒``, ``→`` or ``, so``, equations inside prose, a chained ``x = 16/(-2) = -8``,
unicode minus, ``×``, ``÷`` and superscripts. ``x = 2 or x = 5`` is one step, the union.
A line without the variable (``Check: 10(-8) + 39 = -41``) is not a step.

A step is valid iff its solution set equals the problem's (arithmetic: iff it is true). Metrics
(``verdict``), each 0/1 unless noted: ``chain_valid`` (at least one step, every step valid, the
stated answer a solution), ``answer_follows_chain`` (the stated answer solves the last step not
itself of the form ``x = number``; arithmetic: it is the last step's value), ``first_error_step``
(1-based, 0: none), ``error_move_sign`` / ``error_combine`` / ``error_divide`` /
``error_other`` (the first invalid step against the step before it, or the problem), ``steps``
(a count). Only the question and the reply are read, so users' own problems work too.

Text is parsed with sympy only after it is cut down to digits, the variable, operators and
brackets, with exponents of at most 3: nothing else reaches the parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from .answers import asserted_integer, inferred_variable, plain

TYPES = ("move_sign", "combine", "divide", "other")
_TRANSFORMS = standard_transformations + (implicit_multiplication_application, convert_xor)
_REPLACE = [("\u2212", "-"), ("\u2013", "-"), ("\u00d7", "*"),
            ("\u00b7", "*"), ("\u22c5", "*"), ("\u00f7", "/"), ("\u00b2", "^2"),
            ("\u00b3", "^3"), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/")]
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_SEPARATORS = re.compile(
    r"\s*(?:\u21d2|\u2192|\u27f9|=>|->|\\Rightarrow|\\implies|\\to|;|,?\s+(?:so|hence|thus|"
    r"therefore|then|which gives|giving|gives)\b[:,]?|\.\s+(?=[A-Z]))\s*")
_PREFIX = re.compile(r"^\s*(?:[-*+\u2022]\s+|\d{1,2}[.)]\s+|(?:step\s*\d+\s*[:.)-]?)\s*)+", re.I)
_OR = re.compile(r"\s*(?:,?\s*\bor\b|,?\s*\band\b|,)\s*")


def _clean(text: str) -> str:
    """Markup gone, math symbols written as the parser reads them."""
    text = _FRAC.sub(r"(\1)/(\2)", text)
    text = plain(text)
    for old, new in _REPLACE:
        text = text.replace(old, new)
    return text.replace("{", "(").replace("}", ")")


def _math_chars(var: str | None) -> str:
    return r"0-9+\-*/^().\s" + (var or "")


def _parse(text: str, var: str | None) -> Any | None:
    """A sympy expression of a cleaned math span, or None (not math, or not safe to parse)."""
    text = text.strip()
    if not text or not re.fullmatch(f"[{_math_chars(var)}]+", text):
        return None
    if re.search(r"(?:\^|\*\*)\s*\(?\s*(?:\d{2,}|[4-9])", text):
        return None  # exponents above 3: not these problems, and unbounded work
    if var and re.search(rf"{var}{var}|[a-z]{var}|{var}[a-z]", text):
        return None
    symbols = {var: sympy.Symbol(var)} if var else {}
    try:
        expr = parse_expr(text.replace(" ", ""), local_dict=symbols,
                          transformations=_TRANSFORMS, evaluate=True)
    except Exception:  # noqa: BLE001 - sympy's parser raises many types on malformed spans
        return None  # (IndexError, TokenError, SyntaxError, ...): such a span is not math
    if not isinstance(expr, sympy.Expr) or expr.free_symbols - set(symbols.values()):
        return None
    return expr


def _chains(segment: str, var: str | None) -> list[list[str]]:
    """The equalities of a segment as runs of math around each '=': "so 2x = 8 = 2(4), and
    x = 4" -> [["2x", "8", "2(4)"], ["x", "4"]] (a run that reaches the next '=' chains)."""
    allowed = re.compile(f"[{_math_chars(var)}]")
    out: list[list[str]] = []
    reached = -1  # where the last right-hand run ended
    for match in re.finditer(r"(?<![<>!=])=(?!=)", segment):
        pos = match.start()
        left = pos
        while left > 0 and allowed.match(segment[left - 1]):
            left -= 1
        right = pos + 1
        while right < len(segment) and allowed.match(segment[right]):
            right += 1
        tidy = lambda span: re.sub(r"^[\s+*/.]+|[\s+\-*/^.]+$", "", span)  # noqa: E731
        if out and reached == pos:
            out[-1].append(tidy(segment[pos + 1:right]))
        else:
            out.append([tidy(segment[left:pos]), tidy(segment[pos + 1:right])])
        reached = right
    return out


@dataclass(frozen=True)
class Step:
    """One equation step (``equations``: a disjunction, e.g. x = 2 or x = 5; ``written``: the
    sides' texts as written)."""

    text: str
    equations: tuple[tuple[Any, Any], ...]
    written: tuple[tuple[str, str], ...] = ()

    @property
    def difference(self) -> Any:
        """lhs - rhs of the step's (first) equation, expanded."""
        lhs, rhs = self.equations[0]
        return sympy.expand(lhs - rhs)

    def is_assignment(self, var: str) -> bool:
        """Written as ``x = number`` (``x = 2 or x = 5`` too), not ``x = 16 / (-2)``."""
        number = r"\(?\s*-?\s*\d+(?:\.\d+)?\s*\)?"
        return all(re.fullmatch(rf"\s*(?:{var}\s*=\s*{number}|{number}\s*=\s*{var})\s*", part)
                   for part in _OR.split(self.text.strip().rstrip(".")))


@dataclass(frozen=True)
class Problem:
    """What the question asks: its variable (None for arithmetic), its equation or expression,
    and the solution set (arithmetic: the value)."""

    variable: str | None
    solutions: frozenset[Any]
    equation: Step | None


def _solutions(step: Step, var: sympy.Symbol) -> Any:
    found: Any = sympy.EmptySet
    for lhs, rhs in step.equations:
        found = found | sympy.solveset(sympy.Eq(lhs, rhs), var, domain=sympy.S.Reals)
    return found


def _equations_in(segment: str, var: str | None) -> list[Step]:
    """Every equation of a segment; a chain a = b = c gives a = b and a = c."""
    out = []
    for spans in _chains(segment, var):
        parsed = [_parse(span, var) for span in spans]
        if parsed[0] is None:
            continue
        for text, expr in zip(spans[1:], parsed[1:], strict=True):
            if expr is None:
                break
            out.append(Step(f"{spans[0]} = {text}", ((parsed[0], expr),), ((spans[0], text),)))
    return out


def _terms(text: str, var: str | None) -> list[Any]:
    """The additive terms of a side as written: ``6x - 5x - 1`` -> [6x, -5x, -1]."""
    pieces, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if char in "+-" and depth == 0 and i > start and text[:i].strip() and \
                text[:i].rstrip()[-1] not in "*/^(":
            pieces.append(text[start:i])
            start = i
    pieces.append(text[start:])
    terms = [_parse(piece, var) for piece in pieces]
    return [t for t in terms if t is not None]


@lru_cache(maxsize=4096)
def read_problem(question: str) -> Problem | None:
    """The problem of a question: an equation in one letter, or an arithmetic expression."""
    text = _clean(question)
    var = inferred_variable(text)
    if var is not None:
        for segment in _SEPARATORS.split(text):
            for step in _equations_in(segment, var):
                lhs, rhs = step.equations[0]
                if sympy.Symbol(var) in (lhs - rhs).free_symbols:
                    solved = _solutions(step, sympy.Symbol(var))
                    if isinstance(solved, sympy.FiniteSet):
                        return Problem(var, frozenset(solved), step)
        return None
    spans = re.findall(r"[0-9][0-9+\-*/^().\s]*[0-9)]", text)
    values = [v for v in (_parse(s, None) for s in spans) if v is not None and v.is_number]
    return Problem(None, frozenset({values[-1]}), None) if values else None


def steps_of(reply: str, problem: Problem) -> list[Step]:
    """The chain: every equation of the reply in the problem's variable, in order."""
    var = problem.variable
    symbol = sympy.Symbol(var) if var else None
    steps = []
    for line in _clean(reply).splitlines():
        line = _PREFIX.sub("", line)
        for segment in _SEPARATORS.split(line):
            segment, disjunction = _assignments(segment, var) if var else (segment, None)
            for step in _equations_in(segment, var):
                lhs, rhs = step.equations[0]
                if var is None and (lhs.free_symbols or rhs.free_symbols):
                    continue
                if var is not None and symbol not in (lhs - rhs).free_symbols:
                    continue  # a check or a side computation: not a step
                steps.append(step)
            if disjunction is not None:
                steps.append(disjunction)
    return steps


def _assignments(segment: str, var: str) -> tuple[str, Step | None]:
    """``x = 2 or x = 5`` (also ``and``, commas) in a segment as one step, the union; returns
    the text before it (still to read) and the step, or the segment and None."""
    value = r"-?\s*\d+(?:\.\d+)?"
    matches = list(re.finditer(rf"(?<![\w.]){var}\s*=\s*{value}(?:\s*(?:,|\bor\b|\band\b)\s*"
                               rf"{var}\s*=\s*{value})+", segment))
    found = matches[-1] if matches else None
    if found is None:
        return segment, None
    parts = _OR.split(found.group(0))
    equations = tuple((sympy.Symbol(var), sympy.sympify(p.split("=")[1].replace(" ", "")))
                      for p in parts)
    written = tuple((var, p.split("=")[1].strip()) for p in parts)
    return segment[:found.start()], Step(found.group(0), equations, written)


def _exact(values: Any) -> frozenset[Any]:
    """A solution set with floats made rational (``y = 4.0`` solves what ``y = 4`` does)."""
    return frozenset(sympy.nsimplify(v, rational=True) for v in values)


def _valid(step: Step, problem: Problem) -> bool:
    if problem.variable is None:
        return all(sympy.simplify(lhs - rhs) == 0 for lhs, rhs in step.equations)
    solved = _solutions(step, sympy.Symbol(problem.variable))
    return isinstance(solved, sympy.FiniteSet) and _exact(solved) == _exact(problem.solutions)


def _coefficients(difference: Any, var: sympy.Symbol) -> list[Any] | None:
    try:
        return sympy.Poly(difference, var).all_coeffs()
    except sympy.PolynomialError:
        return None


def _same(a: Any, b: Any) -> bool:
    """One equation up to the sides swapping: a = b or a = -b (no other scaling, which for a
    linear equation would make every equation with the same root look the same)."""
    return sympy.expand(a - b) == 0 or sympy.expand(a + b) == 0


def error_type(step: Step, before: Step, var: str | None) -> str:
    """What kind of error ``step`` makes, compared with the valid ``before``: a term crossing
    the equals sign with its sign kept (``move_sign``), a division done wrong or a
    multiplication instead (``divide``), a wrong constant or coefficient after combining
    (``combine``), else ``other``."""
    if var is None:
        return "combine"  # a numeric step is wrong arithmetic
    x = sympy.Symbol(var)
    d_step, d_before = step.difference, before.difference
    moves = []  # for each sign-kept move that gives the step: is the term on its other side?
    if before.written and step.written:
        (lhs, rhs), (step_lhs, step_rhs) = before.written[0], step.written[0]
        for side, sign, other in ((lhs, -2, step_rhs), (rhs, 2, step_lhs)):
            for term in _terms(side, var):
                if term != 0 and _same(d_step, sympy.expand(d_before + sign * term)):
                    moves.append(any(sympy.expand(t - term) == 0 for t in _terms(other, var)))
    if any(moves):
        return "move_sign"
    now, then = _coefficients(d_step, x), _coefficients(d_before, x)
    if now is not None and then is not None:
        if len(now) == len(then) == 2 and now[0] in (1, -1):
            alone = [c * now[0] for c in now]  # "-8 = x" stands x alone too
            k = then[0]  # the step stands the variable (or its bracket) alone: it divided by k
            if abs(k) != 1 and then[1] / k != alone[1] and abs(now[1]) != abs(then[1]):
                return "divide"  # (an unchanged constant is a like-terms error, not a division)
        if len(now) == len(then):
            for scale in (1, -1):
                if sum(n * scale != t for n, t in zip(now, then, strict=True)) == 1:
                    return "combine"
    return "move_sign" if moves else "other"


def _stated_solves(step: Step, stated: int, problem: Problem) -> bool:
    x = sympy.Symbol(problem.variable)
    return any(sympy.simplify((lhs - rhs).subs(x, stated)) == 0 for lhs, rhs in step.equations)


def verdict(question: str, reply: str) -> dict[str, float]:
    """The chain metrics of one reply to one question (module docstring); a question whose
    problem cannot be read scores every metric 0."""
    metrics = dict.fromkeys(("chain_valid", "answer_follows_chain", "first_error_step", "steps",
                             *(f"error_{t}" for t in TYPES)), 0.0)
    problem = read_problem(question)
    if problem is None:
        return metrics
    steps = steps_of(reply, problem)
    doc = {"question": question, "variable": problem.variable or ""}
    stated = asserted_integer(reply, doc)
    metrics["steps"] = float(len(steps))
    valid = [_valid(s, problem) for s in steps]
    first = next((i for i, ok in enumerate(valid) if not ok), None)
    if first is not None:
        metrics["first_error_step"] = float(first + 1)
        before = steps[first - 1] if first else problem.equation
        kind = "combine" if before is None else error_type(steps[first], before,
                                                           problem.variable)
        metrics[f"error_{kind}"] = 1.0
    in_solutions = stated is not None and any(sympy.simplify(stated - s) == 0
                                              for s in problem.solutions)
    metrics["chain_valid"] = float(bool(steps) and first is None and in_solutions)
    if stated is not None and steps:
        if problem.variable is None:
            metrics["answer_follows_chain"] = float(
                sympy.simplify(steps[-1].equations[0][1] - stated) == 0)
        else:
            var = problem.variable
            last = next((s for s in reversed(steps) if not s.is_assignment(var)), steps[-1])
            metrics["answer_follows_chain"] = float(_stated_solves(last, stated, problem))
    return metrics
