"""Where progress goes while a long job's libraries write to a log file.

A study stage runs lm-eval, the Trainer and accelerate, whose bars and INFO lines would bury
the stage's own progress (a demo log had 3,321 lines, 1,882 of them bar updates). ``to_log``
points the process's stdout and stderr (file descriptors 1 and 2, so subprocesses and C code
too) at a log file for the length of a block, and ``console()`` is then the terminal, for the
few lines and the one bar a stage shows. Outside ``to_log``, ``console()`` is ``sys.stderr``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_terminal: TextIO | None = None


def console() -> TextIO:
    """The stream our own progress lines and bars write to."""
    return _terminal or sys.stderr


def logging_to_file() -> bool:
    """Whether this process's output is going to a log (inside ``to_log``), so that a job's
    own bar must be drawn on ``console()`` because the library's bar is not seen."""
    return _terminal is not None


@contextmanager
def to_log(path: Path) -> Iterator[TextIO]:
    """Send stdout and stderr to ``path`` (appended) inside the block; yields the terminal."""
    global _terminal
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        previous, _terminal = _terminal, terminal
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            _terminal = previous
            for fd in saved:
                os.close(fd)
            terminal.close()
