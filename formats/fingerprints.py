"""Fingerprints of data, files and source code: what a cached result depends on.

``digest`` hashes JSON-able data; ``file_print`` fingerprints a file or folder (contents below
64 MiB, size and mtime above, as for Qwen3-4B's weight shards); ``code_print`` the source of
this repository's packages, since the code that computes an output is one of its inputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CONTENT_LIMIT = 64 << 20  # hash contents below 64 MiB; size + mtime above (Qwen3-4B shards)
REPO = Path(__file__).resolve().parents[1]


def digest(obj: Any) -> str:
    """Short, stable hash of JSON-able data."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_print(path: str | Path, suffixes: tuple[str, ...] = ()) -> dict[str, str]:
    """Per-file fingerprint of a file or folder (hidden entries, caches and bytecode skipped);
    ``suffixes`` restricts a folder to those file types. A hub id gives ``{}``."""
    root = Path(path)
    if not root.exists():
        return {}
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = {}
    for file in files:
        rel = file.relative_to(root).as_posix() if root.is_dir() else file.name
        if any(part.startswith(".") or part == "__pycache__" for part in Path(rel).parts):
            continue
        if suffixes and file.suffix not in suffixes:
            continue
        stat = file.stat()
        if stat.st_size <= _CONTENT_LIMIT:
            out[rel] = hashlib.sha256(file.read_bytes()).hexdigest()
        else:
            out[rel] = f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
    return out


def code_print(*packages: str) -> str:
    """Digest of the Python source of the given top-level packages (or single files) of this
    repository: code that computes a stage's outputs is one of its inputs."""
    return digest({p: file_print(REPO / p, (".py",)) for p in packages})
