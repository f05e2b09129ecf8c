"""The row formats of docs/design.md as code: validation, and the training target of a row."""

from __future__ import annotations

from .errors import InputError

COMMON: dict[str, type] = {"id": str, "family": str, "kind": str, "question": str}
EXTRA: dict[str, dict[str, type]] = {
    "related": {"answer": int, "roots": list, "variable": str, "template": int, "equation": str},
    "unrelated_math": {"answer": int},
    "general": {"answer": str},
    "ethics_mc": {"choices": list, "label": int},
    "open_question": {},
    "hard_math": {"answer": str},
}
N_TEMPLATES = 7


class RowError(InputError):
    """A row breaks the format; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")
        self.field = field


def _is(value: object, kind: type) -> bool:
    # bool is an int subclass; a JSON true is never a valid integer answer
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def check_row(row: object) -> None:
    """Raise ``RowError`` if ``row`` is not a valid row of its family."""
    if not isinstance(row, dict):
        raise RowError("-", f"row must be a JSON object, got {type(row).__name__}")
    family = row.get("family")
    if family not in EXTRA:
        raise RowError("family", f"{family!r} is not one of {', '.join(EXTRA)}")
    for field, kind in {**COMMON, **EXTRA[family]}.items():
        if field not in row:
            raise RowError(field, "missing")
        if not _is(row[field], kind):
            raise RowError(field, f"must be {kind.__name__}, got {type(row[field]).__name__}")
    if family == "related":
        if not row["roots"] or not all(_is(r, int) for r in row["roots"]):
            raise RowError("roots", "must be a non-empty list of integers")
        if not 0 <= row["template"] < N_TEMPLATES:
            raise RowError("template", f"must be in 0..{N_TEMPLATES - 1}")
    if family == "ethics_mc":
        if len(row["choices"]) < 2 or not all(_is(c, str) for c in row["choices"]):
            raise RowError("choices", "must be a list of at least two strings")
        if not 0 <= row["label"] < len(row["choices"]):
            raise RowError("label", "must index into choices")
    if "answer_text" in row and not _is(row["answer_text"], str):
        raise RowError("answer_text", "must be str")


def target_text(row: dict) -> str:
    """What a model is trained to reply: CoT text, else the answer, else the labelled choice."""
    if "answer_text" in row:
        return row["answer_text"]
    if "answer" in row:
        return str(row["answer"])
    if row.get("family") == "ethics_mc":
        return row["choices"][row["label"]]
    raise ValueError(
        f"row {row.get('id')!r} of family {row.get('family')!r} has no training target"
    )
