"""Where the plugin's files live, for editable and wheel installs alike.

A wheel ships the repository's ``tasks/`` folder inside the package as ``harness_ext/tasks``
(a generic top-level ``tasks`` folder in site-packages could collide with another
distribution); an editable install reads the live ``tasks/`` next to this package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _find_tasks_dir() -> Path:
    """Prefer the copy a wheel ships; fall back to the repository checkout."""
    packaged = PACKAGE_DIR / "tasks"
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent / "tasks"


TASKS_DIR: Path = _find_tasks_dir()
"""The lm-eval task folder (``*.yaml``) that the start-up hook adds to every ``TaskManager``."""

TASK_DATA_DIR: Path = TASKS_DIR / "data"
"""The small JSONL files the task YAMLs read; resolve data here, never against the CWD."""
