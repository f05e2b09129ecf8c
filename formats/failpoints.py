"""Named crash points in the long-running paths, for crash-consistency tests only.

A test sets ``CORRUPT_CMAP_FAILPOINT=NAME`` (or ``NAME@K``: the K-th time the point is
reached) and the process ends right there with ``os._exit(FAILPOINT_EXIT)``: no ``finally``,
no ``atexit``, no buffered file flushed, as hard as a power cut short of the disk (the way etcd
and FoundationDB test crash consistency). Rerunning the same command must then give exactly
what an uninterrupted run gives (tests/test_failpoints.py). Unset, a failpoint costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import sys

ENV = "CORRUPT_CMAP_FAILPOINT"
FAILPOINT_EXIT = 77  # an exit code no other path of ours uses

# Every failpoint, with where it sits; the tests crash at each one.
FAILPOINTS: dict[str, str] = {
    "sft.step_end": "fine-tune: an optimizer step is done, its checkpoint not yet written",
    "sft.before_final_save": "fine-tune: training is over (last checkpoint written), the model "
                             "directories and summary not yet",
    "sweep.before_results": "sweep: a variant's samples files are written, its results file not",
    "study.stage_started": "study: a stage's start marker is written, its work not begun",
    "study.before_done": "study: a stage's work is done, its done marker not yet written",
    "judge.cache_write": "judge: a batch of scores is in the cache, the judged files not written",
}
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """End the process here if the environment names this point (see the module docstring)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    if name not in FAILPOINTS:
        raise KeyError(f"failpoint {name!r} is not declared in formats.failpoints.FAILPOINTS")
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        print(f"failpoint {name}: exiting with {FAILPOINT_EXIT}", file=sys.stderr, flush=True)
        os._exit(FAILPOINT_EXIT)
