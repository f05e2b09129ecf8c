"""The judge cache: one SQLite file, so a re-run judges nothing twice and a kill loses nothing.

Key: (judge model files sha256, prompt version, metric, sha256 of question and reply). The value
is the threshold-free ``Summary`` (``score``), so a new unscored threshold re-reads the cache.
SQLite commits each batch as one transaction: a process killed mid-write leaves the file as it
was after the last commit, never half a row. Each prompt version is recorded with the sha256 of
its texts; a cache that holds the same version with other texts (a prompt edited without a
version bump) is refused, since its rows would silently mix two prompts.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from formats.failpoints import failpoint

from .answers import JudgeError
from .score import Summary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (version TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    judge_sha256 TEXT NOT NULL, prompt_version TEXT NOT NULL, metric TEXT NOT NULL,
    item TEXT NOT NULL, summary TEXT NOT NULL,
    PRIMARY KEY (judge_sha256, prompt_version, metric, item));
"""


def item_key(question: str, reply: str) -> str:
    """sha256 of a (question, reply) pair; unambiguous for any texts."""
    return hashlib.sha256(json.dumps([question, reply]).encode()).hexdigest()


class JudgeCache:
    """Summaries of judged replies for one judge model and one prompt version."""

    def __init__(self, path: str | Path, judge_sha256: str, prompt_version: str,
                 prompt_sha256: str) -> None:
        self.path = Path(path)
        self.judge, self.version = judge_sha256, prompt_version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            with self.db:
                self.db.executescript(_SCHEMA)
                row = self.db.execute("SELECT sha256 FROM prompts WHERE version = ?",
                                      (prompt_version,)).fetchone()
                if row is None:
                    self.db.execute("INSERT INTO prompts VALUES (?, ?)",
                                    (prompt_version, prompt_sha256))
        except sqlite3.DatabaseError as err:
            raise JudgeError(f"cache {self.path}: not a judge cache ({err})") from None
        if row is not None and row[0] != prompt_sha256:
            self.db.close()
            raise JudgeError(
                f"cache {self.path}: prompt version {prompt_version} was recorded with prompt "
                f"sha256 {row[0][:12]}, the prompts now hash to {prompt_sha256[:12]}; bump "
                "PROMPT_VERSION (harness_ext/judge/prompts.py) or use another cache")

    def get(self, metric: str, items: Iterable[str]) -> dict[str, Summary]:
        """Cached summaries of the given item keys (missing ones are absent)."""
        out = {}
        for item in items:
            row = self.db.execute(
                "SELECT summary FROM readings WHERE judge_sha256 = ? AND prompt_version = ? "
                "AND metric = ? AND item = ?", (self.judge, self.version, metric, item)
            ).fetchone()
            if row is not None:
                out[item] = Summary.from_dict(json.loads(row[0]))
        return out

    def put(self, metric: str, summaries: dict[str, Summary]) -> None:
        """Store a batch of summaries in one transaction."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?, ?)",
                [(self.judge, self.version, metric, item, json.dumps(s.as_dict()))
                 for item, s in summaries.items()])
        failpoint("judge.cache_write")

    def close(self) -> None:
        self.db.close()
