"""lm-eval's task objects of a task folder (ours by default), for checks before any work:
unknown names, rows per task, reply lengths."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from formats.errors import InputError


class TaskListError(InputError):
    """A task or group name lm-eval does not know; one line."""


def check_task_names(names: list[str], task_dir: str | Path | None = None) -> Any:
    """lm-eval's task index of ``task_dir`` (default: this project's ``tasks/``) only, after
    checking that it knows every name: an unknown one is one line that names it and the
    closest known one. Indexing reads no data, so this is cheap enough for any entry point."""
    from lm_eval.tasks import TaskManager

    from .paths import TASKS_DIR

    manager = TaskManager(include_path=str(task_dir or TASKS_DIR), include_defaults=False)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = (f"; did you mean {close[0]!r}?" if close
                    else f"; known: {', '.join(sorted(known))}")
            raise TaskListError(f"tasks: unknown task {name!r}{hint}")
    return manager


def load_tasks(names: list[str], task_dir: str | Path | None = None) -> dict[str, Any]:
    """lm-eval's task objects of the requested tasks and groups (``check_task_names`` first)."""
    manager = check_task_names(names, task_dir)
    try:
        return manager.load(names)["tasks"]
    except KeyError as err:
        raise TaskListError(f"tasks {names}: {err.args[0]}") from None
