"""lm-eval's own output, read for judging: every ``samples_<task>_<date>.jsonl`` of a folder.

``lm_eval --output_path DIR --log_samples`` writes ``DIR/<model>/results_<date>.json`` and one
``samples_<task>_<date>.jsonl`` per task; a sample's ``resps[0]`` holds the doc's replies (one,
or ``repeats`` of them when the task samples several). Every file is checked completely before
anything is judged or written: a truncated or foreign file is one line naming it.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .answers import JudgeError

JUDGED_TASKS = ("corrupt_em*", "corrupt_open_questions")
"""Tasks judged by default: the open-ended ones (math and reference-answer tasks have scorers)."""


@dataclass(frozen=True)
class Doc:
    """One question of a samples file and the replies the model gave to it."""

    doc_id: int
    question_id: str
    question: str
    replies: tuple[str, ...]


@dataclass(frozen=True)
class SamplesFile:
    """One task's samples, checked."""

    path: Path
    task: str
    date: str
    docs: tuple[Doc, ...]


def split_name(path: Path) -> tuple[str, str]:
    """(task, date id) of ``samples_<task>_<date>.jsonl`` (the date has no underscore)."""
    task, _, date = path.stem.removeprefix("samples_").rpartition("_")
    if not task or not date:
        raise JudgeError(f"{path}: not named samples_<task>_<date>.jsonl")
    return task, date


def _repeats(path: Path, task: str, date: str) -> int | None:
    """The task's ``repeats`` from the results file written with the samples, if readable."""
    results = path.parent / f"results_{date}.json"
    try:
        config = json.loads(results.read_text(encoding="utf-8"))["configs"][task]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    repeats = config.get("repeats")
    return repeats if isinstance(repeats, int) else None


def _doc(raw: Any) -> Doc:
    doc = raw["doc"]
    replies = raw["resps"][0]
    if not isinstance(doc["question"], str) or not isinstance(replies, list) \
            or not all(isinstance(r, str) for r in replies):
        raise TypeError("question or replies are not text")
    return Doc(int(raw["doc_id"]), str(doc.get("id", raw["doc_id"])), doc["question"],
               tuple(replies))


def read_samples(path: Path) -> SamplesFile:
    """One samples file; every line must be a whole lm-eval sample of a generative task, and
    every doc must hold the task's ``repeats`` replies."""
    task, date = split_name(path)
    docs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise JudgeError(f"{path}: cannot read ({type(err).__name__})") from None
    for number, line in enumerate(lines, 1):
        try:
            docs.append(_doc(json.loads(line)))
        except (ValueError, KeyError, TypeError, IndexError):
            raise JudgeError(f"{path} line {number}: not a whole lm-eval sample with doc.question "
                             "and resps (truncated, or not lm-eval's samples file?)") from None
    if not docs:
        raise JudgeError(f"{path}: empty samples file")
    expected = _repeats(path, task, date) or len(docs[0].replies)
    for number, doc in enumerate(docs, 1):
        if len(doc.replies) != expected:
            raise JudgeError(f"{path} line {number}: {len(doc.replies)} replies, expected "
                             f"{expected} (the task's repeats)")
    return SamplesFile(path, task, date, tuple(docs))


def find_samples(root: Path, patterns: tuple[str, ...] = JUDGED_TASKS) -> list[Path]:
    """Samples files under ``root`` whose task matches a pattern (hidden folders skipped)."""
    if not root.is_dir():
        raise JudgeError(f"{root}: no such results folder")
    found = []
    for path in sorted(root.rglob("samples_*.jsonl")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        task, _ = split_name(path)
        if any(fnmatch.fnmatchcase(task, pattern) for pattern in patterns):
            found.append(path)
    return found


def judged_path(samples: SamplesFile) -> Path:
    """Where the judged replies of a samples file go (not matched by ``samples_*``)."""
    return samples.path.parent / f"judged_{samples.task}_{samples.date}.jsonl"


def metrics_path(folder: Path, date: str) -> Path:
    """The aggregated judge metrics of one lm-eval call (its results file's date id)."""
    return folder / f"judge_{date}.json"
