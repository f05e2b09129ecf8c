"""Hatchling build hook: ship the task folder inside wheels, never inside editable installs.

``force-include`` in pyproject.toml applies to editable wheels too, which would leave a stale
copy of ``tasks/`` in site-packages; here it is added for standard wheels only, as
``harness_ext/tasks`` (where ``harness_ext.paths.TASKS_DIR`` looks first).
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    """Adds ``tasks/`` to standard wheels."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"]["tasks"] = "harness_ext/tasks"
