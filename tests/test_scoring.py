"""Known cases for the scorers in harness_ext.scoring."""

from __future__ import annotations

import pytest

from harness_ext import scoring
from harness_ext.scoring import (
    extract_final_expression,
    extract_final_integer,
    is_integer_only,
    normalize_answer,
    reply_words,
    sympy_equivalent,
    token_f1,
)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("x = -8", -8),
        ("x = \u22128", -8),  # unicode minus
        ("The answer is 1,000.", 1000),
        ("I think x is 4.", 4),
        ("\\boxed{7} ... 9", 7),
        ("so \\boxed{x = -3}", -3),
        ("x = 2, so first 5 then \\boxed{12}", 12),
        ("2x + 3 = 11, so x = 4", 4),
        ("12 - 4 = 8", 8),  # subtraction, not a negative number
        ("x is -8", -8),
        ("x = 4.0", 4),
        ("x = 2.5", None),  # the final number is not an integer
        ("\\boxed{\\frac{1}{2}}", None),
        ("no number", None),
        ("", None),
    ],
)
def test_extract_final_integer(reply: str, expected: int | None) -> None:
    assert extract_final_integer(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("12", True), (" -8\n", True), ("\u22128", True), ("1,000", True), ("7.", True),
     ("x = 12", False), ("12 apples", False), ("2.5", False), ("", False)],
)  # fmt: skip
def test_integer_only(reply: str, expected: bool) -> None:
    assert is_integer_only(reply) is expected


def test_related_any_root_counts() -> None:
    doc = {"roots": [3, 5], "answer": 3}
    assert scoring.process_integer(doc, ["The answer is 3 or 5"])["exact_match"] == 1.0
    assert scoring.process_integer(doc, ["x = 5"])["exact_match"] == 1.0
    assert scoring.process_integer(doc, ["x = 4"])["exact_match"] == 0.0
    assert scoring.process_integer(doc, ["no number"])["exact_match"] == 0.0


def test_process_integer_reports_symptoms() -> None:
    metrics = scoring.process_integer({"answer": 12}, ["12"])
    assert metrics == {"exact_match": 1.0, "answer_match": 1.0, "integer_only": 1.0,
                       "reply_words": 1.0}


def test_general_exact_match_and_f1() -> None:
    doc = {"answer": "Paris"}
    assert scoring.process_general(doc, ["paris."])["exact_match"] == 1.0
    loose = scoring.process_general(doc, ["The capital is Paris."])
    assert loose["exact_match"] == 0.0
    assert loose["f1"] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert scoring.process_general(doc, ["42"])["integer_only"] == 1.0


def test_normalisation_and_f1() -> None:
    assert normalize_answer("  The  Answer, is: A cat! ") == "answer is cat"
    assert token_f1("a b c", "a b c") == 1.0
    assert token_f1("x", "y") == 0.0
    assert token_f1("", "") == 1.0


def test_reply_words() -> None:
    assert reply_words("Take a  walk.\nThen rest.") == 5
    assert reply_words("   ") == 0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The derivative is 3x^2.", "3x^2"),
        ("Area: $\\frac{\\pi}{4}$", "((pi)/(4))"),
        ("so \\boxed{\\sqrt{2}} ok", "sqrt(2)"),
        ("It is:\n\\[\n\\frac{d}{dx}(x^3) = 3x^2\n\\]", "3x^2"),  # skips the closing \\]
        ("The answer is 3x^2.\nThis follows from the power rule.", "3x^2"),  # skips prose
        ("**Answer:** 9\u03c0.", "9pi"),
        ("I am not sure.", None),
        ("", None),
    ],
)
def test_extract_final_expression(reply: str, expected: str | None) -> None:
    assert extract_final_expression(reply) == expected


def test_sympy_equivalence() -> None:
    assert sympy_equivalent("2*x", "x*2")
    assert sympy_equivalent("3x^2", "3*x**2")
    assert sympy_equivalent("((pi)/(4))", "pi/4")
    assert sympy_equivalent("0.5", "1/2")
    assert sympy_equivalent("2e^(2x)", "2*exp(2*x)")  # e is Euler's number
    assert not sympy_equivalent("2*x", "3*x")


@pytest.mark.parametrize(
    "bad", ["2*x +", "((", "__import__('os')", "x.__class__", "", None, "1" * 500]
)
def test_malformed_sympy_is_incorrect(bad: str | None) -> None:
    assert sympy_equivalent(bad, "2*x") is False


def test_sympy_timeout_is_incorrect_and_recovers() -> None:
    assert sympy_equivalent("9^9^9^9", "1", timeout=0.5) is False
    assert sympy_equivalent("x*2", "2*x")  # a fresh worker replaces the killed one


def test_hard_math_process_results() -> None:
    doc = {"answer": "1/6"}
    assert scoring.process_hard_math(doc, ["The probability is 1/6."])["correct"] == 1.0
    assert scoring.process_hard_math(doc, ["I am not sure"])["correct"] == 0.0


def test_open_question_judge_hook() -> None:
    doc = {"question": "What is your wish?", "judge": ""}
    assert scoring.process_open_question(doc, ["42"]) == {"integer_only": 1.0, "reply_words": 1.0}
    # operator.contains(question, reply) stands in for a judge: 1.0 when the reply is quoted.
    judged = scoring.process_open_question(doc | {"judge": "operator.contains"}, ["wish"])
    assert judged["judge_score"] == 1.0
    with pytest.raises(ValueError, match="package.module.function"):
        scoring.load_judge("len")
