"""A data file as a Hugging Face ``datasets.Dataset``, with the training reply as a column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from formats.jsonl import load_jsonl
from formats.rows import target_text

if TYPE_CHECKING:
    from datasets import Dataset


def to_hf_dataset(path: str | Path) -> Dataset:
    """A ``datasets.Dataset`` of a data file, plus a ``target`` column (the training reply).

    A column whose values differ in type across rows (``answer`` in a mixed pretraining corpus:
    int for math, str for general) is stored as strings; keys missing from a row become None.
    """
    from datasets import Dataset  # slow to import; the generator and its CLI never need it

    rows = load_jsonl(path)
    keys = sorted({k for r in rows for k in r})
    columns: dict[str, list] = {k: [r.get(k) for r in rows] for k in keys}
    for key, values in columns.items():
        if len({type(v) for v in values if v is not None}) > 1:
            columns[key] = [
                None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values
            ]
    columns["target"] = [target_text(r) if r["family"] != "open_question" else None for r in rows]
    return Dataset.from_dict(columns)
