"""Which correctness metric the leaderboard and the study summary read: one choice per model kind.

The ``metric`` key of a sweep config and of a study config (default ``answer_match``):

- ``answer_match``: the answer a reply asserts (``harness_ext.answers``), what a chat model's
  sentences need ("The capital of Australia is **Canberra**.", "21 is less than 44.").
- ``strict``: the strict metrics (``exact_match``; ``correct`` for the sympy task), which read
  the bare answers the tiny model is trained to give; its findings were recorded with them.

The choice picks the per-task metric of the study summary, Table 2 and the heatmap panels (the
other correctness metric stays in the all-metrics tables); the integer read from a reply in
final-integer agreement (tables, "where", heatmaps, flip rates); and what "general changes" means
in the "where does the corruption live" table: under ``strict`` the reply text differs from the
clean model's, under ``answer_match`` the item's answer_match verdict does (a chat model's
wording changes under almost any patch, its answer need not). A task whose results lack the
chosen metric (results written before it existed) is read with its strict one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from harness_ext.answers import asserted_integer
from harness_ext.scoring import extract_final_integer

METRICS: tuple[str, ...] = ("answer_match", "strict")
DEFAULT_METRIC = "answer_match"
# A chain-of-thought task's strict verdict is the whole chain: every step and the answer right.
_STRICT_NAMES = {"corrupt_unrelated_math_hard": "correct", "corrupt_related_cot": "chain_valid",
                 "corrupt_unrelated_math_cot": "chain_valid"}
IntegerReader = Callable[[str, Mapping[str, Any]], int | None]


def metric_error(value: Any) -> str | None:
    """Why ``value`` is not a metric choice (one line), or None when it is one."""
    if value in METRICS:
        return None
    return f"metric={value!r}: expected one of {', '.join(METRICS)}"


def strict_name(task: str) -> str:
    return _STRICT_NAMES.get(task, "exact_match")


def task_metric(choice: str, task: str, available: Iterable[str]) -> str | None:
    """The metric ``choice`` reads for ``task`` among the ``available`` ones; None when the task
    has neither (e.g. multiple choice, which has no reply to read)."""
    names = list(available)
    for name in (("answer_match",) if choice == "answer_match" else ()) + (strict_name(task),):
        if name in names:
            return name
    return None


def unchosen(choice: str, task: str, available: Iterable[str]) -> set[str]:
    """The correctness metric of ``task`` that ``choice`` does not read (left off heatmaps)."""
    chosen = task_metric(choice, task, available)
    return {"answer_match", strict_name(task)} - {chosen} if chosen else set()


def integer_reader(choice: str) -> IntegerReader:
    """How an integer is read from a reply (and its task row) under ``choice``."""
    if choice == "strict":
        return lambda reply, doc: extract_final_integer(reply)
    return asserted_integer


def describe(choice: str) -> str:
    """Words for sentences: "exact match" or "answer match"."""
    return "exact match" if choice == "strict" else "answer match"
