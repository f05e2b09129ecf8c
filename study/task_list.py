"""lm-eval's task objects of our task folder, for the plan's checks (rows, reply lengths)."""

from __future__ import annotations

from typing import Any

from formats.errors import InputError


class TaskListError(InputError):
    """A task or group name lm-eval does not know; one line."""


def load_tasks(names: list[str]) -> dict[str, Any]:
    """lm-eval's task objects of the requested tasks and groups (our task folder only)."""
    from lm_eval.tasks import TaskManager

    from harness_ext.paths import TASKS_DIR

    try:
        return TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(
            names)["tasks"]
    except KeyError as err:
        raise TaskListError(f"tasks {names}: {err.args[0]}") from None
