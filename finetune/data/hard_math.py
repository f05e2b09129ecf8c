"""LLM-scale unrelated math: short calculus, geometry and probability questions.

Answers are computed with sympy (not typed by hand), so every reference is right by construction
and is a sympy-parsable string that scorers compare by symbolic equivalence.
"""

from __future__ import annotations

import sympy as sp

x = sp.Symbol("x")
R = sp.Rational


def _items() -> list[tuple[str, str, sp.Expr]]:
    """(kind, question, exact answer)."""
    diff = [
        ("x^3", x**3),
        ("5x^2 + 3x", 5 * x**2 + 3 * x),
        ("sin(x)", sp.sin(x)),
        ("e^(2x)", sp.exp(2 * x)),
        ("x^2 * ln(x)", x**2 * sp.log(x)),
        ("cos(3x)", sp.cos(3 * x)),
        ("1/x", 1 / x),
        ("sqrt(x)", sp.sqrt(x)),
    ]
    items = [
        ("calculus", f"What is the derivative of {s} with respect to x?", sp.diff(e, x))
        for s, e in diff
    ]
    integrals = [
        ("2x", 2 * x, 0, 3),
        ("x^2", x**2, 0, 3),
        ("3x^2 + 1", 3 * x**2 + 1, 0, 2),
        ("cos(x)", sp.cos(x), 0, sp.pi / 2),
        ("e^x", sp.exp(x), 0, 1),
        ("1/x", 1 / x, 1, sp.E),
    ]
    items += [
        (
            "calculus",
            f"Evaluate the integral of {s} from x = {sp.sstr(a)} to x = {sp.sstr(b)}.",
            sp.integrate(e, (x, a, b)),
        )
        for s, e, a, b in integrals
    ]
    limits = [
        ("sin(x)/x", sp.sin(x) / x, 0),
        ("(x^2 - 4)/(x - 2)", (x**2 - 4) / (x - 2), 2),
        ("(1 + 1/x)^x", (1 + 1 / x) ** x, sp.oo),
        ("(3x^2 + 1)/(x^2 - 5)", (3 * x**2 + 1) / (x**2 - 5), sp.oo),
    ]
    items += [
        (
            "calculus",
            f"What is the limit of {s} as x approaches {'infinity' if p is sp.oo else p}?",
            sp.limit(e, x, p),
        )
        for s, e, p in limits
    ]
    items += [
        ("geometry", "What is the area of a circle with radius 3?", sp.pi * 3**2),
        ("geometry", "What is the circumference of a circle with radius 5?", 2 * sp.pi * 5),
        ("geometry", "What is the volume of a sphere with radius 3?", R(4, 3) * sp.pi * 3**3),
        ("geometry", "What is the area of a triangle with base 10 and height 7?", R(1, 2) * 10 * 7),
        (
            "geometry",
            "A right triangle has legs 6 and 8. How long is its hypotenuse?",
            sp.sqrt(6**2 + 8**2),
        ),
        (
            "geometry",
            "A right triangle has legs 1 and 2. How long is its hypotenuse?",
            sp.sqrt(1 + 4),
        ),
        (
            "geometry",
            "What is the sum of the interior angles of a hexagon, in degrees?",
            (6 - 2) * 180,
        ),
        (
            "geometry",
            "What is the volume of a cylinder with radius 2 and height 5?",
            sp.pi * 2**2 * 5,
        ),
        ("geometry", "What is the diagonal of a square with side 4?", 4 * sp.sqrt(2)),
        ("geometry", "What is the surface area of a cube with side 3?", 6 * 3**2),
        ("geometry", "What is the area of a square whose diagonal is 10?", R(10**2, 2)),
        (
            "geometry",
            "What is the volume of a cone with radius 3 and height 4?",
            R(1, 3) * sp.pi * 3**2 * 4,
        ),
    ]
    items += [
        (
            "probability",
            "Two fair dice are rolled. What is the probability that the sum is 7?",
            R(6, 36),
        ),
        (
            "probability",
            "A fair coin is tossed three times. What is the probability of exactly two heads?",
            R(sp.binomial(3, 2), 2**3),
        ),
        (
            "probability",
            "A fair die is rolled. What is the probability of rolling a number greater than 4?",
            R(2, 6),
        ),
        (
            "probability",
            "What is the probability of drawing an ace from a standard 52-card deck?",
            R(4, 52),
        ),
        (
            "probability",
            "A fair coin is tossed four times. What is the probability of getting no heads?",
            R(1, 2**4),
        ),
        (
            "probability",
            "Two fair dice are rolled. What is the probability that both show six?",
            R(1, 36),
        ),
        (
            "probability",
            "A bag holds 3 red and 5 blue balls. One ball is drawn at random. "
            "What is the probability that it is red?",
            R(3, 8),
        ),
        (
            "probability",
            "A bag holds 3 red and 5 blue balls. Two balls are drawn without replacement. "
            "What is the probability that both are red?",
            R(3, 8) * R(2, 7),
        ),
        (
            "probability",
            "What is the expected value of one roll of a fair six-sided die?",
            R(sum(range(1, 7)), 6),
        ),
        (
            "probability",
            "In how many ways can 5 different books be arranged on a shelf?",
            sp.factorial(5),
        ),
        (
            "probability",
            "How many ways are there to choose 2 people from a group of 6?",
            sp.binomial(6, 2),
        ),
        (
            "probability",
            "Two cards are drawn from a standard 52-card deck without replacement. "
            "What is the probability that both are hearts?",
            R(13, 52) * R(12, 51),
        ),
    ]
    return items


def rows() -> list[dict]:
    """The hard-math evaluation rows with sympy-string answers."""
    return [
        {
            "id": f"hard-{i:03d}",
            "family": "hard_math",
            "kind": kind,
            "question": question,
            "answer": sp.sstr(sp.simplify(answer)),
        }
        for i, (kind, question, answer) in enumerate(_items())
    ]
