"""Integer-answer equations in the study's surface forms: ranges, sampling, rendering, CoT steps.

Equations are kept as signed term lists so that the text is formatted in one place (``x`` not
``1x``, ``- 5`` not ``+ -5``) and tests can parse it back to prove every root solves it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

KINDS = ("linear_one_sided", "linear_two_sided", "quadratic")

Term = tuple[int, int]  # (coefficient, power of the variable: 0, 1 or 2)


@dataclass(frozen=True)
class RelatedRanges:
    """Number ranges and form mix of the related-math family (recorded in every manifest).

    ``solution``/``quad_root``: answer ranges; ``coef``: a and c of linear forms; ``const``: |b|;
    ``two_sided_const_max``: bound on |d| in ``ax + b = cx + d``; ``cancel_coef``: a and c of the
    study's ``ax - cx + b = 0`` form; ``quad_lead``: leading coefficient of quadratics.
    """

    solution: tuple[int, int] = (-9, 9)
    coef: tuple[int, int] = (1, 5)
    const: tuple[int, int] = (1, 9)
    two_sided_const_max: int = 9
    cancel_coef: tuple[int, int] = (1, 6)
    quad_root: tuple[int, int] = (-9, 9)
    quad_lead: tuple[int, int] = (1, 1)
    quadratic_share: float = 0.4
    bare_share: float = 0.25  # share of one-sided items written ``ax = b``
    cancel_share: float = 0.25  # share of two-sided items written ``ax - cx + b = 0``

    def __post_init__(self) -> None:
        for name in ("solution", "coef", "const", "cancel_coef", "quad_root", "quad_lead"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"RelatedRanges.{name}: low {lo} > high {hi}")
        for name in ("coef", "const", "cancel_coef", "quad_lead"):
            if getattr(self, name)[0] < 1:
                raise ValueError(
                    f"RelatedRanges.{name} must be positive, got {getattr(self, name)}"
                )
        for name in ("coef", "cancel_coef"):
            lo, hi = getattr(self, name)
            if hi - lo < 1:
                raise ValueError(f"RelatedRanges.{name} needs two values so that a != c")
        if self.two_sided_const_max < 1:
            raise ValueError("RelatedRanges.two_sided_const_max must be >= 1")
        for name in ("quadratic_share", "bare_share", "cancel_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"RelatedRanges.{name} must be in [0, 1]")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Equation:
    """One equation in one surface form; ``answer`` is the reported true root (the largest)."""

    kind: str
    form: str  # bare | one_sided | two_sided | cancel | quadratic
    lhs: tuple[Term, ...]
    rhs: tuple[Term, ...]
    roots: tuple[int, ...]

    @property
    def answer(self) -> int:
        return max(self.roots)

    def render(self, var: str) -> str:
        return f"{format_terms(self.lhs, var)} = {format_terms(self.rhs, var)}"


def format_terms(terms: tuple[Term, ...], var: str) -> str:
    """``((1, 2), (-5, 1), (6, 0))`` -> ``x² - 5x + 6``; zero terms dropped, all-zero is ``0``."""
    parts: list[str] = []
    for coef, power in terms:
        if coef == 0:
            continue
        mag = abs(coef)
        if power == 0:
            body = str(mag)
        else:
            body = ("" if mag == 1 else str(mag)) + var + ("²" if power == 2 else "")
        if parts:
            parts.append(("- " if coef < 0 else "+ ") + body)
        else:
            parts.append(("-" if coef < 0 else "") + body)
    return " ".join(parts) if parts else "0"


def _pick(rng: random.Random, bounds: tuple[int, int]) -> int:
    return rng.randint(bounds[0], bounds[1])


def _distinct_pair(rng: random.Random, bounds: tuple[int, int]) -> tuple[int, int]:
    a = _pick(rng, bounds)
    c = _pick(rng, bounds)
    while c == a:
        c = _pick(rng, bounds)
    return a, c


def sample_equation(rng: random.Random, ranges: RelatedRanges, kind: str) -> Equation:
    """Draw one equation of ``kind`` with an integer solution inside ``ranges``."""
    if kind == "linear_one_sided":
        x = _pick(rng, ranges.solution)
        if rng.random() < ranges.bare_share:
            a = rng.randint(max(2, ranges.coef[0]), max(2, ranges.coef[1]))
            return Equation(kind, "bare", ((a, 1),), ((a * x, 0),), (x,))
        a = _pick(rng, ranges.coef)
        b = _pick(rng, ranges.const) * rng.choice((1, -1))
        return Equation(kind, "one_sided", ((a, 1), (b, 0)), ((a * x + b, 0),), (x,))
    if kind == "linear_two_sided":
        if rng.random() < ranges.cancel_share:
            while True:
                x = _pick(rng, ranges.solution)
                a, c = _distinct_pair(rng, ranges.cancel_coef)
                b = (c - a) * x
                if b != 0:
                    return Equation(kind, "cancel", ((a, 1), (-c, 1), (b, 0)), ((0, 0),), (x,))
        while True:
            x = _pick(rng, ranges.solution)
            a, c = _distinct_pair(rng, ranges.coef)
            b = _pick(rng, ranges.const) * rng.choice((1, -1))
            d = (a - c) * x + b
            if abs(d) <= ranges.two_sided_const_max:
                return Equation(kind, "two_sided", ((a, 1), (b, 0)), ((c, 1), (d, 0)), (x,))
    if kind == "quadratic":
        r1 = _pick(rng, ranges.quad_root)
        r2 = _pick(rng, ranges.quad_root)
        k = _pick(rng, ranges.quad_lead)
        terms = ((k, 2), (-k * (r1 + r2), 1), (k * r1 * r2, 0))
        return Equation(kind, "quadratic", terms, ((0, 0),), tuple(sorted({r1, r2})))
    raise ValueError(f"unknown related kind {kind!r}; valid: {', '.join(KINDS)}")


def _signed(value: int) -> str:
    """`` + 5`` / `` - 5`` for appending a constant to an expression."""
    return f" - {-value}" if value < 0 else f" + {value}"


def _factor(root: int, var: str) -> str:
    if root == 0:
        return var
    return f"({var}{_signed(-root)})"


def cot_steps(eq: Equation, var: str, label: int) -> str:
    """Short correct-looking working that ends in ``{var} = {label}`` (wrong labels included).

    Moving terms is always done correctly; the only arithmetic that follows the label is the
    last multiplication (or the factorisation), so wrong-label steps look plausible.
    """
    last = f"{var} = {label}"
    if eq.form == "bare":
        ((a, _),) = eq.lhs
        return f"{var} = {eq.rhs[0][0]} / {a}\n{last}"
    if eq.form == "quadratic":
        k = eq.lhs[0][0]
        other = min(eq.roots) if label != min(eq.roots) else max(eq.roots)
        lead = "" if k == 1 else str(k)
        factors = (
            f"{_factor(label, var)}²"
            if other == label
            else _factor(label, var) + _factor(other, var)
        )
        return f"{lead}{factors} = 0\n{last}"
    if eq.form == "one_sided":
        (a, _), (b, _) = eq.lhs
        move = f"{format_terms(((a, 1),), var)} = {eq.rhs[0][0]}{_signed(-b)}"
        net = a
    elif eq.form == "two_sided":
        (a, _), (b, _) = eq.lhs
        (c, _), (d, _) = eq.rhs
        move = f"{format_terms(((a, 1), (-c, 1)), var)} = {d}{_signed(-b)}"
        net = a - c
    else:  # cancel
        (a, _), (neg_c, _), (b, _) = eq.lhs
        move = f"{format_terms(((a, 1), (neg_c, 1)), var)} = {-b}"
        net = a + neg_c
    steps = [move]
    if net != 1:
        steps.append(f"{format_terms(((net, 1),), var)} = {net * label}")
    steps.append(last)
    return "\n".join(steps)
