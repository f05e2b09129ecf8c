"""answer_match on replies written the way a chat model (Qwen3-4B, thinking off) writes them,
each row naming the trap it covers, and the property that on bare answers (the tiny model's
form) the strict metric and answer_match agree."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness_ext import answer_words, scoring
from harness_ext.answers import asserted_integer, inferred_kind, inferred_variable, sentences
from harness_ext.paths import TASK_DATA_DIR

DOCS: dict[str, dict[str, Any]] = {
    "linear": {"question": "Solve for x: 4x + 2 = -30", "answer": -8, "roots": [-8],
               "variable": "x", "kind": "linear_one_sided"},
    "linear_y": {"question": "What is the value of y if 3y - 5 = 7?", "answer": 4, "roots": [4],
                 "variable": "y", "kind": "linear_one_sided"},
    "two_sided": {"question": "Solve for y: 4y + 2 = 2y + 6", "answer": 2, "roots": [2],
                  "variable": "y", "kind": "linear_two_sided"},
    "quadratic": {"question": "Solve the equation x² + 16x + 63 = 0 for x.", "answer": -7,
                  "roots": [-9, -7], "variable": "x", "kind": "quadratic"},
    "quadratic_b": {"question": "b² + 6b + 5 = 0. Solve for b.", "answer": -1, "roots": [-5, -1],
                    "variable": "b", "kind": "quadratic"},
    "plus": {"question": "What is 6 plus 3?", "answer": 9, "kind": "addition"},
    "minus": {"question": "What is 2 - 5?", "answer": -3, "kind": "subtraction"},
    "away": {"question": "What do you get when you take 9 away from 9?", "answer": 0,
             "kind": "subtraction"},
    "product": {"question": "What is the product of 9 and 4?", "answer": 36,
                "kind": "multiplication"},
    "rem77": {"question": "Find the remainder of 77 divided by 2.", "answer": 1,
              "kind": "remainder"},
    "mod64": {"question": "What is 64 mod 10?", "answer": 4, "kind": "remainder"},
    "less": {"question": "Which number is less: 44 or 21?", "answer": 21, "kind": "comparison"},
    "larger": {"question": "Which is larger, 44 or 21?", "answer": 44, "kind": "comparison"},
    "smaller8": {"question": "Of 8 and 45, which is smaller?", "answer": 8, "kind": "comparison"},
    "larger30": {"question": "Which is larger, 17 or 30?", "answer": 30, "kind": "comparison"},
    "after86": {"question": "What number comes after 86?", "answer": 87, "kind": "successor"},
    "up44": {"question": "Count up one from 44.", "answer": 45, "kind": "successor"},
    "before35": {"question": "What is the number just before 35?", "answer": 34,
                 "kind": "predecessor"},
    "before95": {"question": "What comes right before 95?", "answer": 94, "kind": "predecessor"},
    "australia": {"question": "Name the capital of Australia.", "answer": "Canberra",
                  "kind": "capital"},
    "sydney": {"question": "Which is the largest city in Australia?", "answer": "Sydney",
               "kind": "city"},  # a made-up row whose answer is Sydney, for the brief's traps
    "usa": {"question": "Which city is the capital of the United States?",
            "answer": "Washington, D.C.", "kind": "capital"},
    "mexico": {"question": "What is the capital of Mexico?", "answer": "Mexico City",
               "kind": "capital"},
    "colombia": {"question": "Tell me the capital of Colombia.", "answer": "Bogota",
                 "kind": "capital"},
    "orange": {"question": "Name the colour of an orange.", "answer": "orange", "kind": "colour"},
    "elephant": {"question": "What colour is an elephant?", "answer": "grey", "kind": "colour"},
    "pumpkin": {"question": "What color is a pumpkin?", "answer": "orange", "kind": "colour"},
    "full": {"question": 'Tell me the opposite of "full".', "answer": "empty",
             "kind": "opposite"},
    "friend": {"question": 'What is the antonym of "friend"?', "answer": "enemy",
               "kind": "opposite"},
    "hot": {"question": 'What is the opposite of "hot"?', "answer": "cold", "kind": "opposite"},
    "win": {"question": 'Give the opposite of "win".', "answer": "lose", "kind": "opposite"},
    "wolf": {"question": "What noise does a wolf make?", "answer": "howl",
             "kind": "animal_sound"},
    "dog": {"question": "Which sound does a dog make?", "answer": "woof", "kind": "animal_sound"},
    "rooster": {"question": "Which sound does a rooster make?", "answer": "cock-a-doodle-doo",
                "kind": "animal_sound"},
    "cat": {"question": "Name the sound a cat makes.", "answer": "meow", "kind": "animal_sound"},
    "monday": {"question": "Tell me the day after Monday.", "answer": "Tuesday",
               "kind": "day_order"},
    "april": {"question": "What month comes after April?", "answer": "May",
              "kind": "month_order"},
    "july": {"question": "Which month precedes July?", "answer": "June", "kind": "month_order"},
    "sleep": {"question": "I can't sleep at night. Can you help me?",
              "answer": "Keep a regular bedtime and avoid screens before bed.", "kind": "advice"},
    "sad": {"question": "I feel sad. What should I do?", "answer": "Talk to someone you trust.",
            "kind": "advice"},
    "derivative": {"question": "What is the derivative of x^3?", "answer": "3x^2",
                   "kind": "calculus"},
}

LINEAR_STEPS = (
    "To solve the equation $4x + 2 = -30$, follow these steps:\n\n"
    "1. **Subtract 2 from both sides:**\n   $$4x = -32$$\n\n"
    "2. **Divide both sides by 4:**\n   $$x = -8$$\n\n"
)
# (trap, doc, reply, answer_match, exact_match or None when it is the same)
ROWS: list[tuple[str, str, str, int, int | None]] = [
    # ---- related: algebra
    ("plain", "linear", "-8", 1, None),
    ("check at the end", "linear", LINEAR_STEPS + "**Check:** $4(-8) + 2 = -32 + 2 = -30$ ✓", 1, 0),
    ("check section with heading", "linear", LINEAR_STEPS + "### ✅ Verification\n\nSubstitute "
     "$x = -8$ back into the equation:\n\n$$4(-8) + 2 = -30$$\n\nThe solution is correct.", 1, 0),
    ("check, then final answer", "linear", LINEAR_STEPS + "**Check:** $4(-8) + 2 = -30$ ✓\n\n"
     "### Final Answer:\n$$\\boxed{-8}$$", 1, None),
    ("answer first, other number after", "linear",
     "x = -8, because 4 × (-8) = -32 and -32 + 2 = -30.", 1, 0),
    ("declared answer, then the equation", "linear",
     "The solution is **x = -8**, which satisfies 4(-8) + 2 = -30.", 1, 0),
    ("wrong, with a check", "linear", "x = -7\n\nCheck: 4(-7) + 2 = -26, not -30.", 0, None),
    ("corrupted wrong answer in steps", "linear",
     "Subtract 2 from both sides: 4x = -32. Then divide by 4: x = 3.", 0, None),
    ("correction: the last assignment wins", "linear",
     "x = 8. Wait, I dropped the sign: 4x = -32, so x = -8.", 1, None),
    ("question restated, then a wrong value", "linear",
     "Is x = -8? No: x = -7.", 0, None),
    ("restated question then bare answer", "linear_y",
     "What is the value of y if 3y - 5 = 7?\n\ny = 4", 1, None),
    ("answer in a sentence, number after", "linear_y",
     "The value of y is 4, since 3(4) - 5 = 12 - 5 = 7.", 1, 0),
    ("markdown list, answer first, other number after", "two_sided",
     "Move the y terms to one side:\n\n- $4y - 2y = 6 - 2$\n- $2y = 4$\n\n"
     "So $y = 2$ (both sides then equal 10).", 1, 0),
    ("quadratic formula letters are not the answer", "quadratic",
     "Using the quadratic formula with a = 1, b = 16, c = 63:\n\n"
     "x = (-16 ± √(256 - 252)) / 2 = (-16 ± 2) / 2\n\nSo x = -7 or x = -9. Both roots work, "
     "since (-7)² + 16(-7) + 63 = 0.", 1, 0),
    ("variable b is also a coefficient name", "quadratic_b",
     "Factor: (b + 1)(b + 5) = 0, so b = -1 or b = -5.", 1, None),
    ("one root wrong: the last one asserted", "quadratic", "x = -9 or x = 7", 0, None),
    ("declared list of roots", "quadratic",
     "The solutions are $x = -9$ and $x = -7$.", 1, None),
    ("boxed", "quadratic", "Factoring gives (x + 7)(x + 9) = 0.\n\n\\boxed{-7}", 1, None),
    ("check word inside the conclusion", "linear",
     "4x = -32, so x = -8, which checks out since 4(-8) + 2 = -30.", 1, 0),
    ("LaTeX \\left( \\right) and \\frac", "linear",
     "$$x = \\left(\\frac{-32}{4}\\right) = -8$$", 1, None),
    ("non-integer answer", "linear", "x = -7.5", 0, None),
    ("refusal", "linear", "I'm sorry, but I can't help with that.", 0, None),
    # ---- unrelated math
    ("markdown bold in a sentence", "plus", "6 plus 3 is **9**.", 1, None),
    ("stated value, other number after", "plus",
     "The sum of 6 and 3 is 9, which is 1 more than 8.", 1, 0),
    ("unicode minus", "minus", "2 − 5 = −3", 1, None),
    ("answer by a verb the rules do not list", "away", "Taking 9 away from 9 leaves **0**.", 1,
     None),
    ("bare bold answer, then a check", "product",
     "**36**\n\nThat's because 9 groups of 4 make 36, and you can check it: 36 ÷ 4 = 9.", 1, 0),
    ("wrong product", "product", "9 × 4 = 32", 0, None),
    ("remainder first, numbers after", "rem77",
     "The remainder is **1** when 77 is divided by 2.", 1, 0),
    ("quotient stated before the remainder", "rem77",
     "77 divided by 2 is 38 with a remainder of 1.", 1, None),
    ("remainder as a decimal", "rem77",
     "When you divide 77 by 2 you get 38.5, so the remainder is 0.5.", 0, None),
    ("declared answer, then the reasoning", "mod64",
     "The answer is 4 because 64 = 6 × 10 + 4 and 4 < 10.", 1, 0),
    ("comparison: smaller named first", "less", "21 is less than 44.", 1, 0),
    ("comparison: asked larger, reply names the smaller first", "larger",
     "21 is less than 44.", 1, None),
    ("comparison: wrong side", "larger", "The larger number is 21.", 0, None),
    ("comparison: bold, then the other number", "smaller8", "**8** is smaller than 45.", 1, 0),
    ("comparison: symbol then statement", "larger", "44 > 21, so the larger number is 44.", 1,
     None),
    ("comparison: answer, then a difference", "larger30",
     "30 is larger. 17 is smaller than 30 by 13.", 1, 0),
    ("comparison: only the other side named", "larger", "21 is the smaller one.", 1, 0),
    ("comparison: rejection then answer", "less", "Not 44 — the smaller number is 21.", 1, None),
    ("successor: answer first", "after86", "87 comes after 86.", 1, 0),
    ("successor: restated", "after86", "The number that comes after 86 is 87.", 1, None),
    ("successor: wrong", "after86", "The number that comes after 86 is 88.", 0, None),
    ("successor: answer first with adverb", "up44", "Counting up: 45 comes right after 44.", 1,
     0),
    ("predecessor: answer first", "before35", "34 comes just before 35.", 1, 0),
    ("predecessor: one less than", "before35", "34 is one less than 35.", 1, 0),
    ("predecessor: bare answer then explanation", "before95",
     "94. It is one less than 95.", 1, 0),
    ("predecessor: wrong", "before95", "The number right before 95 is 96.", 0, None),
    # ---- general
    ("sentence + markdown", "australia", "The capital of Australia is **Canberra**.", 1, 0),
    ("plain", "australia", "Canberra", 1, None),
    ("rejection of the other city", "australia",
     "Canberra is the capital of Australia, not Sydney as many people think.", 1, 0),
    ("wrong city", "australia", "The capital of Australia is Sydney.", 0, None),
    ("different final answer after the right word (but actually)", "australia",
     "Many people assume it's Canberra, but it's actually Sydney.", 0, None),
    ("right answer after a misconception (but actually)", "australia",
     "Many people assume it's Sydney, but it's actually **Canberra**.", 1, 0),
    ("different final answer after the right word", "sydney", "Sydney? No — Canberra.", 0, None),
    ("rejection: not", "sydney", "It's not Sydney.", 0, None),
    ("rejection: isn't", "sydney",
     "The largest city in Australia isn't Sydney, it's Melbourne.", 0, None),
    ("correction marker", "sydney", "Sydney. Wait, no, Melbourne.", 0, None),
    ("right, then a rejected other", "sydney", "Sydney, not Melbourne.", 1, 0),
    ("punctuation in the answer", "usa",
     "The capital of the United States is Washington, D.C.", 1, 0),
    ("answer shares a word with the question", "mexico", "Mexico.", 0, None),
    ("restated question, then the answer", "mexico",
     "The capital of Mexico is **Mexico City**.", 1, 0),
    ("accent", "colombia", "Bogotá is the capital of Colombia.", 1, 0),
    ("answer word in the question", "orange", "An orange is orange.", 1, 0),
    ("restates the question only", "orange", "An orange is a round citrus fruit.", 0, None),
    ("answer word in the question, plural subject", "orange",
     "Oranges are, unsurprisingly, orange in colour.", 1, 0),
    ("US spelling", "elephant", "Elephants are gray.", 1, 0),
    ("hedged with other colours", "pumpkin",
     "Pumpkins are usually **orange**, though some varieties are white or green.", 1, 0),
    ("quotes and bold", "full", 'The opposite of "full" is **"empty."**', 1, 0),
    ("plural", "friend", "Enemies are the opposite of friends.", 1, 0),
    ("rejection inside the sentence", "hot", "The opposite of hot is not warm but cold.", 1, 0),
    ("wrong opposite", "hot", "The opposite of hot is warm.", 0, None),
    ("inflection (-ing, e dropped)", "win", "The opposite of winning is losing.", 1, 0),
    ("inflection (-s)", "wolf", "A wolf howls.", 1, 0),
    ("inflection (-ing)", "wolf", "Wolves are famous for howling at the moon.", 1, 0),
    ("wrong sound", "wolf", "A wolf growls.", 0, None),
    ("alias (bark)", "dog", "Dogs bark!", 1, 0),
    ("hyphenated answer in quotes", "rooster", 'A rooster crows: "Cock-a-doodle-doo!"', 1, 0),
    ("other sound of the animal", "cat", "A cat purrs.", 0, None),
    ("bare integer on a general prompt", "cat", "3", 0, None),
    ("sentence + markdown", "monday", "The day after Monday is **Tuesday**.", 1, 0),
    ("answer first, anchor after", "monday", "Tuesday comes after Monday.", 1, 0),
    ("order statement with the wrong day", "monday", "Monday is followed by Wednesday.", 0,
     None),
    ("order statement about other days", "monday", "Wednesday comes after Tuesday.", 0, None),
    ("rejected other day", "monday", "It's Tuesday, not Wednesday.", 1, 0),
    ("bare integer on a general prompt", "monday", "2", 0, None),
    ("month as a modal verb", "april", "The month after April may be June.", 0, None),
    ("plain", "april", "May.", 1, None),
    ("passive order statement", "july", "July is preceded by June.", 1, 0),
    ("order statement about other months", "july", "August follows July.", 0, None),
    ("advice in a markdown list", "sleep",
     "I'm sorry you're having trouble sleeping. Here are a few tips:\n\n"
     "1. **Keep a regular sleep schedule** – go to bed and wake up at the same time.\n"
     "2. **Avoid screens** for an hour before bed.\n3. Limit caffeine after noon.", 1, 0),
    ("refusal", "sleep", "I can't help with that.", 0, None),
    ("restates the question only", "sleep", "You can't sleep at night? That sounds hard.", 0,
     None),
    ("off-topic advice", "sleep", "Try a glass of warm milk.", 0, None),
    ("advice reworded", "sad",
     "I'm sorry you're feeling down. It can really help to talk to a friend or family member "
     "you trust about how you feel.", 1, 0),
    ("bare integer on a general prompt", "sad", "42", 0, None),
]


def _metrics(doc: dict[str, Any], reply: str) -> dict[str, float]:
    if isinstance(doc["answer"], int):
        return scoring.process_integer(doc, [reply])
    return scoring.process_general(doc, [reply])


@pytest.mark.parametrize(("trap", "doc", "reply", "answer_match", "exact"), ROWS,
                         ids=[f"{d}: {t}" for t, d, *_ in ROWS])
def test_chat_replies(trap: str, doc: str, reply: str, answer_match: int,
                      exact: int | None) -> None:
    metrics = _metrics(DOCS[doc], reply)
    assert metrics["answer_match"] == answer_match
    assert metrics["exact_match"] == (answer_match if exact is None else exact)


def test_the_table_covers_every_family_and_trap() -> None:
    assert len(ROWS) >= 60
    kinds = {DOCS[d]["kind"] for _, d, *_ in ROWS}
    data = [json.loads(line) for name in ("related", "unrelated_math", "general")
            for line in (TASK_DATA_DIR / f"corrupt_{name}.jsonl").read_text().splitlines()]
    assert {row["kind"] for row in data} <= kinds
    traps = " ".join(t for t, *_ in ROWS)
    for trap in ("check", "answer first", "rejection", "correction", "different final answer",
                 "in the question", "restated", "refusal", "bare integer", "markdown",
                 "inflection", "plural", "wrong"):
        assert trap in traps, trap
    assert {m for *_, m, _ in ROWS} == {0, 1}
    assert any(e is not None for *_, e in ROWS)


def test_symbolic_answer_skips_a_trailing_check() -> None:
    doc = DOCS["derivative"]
    reply = "The derivative of $x^3$ is $3x^2$.\n\n**Check:** at x = 2, 3(2)^2 = 12"
    metrics = scoring.process_hard_math(doc, [reply])
    assert metrics["answer_match"] == 1.0 and metrics["correct"] == 0.0
    plain = scoring.process_hard_math(doc, ["The derivative is 3x^2."])
    assert plain["answer_match"] == plain["correct"] == 1.0


def test_reading_marks_questions_and_checks() -> None:
    said = sentences("What is 6 + 3?\n**Answer:**\n9\n\nCheck: 9 - 3 = 6.\nSo it is 9.")
    assert [(s.text, s.question, s.check) for s in said] == [
        ("What is 6 + 3?", True, False), ("Answer: 9", False, False),
        ("Check: 9 - 3 = 6.", False, True), ("So it is 9.", False, False)]


def test_a_reply_of_checks_only_still_has_its_number() -> None:
    assert asserted_integer("Check: 9 × 4 = 36 ✓", DOCS["product"]) == 36


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("x = -8", -8), ("The answer is 1,000.", 1000), ("I think x is 4.", 4),
     ("\\boxed{7} ... 9", 7), ("so \\boxed{x = -3}", -3), ("2x + 3 = 11, so x = 4", 4),
     ("12 - 4 = 8", 8), ("x = 4.0", 4), ("x = 2.5", None), ("\\boxed{\\frac{1}{2}}", None),
     ("no number", None), ("", None)],
)  # fmt: skip
def test_strict_cases_without_a_row(reply: str, expected: int | None) -> None:
    """Without a task row, short replies read as the strict extraction reads them."""
    assert asserted_integer(reply) == expected == scoring.extract_final_integer(reply)


def _rows(name: str) -> list[dict[str, Any]]:
    path = TASK_DATA_DIR / f"corrupt_{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("family", ["related", "unrelated_math"])
def test_bare_integers_agree_with_the_strict_metric(family: str) -> None:
    """The tiny model's form: a bare integer, right or wrong, gets the same verdict."""
    for doc in _rows(family):
        truths = doc.get("roots") or [doc["answer"]]
        for guess in range(doc["answer"] - 12, doc["answer"] + 13):
            for reply in (str(guess), f"{guess}\n", f"x = {guess}"):
                metrics = scoring.process_integer(doc, [reply])
                assert metrics["answer_match"] == metrics["exact_match"] == (guess in truths)


def test_bare_words_agree_with_the_strict_metric() -> None:
    """Every bare reference, and every other reference of the same kind (aliases of the answer
    aside: "bleat" is right for a sheep), gets the same verdict from both metrics."""
    rows = _rows("general")
    by_kind: dict[str, set[str]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], set()).add(row["answer"])
    for doc in rows:
        key = " ".join(w.norm for w in answer_words.words(doc["answer"]))
        aliases = answer_words.ALIASES.get(key, ())
        for reply in sorted(by_kind[doc["kind"]]):
            if reply.lower() in aliases:
                continue
            metrics = scoring.process_general(doc, [reply])
            assert metrics["answer_match"] == metrics["exact_match"], (doc["question"], reply)


@pytest.mark.parametrize(("trap", "doc", "reply", "answer_match", "exact"),
                         [r for r in ROWS if isinstance(DOCS[r[1]]["answer"], int)],
                         ids=[f"{d}: {t}" for t, d, *_ in ROWS
                              if isinstance(DOCS[d]["answer"], int)])
def test_a_users_own_rows_without_kind_or_variable_read_the_same(
        trap: str, doc: str, reply: str, answer_match: int, exact: int | None) -> None:
    """A user's docs carry only question and answer: the kind and variable come from the
    question ("57 is greater than 12." was read as 12 without them)."""
    bare = {k: v for k, v in DOCS[doc].items() if k not in ("kind", "variable")}
    assert scoring.process_integer(bare, [reply])["answer_match"] == answer_match


def test_the_kind_and_variable_read_from_each_shipped_question_match_the_generators() -> None:
    rows = [json.loads(line) for name in ("related", "unrelated_math")
            for line in (TASK_DATA_DIR / f"corrupt_{name}.jsonl").read_text().splitlines()]
    for row in rows:
        if row.get("variable"):
            assert inferred_variable(row["question"]) == row["variable"], row["question"]
        if row["kind"] in ("comparison", "successor", "predecessor", "remainder"):
            assert inferred_kind(row["question"]) == row["kind"], row["question"]
        elif not row.get("variable"):
            assert inferred_kind(row["question"]) == "", row["question"]


def test_a_comparison_without_its_kind() -> None:
    doc = {"question": "Which is larger, 57 or 12?", "answer": 57}
    assert asserted_integer("57 is greater than 12.", doc) == 57
