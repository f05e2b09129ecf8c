"""The study's ``repair`` stage: the study's models, folders and settings handed to the repair
package (``repair.run``), which knows nothing of the study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from formats.errors import InputError
from repair.run import RepairJob
from repair.run import repair_inputs as job_inputs
from repair.run import run_repair as run_job

from .stages import StageError, Study


def repair_job(study: Study, folder: Path | None = None) -> RepairJob:
    """The repair of this study: its section, models and folders."""
    spec = study.config.repair
    if spec is None:
        raise StageError("this study config has no repair section")
    return RepairJob(spec, study.base_model(),
                     {label: study.corrupted_model(label) for label in study.config.repaired},
                     folder or study.folder("repair"), study.folder("sweeps") / "results",
                     study.config.metric, study.device, study.config.threads)


def repair_inputs(study: Study) -> dict[str, Any]:
    try:
        return job_inputs(repair_job(study))
    except InputError as err:
        raise StageError(str(err)) from None


def run_repair(study: Study, folder: Path) -> dict[str, Any]:
    try:
        return run_job(repair_job(study, folder))
    except InputError as err:
        raise StageError(str(err)) from None
