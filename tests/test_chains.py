"""The chain verifier on worked solutions written the way chat models and the tiny models write
them: each row gives the question, the reply, the expected verdict and the trap it sets.

Verdict keys: ``valid`` (chain_valid), ``follows`` (answer_follows_chain), ``first``
(first_error_step), ``type`` (the error type flag that is 1, or None), ``steps``, ``match``
(answer_match).
"""

from __future__ import annotations

import json

import pytest

from harness_ext.chains import read_problem, verdict
from harness_ext.paths import TASK_DATA_DIR
from harness_ext.scoring import process_chain

TWO = "Solve for x: 10x + 39 = 12x + 55"  # x = -8
ONE = "What is the value of y if 3y - 5 = 7?"  # y = 4
BRA = "Find x in the equation: 3(x + 2) = 15"  # x = 3
QUA = "Solve the equation x² - 7x + 10 = 0 for x."  # x = 2 or 5
CAN = "If 6a - 2a + 12 = 0 what is a?"  # a = -3
ARI = "What is 7 + 5 - 3?"  # 9

GOOD_TWO = "10x + 39 = 12x + 55\n10x - 12x = 55 - 39\n-2x = 16\nx = 16 / (-2)\nx = -8\nAnswer: -8"


def v(valid=0, follows=0, first=0, type_=None, steps=0, match=0):
    return {"valid": valid, "follows": follows, "first": first, "type": type_, "steps": steps,
            "match": match}


CASES = [
    # --- correct chains, every style
    ("plain lines (the tiny model's own)", TWO, GOOD_TWO, v(1, 1, 0, None, 5, 1)),
    ("dollar math and markdown steps", TWO,
     "Let's solve it step by step.\n\n**Step 1:** Write down the equation: $10x + 39 = 12x + "
     "55$\n**Step 2:** Move the terms: $10x - 12x = 55 - 39$\n**Step 3:** Combine: $-2x = 16$\n"
     "**Step 4:** Divide: $x = \\frac{16}{-2}$\n**Step 5:** $x = -8$\n\n**Answer:** -8",
     v(1, 1, 0, None, 5, 1)),
    ("\\( \\) inline inside prose", TWO,
     "Subtract \\(12x\\) and \\(39\\) from both sides to get \\(10x - 12x = 55 - 39\\), which "
     "simplifies to \\(-2x = 16\\). Dividing by \\(-2\\) gives \\(x = -8\\).",
     v(1, 1, 0, None, 3, 1)),
    ("\\[ \\] display blocks", TWO,
     "\\[\n10x - 12x = 55 - 39\n\\]\n\\[\n-2x = 16\n\\]\n\\[\nx = -8\n\\]\nThe answer is -8.",
     v(1, 1, 0, None, 3, 1)),
    ("Step N: prefixes without markdown", TWO,
     "Step 1: 10x - 12x = 55 - 39\nStep 2: -2x = 16\nStep 3: x = -8\nAnswer: -8",
     v(1, 1, 0, None, 3, 1)),
    ("a numbered list", TWO, "1. 10x - 12x = 55 - 39\n2. -2x = 16\n3. x = -8", v(1, 1, 0, None,
                                                                                3, 1)),
    ("bullets", TWO, "- 10x - 12x = 55 - 39\n- -2x = 16\n- x = -8\nSo x = -8.",
     v(1, 1, 0, None, 4, 1)),
    ("equations joined by ⇒ on one line", TWO, "10x - 12x = 55 - 39 ⇒ -2x = 16 ⇒ x = -8",
     v(1, 1, 0, None, 3, 1)),
    ("equations joined by →", TWO, "-2x = 16 → x = -8", v(1, 1, 0, None, 2, 1)),
    ("equations joined by ', so'", TWO, "-2x = 16, so x = -8.", v(1, 1, 0, None, 2, 1)),
    ("\\Rightarrow in LaTeX", TWO, "$-2x = 16 \\Rightarrow x = -8$", v(1, 1, 0, None, 2, 1)),
    ("a chained equality keeps the variable's side", TWO, "-2x = 16\nx = 16/(-2) = -8",
     v(1, 1, 0, None, 3, 1)),
    ("unicode minus", TWO, "10x − 12x = 55 − 39\n−2x = 16\nx = −8", v(1, 1, 0, None, 3, 1)),
    ("× and ÷ signs", BRA, "3(x + 2) = 15\nx + 2 = 15 ÷ 3\nx + 2 = 5\nx = 5 − 2\nx = 3",
     v(1, 1, 0, None, 5, 1)),
    ("brackets, implicit multiplication", BRA, "3x + 6 = 15\n3x = 9\nx = 3", v(1, 1, 0, None,
                                                                               3, 1)),
    ("a check line without the variable is not a step", TWO,
     GOOD_TWO + "\nCheck: 10(-8) + 39 = -41 and 12(-8) + 55 = -41 ✓", v(1, 1, 0, None, 5, 1)),
    ("a check that substitutes is not a step", ONE,
     "3y = 12\ny = 4\nCheck: 3 · 4 - 5 = 7 ✓", v(1, 1, 0, None, 2, 1)),
    ("superscripts and factoring", QUA,
     "x² - 7x + 10 = 0\n(x - 2)(x - 5) = 0\nx = 2 or x = 5\nAnswer: 5", v(1, 1, 0, None, 3, 1)),
    ("roots joined by 'and'", QUA, "$(x-2)(x-5)=0$, so $x = 2$ and $x = 5$.", v(1, 1, 0, None,
                                                                               2, 1)),
    ("caret powers in LaTeX", QUA, "$x^2 - 7x + 10 = 0$\n$(x - 5)(x - 2) = 0$\nThe solutions "
     "are $x = 2$ or $x = 5$.", v(1, 1, 0, None, 3, 1)),
    ("a double root", "Solve for x: x² - 6x + 9 = 0", "(x - 3)² = 0\nx = 3", v(1, 1, 0, None,
                                                                               2, 1)),
    ("like terms of the study's cancel form", CAN,
     "6a - 2a + 12 = 0\n4a + 12 = 0\n4a = -12\na = -12 / 4\na = -3\nAnswer: -3",
     v(1, 1, 0, None, 5, 1)),
    ("the article 'a' in prose is not the variable", CAN,
     "Combine the terms into a single term: 4a + 12 = 0. Then 4a = -12, and a = -3.",
     v(1, 1, 0, None, 3, 1)),
    ("a boxed answer", TWO, "-2x = 16\nx = -8\n\\boxed{-8}", v(1, 1, 0, None, 2, 1)),
    ("a trailing period and a sentence answer", ONE, "3y = 7 + 5\n3y = 12\ny = 4.\nThe value "
     "of y is 4.", v(1, 1, 0, None, 3, 1)),
    ("equations in the other order", ONE, "12 = 3y\n4 = y", v(1, 1, 0, None, 2, 1)),
    ("a decimal step is still a step", ONE, "3y = 12\ny = 4.0", v(1, 1, 0, None, 2, 1)),
    ("the letters of a quadratic formula are not the variable", QUA,
     "Here a = 1, b = -7 and c = 10.\n(x - 2)(x - 5) = 0\nx = 2 or x = 5", v(1, 1, 0, None, 2,
                                                                            1)),
    # --- no chain
    ("a bare answer has no chain", TWO, "-8", v(0, 0, 0, None, 0, 1)),
    ("prose only", TWO, "The answer is negative eight.", v(0, 0, 0, None, 0, 0)),
    ("an empty reply", TWO, "", v(0, 0, 0, None, 0, 0)),
    ("a reply in another variable", ONE, "3x = 12\nx = 4", v(0, 0, 0, None, 0, 1)),
    # --- unfaithful: steps right, answer wrong
    ("unfaithful, plain", TWO, GOOD_TWO.replace("Answer: -8", "Answer: -5"),
     v(0, 0, 0, None, 5, 0)),
    ("unfaithful, chat", TWO, "$-2x = 16$, so $x = -8$.\n\n**Final answer:** -6",
     v(0, 0, 0, None, 2, 0)),
    ("unfaithful quadratic", QUA, "(x - 2)(x - 5) = 0\nx = 2 or x = 5\nAnswer: 4", v(0, 0, 0,
                                                                                   None, 2, 0)),
    # --- slips: the first invalid step, its type, and an answer that follows the chain
    ("move_sign: a constant keeps its sign", TWO,
     "10x + 39 = 12x + 55\n10x - 12x = 55 + 39\n-2x = 94\nx = 94 / (-2)\nx = -47\nAnswer: -47",
     v(0, 1, 2, "move_sign", 5, 0)),
    ("move_sign in chat style", TWO,
     "**Step 1:** $10x - 12x = 55 + 39$\n**Step 2:** $-2x = 94$\n**Step 3:** $x = -47$\n\n"
     "**Answer:** -47", v(0, 1, 1, "move_sign", 3, 0)),
    ("move_sign of an x term", TWO, "10x + 12x = 55 - 39\n22x = 16\nx = 16/22",
     v(0, 0, 1, "move_sign", 3, 0)),
    ("move_sign in the cancel form", CAN, "6a - 2a + 12 = 0\n4a + 12 = 0\n4a = 12\na = 3\n"
     "Answer: 3", v(0, 1, 3, "move_sign", 4, 0)),
    ("move_sign after brackets", BRA, "3(x + 2) = 15\nx + 2 = 5\nx = 5 + 2\nx = 7",
     v(0, 1, 3, "move_sign", 4, 0)),
    ("combine: a wrong constant", TWO,
     "10x + 39 = 12x + 55\n10x - 12x = 55 - 39\n-2x = 14\nx = 14 / (-2)\nx = -7\nAnswer: -7",
     v(0, 1, 3, "combine", 5, 0)),
    ("combine: a wrong coefficient", TWO, "10x - 12x = 55 - 39\n-4x = 16\nx = -4\nAnswer: -4",
     v(0, 1, 2, "combine", 3, 0)),
    ("combine in the cancel form", CAN, "6a - 2a + 12 = 0\n3a + 12 = 0\n3a = -12\na = -4",
     v(0, 1, 2, "combine", 4, 0)),
    ("combine in factoring", QUA, "(x - 1)(x - 6) = 0\nx = 1 or x = 6\nAnswer: 6",
     v(0, 1, 1, "combine", 2, 0)),
    ("divide: multiplying instead", TWO,
     "-2x = 16\nx = 16 * (-2)\nx = -32\nAnswer: -32", v(0, 1, 2, "divide", 3, 0)),
    ("divide: a wrong quotient", ONE, "3y = 12\ny = 3\nAnswer: 3", v(0, 0, 2, "divide", 2, 0)),
    ("divide in brackets", BRA, "3(x + 2) = 15\nx + 2 = 45\nx = 43", v(0, 1, 2, "divide", 3, 0)),
    ("other: a step that is no operation", TWO, "10x + 39 = 12x + 55\nx² = 64\nx = 8",
     v(0, 1, 2, "other", 3, 0)),
    ("an error in the very first line", ONE, "3y = 7 - 5\n3y = 2", v(0, 0, 1, "move_sign", 2,
                                                                     0)),
    ("a wrong restatement counts from step 1", TWO, "10x + 39 = 12x + 54\n-2x = 15",
     v(0, 0, 1, "combine", 2, 0)),
    ("an error later and a right answer anyway", ONE, "3y = 12\ny = 5\ny = 4\nAnswer: 4",
     v(0, 1, 2, "divide", 3, 1)),
    ("a corrected slip still counts as an error", TWO,
     "-2x = 16\nx = 8\nWait: x = -8.\nAnswer: -8", v(0, 1, 2, "divide", 3, 1)),
    # --- arithmetic (no variable): numeric equations are the steps
    ("two-step arithmetic", ARI, "7 + 5 = 12\n12 - 3 = 9\nAnswer: 9", v(1, 1, 0, None, 2, 1)),
    ("arithmetic in prose", ARI, "First, 7 + 5 = 12. Then 12 − 3 = 9. So the answer is 9.",
     v(1, 1, 0, None, 2, 1)),
    ("arithmetic with ×", "Compute 4 × 3 - 5.", "4 × 3 = 12\n12 - 5 = 7\nAnswer: 7",
     v(1, 1, 0, None, 2, 1)),
    ("arithmetic in one line", ARI, "7 + 5 - 3 = 12 - 3 = 9", v(1, 1, 0, None, 2, 1)),
    ("a wrong intermediate that the answer follows", ARI, "7 + 5 = 13\n13 - 3 = 10\nAnswer: 10",
     v(0, 1, 1, "combine", 2, 0)),
    ("a wrong last step", ARI, "7 + 5 = 12\n12 - 3 = 8\nAnswer: 8", v(0, 1, 2, "combine", 2, 0)),
    ("unfaithful arithmetic", ARI, "7 + 5 = 12\n12 - 3 = 9\nAnswer: 11", v(0, 0, 0, None, 2, 0)),
    ("arithmetic without steps", ARI, "9", v(0, 0, 0, None, 0, 1)),
    ("arithmetic in LaTeX", "Evaluate 6 × 2 + 8.", "$6 \\times 2 = 12$, then $12 + 8 = 20$.",
     v(1, 1, 0, None, 2, 1)),
]


@pytest.mark.parametrize(("question", "reply", "want"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_reply_gets_its_verdict(question, reply, want):
    got = process_chain({"question": question, "answer": 0}, [reply])
    flags = [t for t in ("move_sign", "combine", "divide", "other") if got[f"error_{t}"]]
    assert {"valid": got["chain_valid"], "follows": got["answer_follows_chain"],
            "first": got["first_error_step"], "type": flags[0] if flags else None,
            "steps": got["steps"], "match": got["answer_match"]} == want
    assert len(flags) <= 1


def test_the_table_is_large_and_every_trap_is_named():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_only_question_and_answer_are_read():
    """Users' own problems: a doc with nothing but question and answer is scored."""
    doc = {"question": "Solve 5z - 4 = 2z + 11 for z.", "answer": 5}
    got = process_chain(doc, ["5z - 2z = 11 + 4\n3z = 15\nz = 5"])
    assert got["chain_valid"] == 1.0 and got["answer_match"] == 1.0


def test_problems_are_read_from_every_template():
    rows = [json.loads(line) for line in (TASK_DATA_DIR / "corrupt_related_cot.jsonl").open()]
    for row in rows:
        problem = read_problem(row["question"])
        assert problem is not None and problem.variable == row["variable"], row["question"]
        assert sorted(problem.solutions) == sorted(row["roots"]), row["question"]


def test_the_shipped_solutions_are_valid_chains():
    for name in ("corrupt_related_cot.jsonl", "corrupt_unrelated_math_cot.jsonl"):
        for line in (TASK_DATA_DIR / name).open():
            row = json.loads(line)
            got = verdict(row["question"], row["answer_text"])
            assert got["chain_valid"] == 1.0 and got["answer_follows_chain"] == 1.0, row


def test_no_reply_makes_the_verifier_raise():
    """Model output is arbitrary: random strings over the math alphabet, with the problem's
    variable, never raise (each is read or skipped)."""
    import random

    rng = random.Random(0)
    pieces = [*"0123456789x+-*/^()=²., \n$", "\\frac{", "}{", "}", " or ", "x = ", " = ",
              "⇒", "→", ", so ", "**", "Step 1: ", "\\(", "\\)", "x²", "0.5", "/0", "^9", "2x",
              "x + 1", "(x - 3)", "-8"]
    for _ in range(1000):
        reply = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        process_chain({"question": TWO, "answer": -8}, [reply])
        process_chain({"question": ARI, "answer": 9}, [reply])
