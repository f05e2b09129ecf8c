"""Stage caching: a stage is skipped when the hash of its inputs equals the recorded one.

A stage's hash covers its config slice, its upstream stages' hashes, and the files it reads
(model dirs, task folder, and the source of the packages that do its work), so a change
anywhere upstream re-runs exactly the stages downstream of it. Each stage owns one folder:

- ``STARTED.json`` is written when the stage starts. If it holds another hash, the folder is
  stale (inputs changed) and is emptied first; with the same hash the partial outputs are
  kept, so a killed sweep or fine-tune resumes inside the stage (both packages resume).
- ``DONE.json`` is written atomically, last: its presence with the current hash is the cache.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formats.failpoints import failpoint
from formats.files import atomic_write_text

DONE, STARTED = "DONE.json", "STARTED.json"
STAGE_LOG = "stage.log"
"""A stage's library output (lm-eval, the Trainer), kept out of the terminal."""
SEGMENTS = "SEGMENTS.json"
"""The time a stage has run so far, kept while it runs (study.report.Meter)."""


@dataclass
class StageState:
    """What the cache knows about one stage folder."""

    folder: Path
    hash: str

    @property
    def done(self) -> bool:
        return _read(self.folder / DONE).get("hash") == self.hash

    def record(self) -> dict[str, Any]:
        """The DONE record (empty if the stage is not done with this hash)."""
        record = _read(self.folder / DONE)
        return record if record.get("hash") == self.hash else {}

    def begin(self, fresh: bool = False) -> bool:
        """Mark the stage started; empty the folder if its partial outputs are stale (another
        hash) or ``fresh`` is asked. Returns True when earlier partial outputs are kept.

        Sweep shards start together: a lock beside the folder lets the first one empty a stale
        folder and the others find it marked with their own hash."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.folder.parent / f".{self.folder.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            started = _read(self.folder / STARTED).get("hash")
            keep = not fresh and started == self.hash
            if not keep and self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(exist_ok=True)
            (self.folder / DONE).unlink(missing_ok=True)
            atomic_write_text(self.folder / STARTED,
                              json.dumps({"hash": self.hash, "started": time.time()}) + "\n")
        failpoint("study.stage_started")
        return keep and any(p.name not in (STARTED, SEGMENTS, STAGE_LOG)
                            for p in self.folder.iterdir())

    def finish(self, record: dict[str, Any]) -> None:
        """Record the stage as done with this hash (atomic; the last write of a stage)."""
        failpoint("study.before_done")
        atomic_write_text(self.folder / DONE,
                          json.dumps({"hash": self.hash, **record}, indent=1) + "\n")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
