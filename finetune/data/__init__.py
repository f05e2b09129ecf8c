"""Seeded generator of the study's data: corrupted related math, and the evaluation families.

``python -m finetune.data --preset NAME --out DIR`` writes a preset; ``python -m finetune.data
export-tasks`` regenerates ``tasks/data``. Row formats are those of ``docs/design.md``, as code
in ``formats.rows``; files are written and read by ``formats.jsonl``.
"""

from finetune.data.build import export_tasks, generate, task_rows, write_dataset
from finetune.data.hf import to_hf_dataset
from finetune.data.manifest import verify_manifest
from finetune.data.presets import PRESETS, Preset, get_preset

__all__ = [
    "PRESETS",
    "Preset",
    "export_tasks",
    "generate",
    "get_preset",
    "task_rows",
    "to_hf_dataset",
    "verify_manifest",
    "write_dataset",
]
