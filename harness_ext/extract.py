"""Number tokens and ``\\boxed{}`` groups in reply text: the primitives both the strict
scorers (``scoring``) and the answer-in-reply scorers (``answers``) read replies with.

Kept apart so that ``scoring`` can use ``answers`` without an import cycle.
"""

from __future__ import annotations

import re

# A number: optional sign, digits with optional thousands commas, optional decimals.
NUMBER = re.compile(r"[-\u2212+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
INTEGER_ONLY = re.compile(r"[-\u2212+]?(?:\d{1,3}(?:,\d{3})+|\d+)\.?")
_BOXED = "\\boxed{"
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*")


def braced(text: str, open_idx: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[open_idx]`` and the index after it."""
    depth = 0
    for i in range(open_idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces allowed)."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    group = braced(text, start + len(_BOXED) - 1)
    return group[0] if group else None


def to_int(token: str) -> int | None:
    """Integer value of a matched number token; None for a non-integral decimal."""
    value = token.replace("\u2212", "-").replace(",", "")
    if "." in value:
        whole, frac = value.split(".")
        if frac.strip("0"):
            return None
        value = whole
    return int(value)


def number_tokens(text: str) -> list[str]:
    """Number tokens in order; a '-' right after a digit or ')' is subtraction, not a sign."""
    tokens = []
    for match in NUMBER.finditer(text):
        token = match.group()
        if token[0] in "-\u2212+" and re.search(r"[\d)]\s*$", text[: match.start()]):
            token = token[1:]
        tokens.append(token)
    return tokens


def boxed_integer(boxed: str) -> int | None:
    """The integer a ``\\boxed{}`` holds (``x = -3`` and ``$..$`` allowed); None for anything
    else, such as ``\\frac{1}{2}``."""
    candidate = _ASSIGNMENT.sub("", boxed.strip().strip("$").strip())
    return to_int(candidate) if INTEGER_ONLY.fullmatch(candidate) else None


def last_integer(text: str) -> int | None:
    """The last number of ``text`` as an integer; None when there is none or it has a
    fractional part."""
    tokens = number_tokens(text)
    return to_int(tokens[-1]) if tokens else None
