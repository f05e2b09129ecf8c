"""JSONL in and out: canonical bytes, atomic multi-file writes, validated loading.

The data generator writes its files with it; fine-tuning and the task loaders that lm-eval
calls read them with it, so the writer and every reader agree on one row format.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from formats.rows import RowError, check_row


def dumps_row(row: dict) -> str:
    """One canonical JSON line (sorted keys, fixed separators) so equal data gives equal bytes."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(dumps_row(r) + "\n" for r in rows).encode("utf-8")


def write_files_atomic(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write every file to a temporary name first, then rename them all into place.

    An interrupted run leaves at most stray ``.tmp`` files, never a truncated data file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
            temps.append((name, Path(tmp)))
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide data files from other users
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for name, tmp in temps:
            os.replace(tmp, out_dir / name)
    finally:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)


def load_jsonl(path: str | Path) -> list[dict]:
    """Read and validate a data file; errors name the file, the line and the field."""
    path = Path(path)
    rows: list[dict] = []
    ids: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            try:
                check_row(row)
                if row["id"] in ids:
                    raise RowError("id", f"{row['id']!r} already used on line {ids[row['id']]}")
            except RowError as err:
                raise ValueError(f"{path}:{lineno}: {err}") from None
            ids[row["id"]] = lineno
            rows.append(row)
    return rows

