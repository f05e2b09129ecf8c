"""What a chat reply asserts as its answer: the ``answer_match`` metric.

The strict metrics (``exact_match``) read the bare answers the tiny model is trained to give.
A chat model answers in sentences: it restates the question, works step by step, checks its
result and uses markdown. ``answer_match`` reads what the reply *asserts*, by a few rules.

Reading a reply (every family)
- Markup goes: ``**bold**``, ``$..$``, ``\\(..\\)``, ``\\text{..}``, headings, list markers. A line
  ending in ":" is read together with the next one ("**Answer:**" then "36").
- Questions assert nothing: a sentence ending in "?" (a restated question, or "Sydney? No -
  Canberra.") is skipped.
- Checks assert nothing: from a sentence that names a check ("Check:", "Verify", "substituting
  back") up to the next heading or the next sentence opening with so, therefore, thus, hence,
  answer or final. (If that leaves no number at all, the checks are read after all.)

Integer families (``asserted_integer``): the first rule that finds a value decides; within a
rule the LAST statement wins, so a corrected answer replaces the first.
1. ``\\boxed{}``, read as the strict metric reads it.
2. A declared answer: "the answer is N", "Answer: N", "the solutions are x = -9 and x = -7"
   (the last value listed).
3. The family's own statement, from the row's ``kind`` and ``variable`` (read from the
   question when the row has no such field: ``inferred_kind``, ``inferred_variable``):
   - algebra: an assignment to the question's variable, ``x = -8``, ``x = -14/2 = -7`` or "y is
     4"; other letters (the a, b, c of the quadratic formula) are not the answer;
   - remainders: "the remainder is N", "a remainder of N", "N is the remainder", "leaves N";
   - larger/smaller and successor/predecessor: order statements ("21 is less than 44", "44 >
     21", "the larger number is 44", "87 comes after 86", "86 is followed by 87") give the
     number on the side the question asks for; a statement about other numbers is skipped.
4. A stated value: "is N", "equals N", "= N", "gives N", with the clause ending at N ("which is
   1 more than 12" states no value), or a sentence that is just a number ("94. It is one less
   than 95.").
5. The last number, the strict rule.
A value with a fractional part is no integer answer. Word answers (general) follow the rules
in ``answer_words``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from formats.calendar import DAYS, MONTHS
from harness_ext.extract import boxed_integer, last_boxed, last_integer, to_int

# ---------------------------------------------------------------- reading a reply

_MARKUP = [  # longer commands first: \\left before \\le
    ("\\left", ""), ("\\right", ""), ("**", ""), ("__", ""), ("`", ""), ("\\(", ""),
    ("\\)", ""), ("\\[", ""), ("\\]", ""), ("$", ""), ("\u2212", "-"), ("\u2019", "'"),
    ("\\times", "\u00d7"), ("\\cdot", "\u00b7"),
    ("\\div", "\u00f7"), ("\\leq", "\u2264"), ("\\geq", "\u2265"), ("\\le", "\u2264"),
    ("\\ge", "\u2265"), ("\\lt", "<"), ("\\gt", ">"), ("\\neq", "\u2260"), ("\\qquad", " "),
    ("\\quad", " "), ("\\Rightarrow", "\u21d2"), ("\\implies", "\u21d2"), ("\\to", "\u2192"),
    ("\\,", " "), ("\\;", " "), ("\\!", ""),
]  # fmt: skip
_TEXT_COMMAND = re.compile(r"\\(?:text|mathrm|mathbf|textbf|operatorname)\{([^{}]*)\}")
_BULLET = re.compile(r"^[-*+\u2022]\s+")
_NUMBERED = re.compile(r"^\d{1,2}[.)]\s+")  # a list marker only where two lines have one
_HEADING = re.compile(r"^\s*(?:#+\s|\*\*[^*]+\*\*:?\s*$|[^\s].{0,40}:\s*$)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_CHECK = re.compile(
    r"\b(?:(?:double[- ])?check(?:s|ed|ing)?|verif(?:y|ies|ied|ying|ication)|"
    r"(?:substitut|plugg?)\w*\b[^.]{0,25}\b(?:back|into the original))\b", re.I)
_CONCLUDES = re.compile(r"^\W*(?:so|therefore|thus|hence|answer|final|in conclusion)\b", re.I)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a reply, with what the reading rules need to know about it."""

    text: str
    heading: bool  # the first sentence of a heading or "label:" line
    check: bool
    question: bool


def plain(text: str) -> str:
    """``text`` without markdown and light LaTeX (numbers and words stay where they were)."""
    text = _TEXT_COMMAND.sub(r"\1", text)
    for old, new in _MARKUP:
        text = text.replace(old, new)
    return re.sub(r"[\u2013\u2014](?=\d)", "-", text)  # a dash glued to a number is a minus


def _lines(text: str) -> list[tuple[str, bool]]:
    """Non-empty lines as (text, is heading); a "label:" line joined with the next line."""
    raw = [line.strip() for line in text.splitlines()]
    numbered = sum(bool(_NUMBERED.match(plain(line))) for line in raw) >= 2
    out: list[tuple[str, bool]] = []
    pending = ""
    for line in raw:
        if not plain(line).strip():
            continue
        heading = bool(_HEADING.match(line))
        line = _BULLET.sub("", plain(line).strip().lstrip("#").strip())
        line = _NUMBERED.sub("", line) if numbered else line
        if pending:
            out.append((f"{pending} {line}", True))
            pending = ""
        elif line.endswith(":"):
            pending = line
        else:
            out.append((line, heading))
    if pending:
        out.append((pending, True))
    return out


def sentences(reply: str) -> list[Sentence]:
    """The reply's sentences, marked as questions and as parts of a check."""
    out = []
    in_check = False
    for line, heading in _lines(reply):
        for i, text in enumerate(_SENTENCE_END.split(line)):
            opens, concludes = heading and i == 0, bool(_CONCLUDES.match(text))
            if opens or concludes:
                in_check = False
            if _CHECK.search(text) and not concludes:  # "So x = -8, which checks out."
                in_check = True
            question = text.rstrip(" *\"')").endswith("?")
            out.append(Sentence(text, opens, in_check, question))
    return out


def statements(reply: str) -> list[str]:
    """Sentences that can assert an answer: no questions, no checks (unless only checks hold
    a number)."""
    said = [s for s in sentences(reply) if not s.question]
    kept = [s.text for s in said if not s.check]
    if any(re.search(r"\d", t) for t in kept) or not any(s.check for s in said):
        return kept
    return [s.text for s in said]


def without_checks(reply: str) -> str:
    """The reply as lines of statements (for the symbolic scorer's last-line rule)."""
    return "\n".join(statements(reply))


# ---------------------------------------------------------------- integer answers

_NUM = r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)"
_END = (r"(?=\s*(?:$|[.,;:!?)\]\u2713\u2714\u2705\u2014\u2013])|\s+(?:\(|(?:and|or|so|since|"
        r"because|as|when|which|for|but|if|then|with|in|on|that|is|are|was)\b))")
_VAR = r"[A-Za-z](?:_?\{?\d+\}?|[\u2080-\u2089]+)?"
_LIST = rf"{_NUM}(?:\s*(?:,\s*(?:and|or)?|and|or)\s*(?:{_VAR}\s*=\s*)?{_NUM})*"
_DECLARED = re.compile(
    rf"\b(?:final\s+)?(?:answer|solutions?|roots?|result)\b[^:=\d\n]{{0,40}}?"
    rf"\s*(?:\bis|\bare|:|=|\bwould be|\bwill be)\s*(?:that\s+)?(?:{_VAR}\s*=\s*)?"
    rf"(?P<v>{_LIST}){_END}", re.I)
_BARE = re.compile(rf"^\s*(?:{_VAR}\s*=\s*)?(?P<v>{_NUM})\s*[.!]?\s*$")
_STATED = re.compile(
    rf"(?:\bis|\bare|\bwas|'s|\bequals|\bequal to|\bgives?|\bgets?|\bmakes?|\bbe|=|:|"
    rf"\u21d2|\u2192)\s*(?P<v>{_NUM}){_END}", re.I)
_REMAINDER = [
    re.compile(rf"\bremainder\b(?:(?!\bnot\b)[^\n]){{0,40}}?(?:\bis|\bof|:|=|\bwould be|"
               rf"\bwill be)\s*(?P<v>{_NUM}){_END}", re.I),
    re.compile(rf"\bremainder\s+(?P<v>{_NUM}){_END}", re.I),
    re.compile(rf"(?P<v>{_NUM})\s+(?:is|as|being)\s+(?:the\s+|a\s+|our\s+)?remainder", re.I),
    re.compile(rf"\b(?:leaves?|leaving)\s+(?:a\s+remainder\s+of\s+)?(?P<v>{_NUM}){_END}", re.I),
    re.compile(rf"(?P<v>{_NUM})\s+(?:is\s+)?left\s+over", re.I),
]


class _NotFound:
    """A rule that found no statement (a found value may itself be None: "x = 2.5")."""


NOT_FOUND = _NotFound()
Found = int | None | _NotFound


def _value(token: str) -> int | None:
    return to_int(token)


def _last(patterns: list[re.Pattern[str]], texts: list[str]) -> Found:
    """Value of the last match of any pattern (by sentence, then position); for a list
    ("-9 and -7") its last number."""
    best: tuple[tuple[int, int], str] | None = None
    for index, text in enumerate(texts):
        for pattern in patterns:
            for match in pattern.finditer(text):
                key = (index, match.end("v"))
                if best is None or key > best[0]:
                    best = (key, match.group("v"))
    if best is None:
        return NOT_FOUND
    return _value(re.findall(_NUM, best[1])[-1])


def _assignment(variable: str) -> re.Pattern[str]:
    """``x = N``, ``x_1 = N``, ``x = 5 - 13 = -8``, ``y is N`` for the question's variable."""
    var = re.escape(variable) + r"(?:_?\{?\d+\}?|[\u2080-\u2089]+)?"
    return re.compile(rf"(?<![\w)^.]){var}\s*(?:(?:is|equals)\s+|=\s*(?:[^=\n]*?=\s*)*?)"
                      rf"(?P<v>{_NUM}){_END}")


# ---------------------------------------------------------------- order statements

_LOW = "smaller|less|lower|lesser|fewer|before|precedes|preceding|previous|earlier"
_HIGH = "larger|bigger|greater|higher|more|after|follows|following|next|later"
_ASK_LOW = re.compile(rf"\b(?:{_LOW}|down)\b", re.I)
_ASK_HIGH = re.compile(rf"\b(?:{_HIGH}|up)\b", re.I)
NAMES = r"\b(?:" + "|".join((*DAYS, *MONTHS)) + r")\b"
_OP_AFTER = r"(?!\s*[-+*/\u00d7\u00f7^=]\s*\d)"
_NEG_FREE = r"(?:(?!\bnot\b|n't\b|\bnever\b)[^.!?;\n])"


@dataclass(frozen=True)
class Order:
    """What one statement says: the lower and the higher item (either may be unnamed)."""

    low: str | None
    high: str | None


def _order_patterns(item: str) -> list[tuple[re.Pattern[str], str]]:
    rel = rf"(?P<rel>(?i:{_LOW}|{_HIGH}))"
    verb = r"(?i:is|comes|come|was|would be|will be|'s)"
    subject = (rf"(?P<a>{item})\s+(?:{verb}\s+)?(?:(?i:also|clearly|obviously)\s+)?"
               rf"(?:(?i:the|a)\s+)?(?:(?i:number|one|value|integer|day|month)\s+)?"
               rf"(?:(?i:just|right|immediately|directly|one|1)\s+)?{rel}\b"
               rf"(?:\s+(?i:number|one|value|day|month|of the two|of them))?"
               rf"(?:\s+(?:(?i:than|to)\s+)?(?P<b>{item}))?")
    predicate = (rf"\b{rel}\b(?:\s+(?i:than|of|to))?(?:\s+(?P<a>{item})(?=\s+(?i:is|comes|"
                 rf"would be|will be)|\s*[=:]))?{_NEG_FREE}{{0,40}}?\s*(?:\b(?i:is|comes|"
                 rf"would be|will be)\b|=|:)\s*(?P<b>{item}){_OP_AFTER}"
                 rf"(?!\s*(?:,|(?i:or|and))\s*{item})")
    symbol = rf"(?P<a>{item})\s*(?P<rel>[<>\u2264\u2265])\s*(?P<b>{item})"
    passive = (rf"(?P<a>{item})\s+(?i:is|was|comes)\s+(?:(?i:immediately|directly|right)\s+)?"
               rf"(?P<rel>(?i:followed|preceded|succeeded))\s+(?i:by)\s+(?P<b>{item})")
    return [(re.compile(p), kind) for p, kind in ((subject, "subject"), (predicate, "predicate"),
                                                 (symbol, "symbol"), (passive, "passive"))]


_NUMBER_ORDERS = _order_patterns(_NUM)
_NAME_ORDERS = _order_patterns(NAMES)


def _order(match: re.Match[str], kind: str) -> Order:
    a, b, rel = match.group("a"), match.group("b"), match.group("rel").lower()
    low_first = {"subject": rel in _LOW.split("|"), "predicate": rel not in _LOW.split("|"),
                 "symbol": rel in "<\u2264", "passive": rel != "preceded"}[kind]
    return Order(a, b) if low_first else Order(b, a)


def order_statements(texts: list[str], names: bool = False) -> list[Order]:
    """Every order statement, in reply order (numbers, or day and month names)."""
    found = []
    for index, text in enumerate(texts):
        for pattern, kind in _NAME_ORDERS if names else _NUMBER_ORDERS:
            found += [((index, m.start()), _order(m, kind)) for m in pattern.finditer(text)]
    return [order for _, order in sorted(found, key=lambda pair: pair[0])]


def asked_side(question: str) -> str | None:
    """``low`` or ``high``: which side of an order the question asks for."""
    if _ASK_HIGH.search(question):
        return "high"
    return "low" if _ASK_LOW.search(question) else None


def ordered_answer(orders: list[Order], side: str, anchors: list[str],
                   same: Any = str.lower, pair: bool = False) -> str | None:
    """The item the last relevant statement puts on ``side``. With ``pair`` (which of two
    numbers?) both named items must be the question's and naming one side names the other;
    else (what comes after N?) a statement whose other side is not the anchor is skipped."""
    keys = [same(a) for a in anchors]
    for order in reversed(orders):
        value, other = (order.low, order.high) if side == "low" else (order.high, order.low)
        if pair:
            named = [x for x in (value, other) if x is not None]
            if not named or any(same(x) not in keys for x in named):
                continue
            if value is None and len(keys) == 2:
                return anchors[1 - keys.index(same(other))]
            return value
        if value is not None and (other is None or same(other) in keys):
            return value
    return None


def _ordered_integer(texts: list[str], question: str, kind: str) -> Found:
    side = asked_side(question)
    if side is None:
        return NOT_FOUND
    anchors = re.findall(_NUM, question)
    value = ordered_answer(order_statements(texts), side, anchors, same=_value,
                           pair=kind == "comparison")
    return NOT_FOUND if value is None else _value(value)


_REMAINDER_ASKED = re.compile(r"\bremainder\b|\bmod(?:ulo)?\b|\bleft over\b|\d\s*%\s*\d", re.I)
_ARITHMETIC = re.compile(r"\d\s*[-+*/\u00d7\u00f7%]\s*\d")
_QUESTION_VAR = re.compile(r"\bfor\s+([a-z])\b|\bwhat\s+is\s+([a-z])\b|\bvalue\s+of\s+([a-z])\b"
                           r"|\bfind\s+([a-z])\b|\bsolve\s+for\s+([a-z])\b", re.I)


def inferred_kind(question: str) -> str:
    """A row's ``kind`` read from its question, for docs without the generator's field (a
    user's own problems): ``remainder``; ``comparison`` (which of two numbers is larger or
    smaller); ``successor`` / ``predecessor`` (what comes after or before one number); else
    ``""``, which the integer rules treat as no particular kind."""
    if _REMAINDER_ASKED.search(question):
        return "remainder"
    side = asked_side(question)
    if side is None or _ARITHMETIC.search(question):
        return ""
    numbers = re.findall(_NUM, question)
    if len(numbers) == 2:
        return "comparison"
    return ("successor" if side == "high" else "predecessor") if len(numbers) == 1 else ""


def inferred_variable(question: str) -> str | None:
    """The letter an algebra question asks for ("Solve for y", "the value of x"), else its one
    letter that stands in an equation (next to a number, a bracket, an operator or a power);
    None when there is no such single letter."""
    found = _QUESTION_VAR.search(question)
    named = next((g for g in (found.groups() if found else ()) if g), None)
    if named is not None:
        return named
    letters = {m.group(1) for m in re.finditer(r"(?<![A-Za-z])([a-z])(?![A-Za-z])", question)
               if re.search(rf"[\d)=+\-]\s*{m.group(1)}(?![A-Za-z])"
                            rf"|(?<![A-Za-z]){m.group(1)}\s*[=+\-^(\d)\u00b2\u00b3]", question)}
    return next(iter(letters)) if len(letters) == 1 else None


def asserted_integer(reply: str, doc: Mapping[str, Any] | None = None) -> int | None:
    """The integer ``reply`` asserts as its answer to ``doc`` (a task row: ``question``,
    ``kind``, ``variable`` used when present), by the rules in the module docstring."""
    doc = doc or {}
    boxed = last_boxed(reply)
    if boxed is not None:
        return boxed_integer(boxed)
    texts = statements(reply)
    question = str(doc.get("question") or "")
    kind = str(doc["kind"]) if doc.get("kind") else inferred_kind(question)
    variable = str(doc["variable"]) if doc.get("variable") else inferred_variable(question)
    rules: list[Any] = [lambda: _last([_DECLARED], texts)]
    if variable:
        rules.append(lambda: _last([_assignment(variable)], texts))
    if kind == "remainder":
        rules.append(lambda: _last(_REMAINDER, texts))
    if kind in ("comparison", "successor", "predecessor"):
        rules.append(lambda: _ordered_integer(texts, question, kind))
    rules.append(lambda: _last([_STATED, _BARE], texts))
    for rule in rules:
        value = rule()
        if value is not NOT_FOUND:
            return value  # type: ignore[return-value]
    return last_integer("\n".join(texts))
