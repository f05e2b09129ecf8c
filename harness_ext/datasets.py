"""Dataset loaders for the corrupt_* task YAMLs (``custom_dataset: !function ...``).

lm-eval resolves a relative ``dataset_path: json`` data file against the current directory;
these loaders resolve it against the shipped task data folder instead, so every task runs
from any directory. lm-eval calls a loader as ``loader(**metadata, **dataset_kwargs)``, and
the metadata carries unrelated keys (the model args, ``version``, ``config_source``), hence
``**metadata``. Rows are read and validated by ``formats.jsonl.load_jsonl``, the same reader
the generator's own files go through, so a malformed row fails with its file, line and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from formats.jsonl import load_jsonl
from harness_ext import paths


def data_path(data_file: str) -> Path:
    """``data_file`` as given if absolute, else inside the shipped task data folder."""
    path = Path(data_file)
    return path if path.is_absolute() else paths.TASK_DATA_DIR / path


def load_task_data(data_file: str, **metadata: Any) -> datasets.DatasetDict:
    """One JSONL file as the ``test`` split."""
    rows = load_jsonl(data_path(data_file))
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_open_questions(
    data_file: str, judge: str | None = None, **metadata: Any
) -> datasets.DatasetDict:
    """Like ``load_task_data``, with the configured judge (``metadata.judge``, a function path
    or None) stored on every row: ``process_results`` sees only the row, and the logged
    samples then record which judge scored them."""
    rows = [row | {"judge": judge or ""} for row in load_jsonl(data_path(data_file))]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
