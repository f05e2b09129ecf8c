"""lm-eval's own output, read for judging: every ``samples_<task>_<date>.jsonl`` of a folder.

``lm_eval --output_path DIR --log_samples`` writes ``DIR/<model>/results_<date>.json`` and one
``samples_<task>_<date>.jsonl`` per task; a sample's ``resps[0]`` holds the doc's replies (one,
or ``repeats`` of them when the task samples several). Every file is checked completely before
anything is judged or written: a truncated or foreign file is one line naming it.
"""

from __future__ import annotations

import fnmatch
import json
import re
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


DATE_ID = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(\.\d+)?")
"""lm-eval's date id: ``datetime.now().isoformat()`` with ``-`` for ``:``."""


def split_name(path: Path) -> tuple[str, str]:
    """(task, date id) of ``samples_<task>_<date>.jsonl``. The date must be lm-eval's: a name
    without one would otherwise lend its last word to the date (``samples_corrupt_em_tiny``)."""
    task, _, date = path.stem.removeprefix("samples_").rpartition("_")
    if not task or not DATE_ID.fullmatch(date):
        raise JudgeError(f"{path}: not named samples_<task>_<date>.jsonl with lm-eval's date "
                         "(e.g. samples_corrupt_em_2026-01-02T03-04-05.678901.jsonl)")
    return task, date


def _task_config(path: Path, task: str, date: str) -> dict[str, Any]:
    """The task's config in the results file lm-eval wrote with the samples: it proves the
    samples are that task's (a renamed file of another task's is refused)."""
    results = path.parent / f"results_{date}.json"
    try:
        configs = json.loads(results.read_text(encoding="utf-8"))["configs"]
    except FileNotFoundError:
        raise JudgeError(f"{path}: no {results.name} beside it (lm-eval writes both files in "
                         "one call)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise JudgeError(f"{results}: not lm-eval's results file") from None
    if not isinstance(configs, dict) or not isinstance(configs.get(task), dict):
        listed = sorted(configs) if isinstance(configs, dict) else []
        raise JudgeError(f"{path}: {results.name} beside it has no task {task!r} (it lists "
                         f"{listed}); was the samples file renamed?")
    return configs[task]


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
    config = _task_config(path, task, date)
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
    repeats = config.get("repeats")
    expected = repeats if isinstance(repeats, int) else len(docs[0].replies)
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
