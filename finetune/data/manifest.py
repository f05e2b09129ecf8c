"""``manifest.json``: which preset, seed and parameters made a data directory, and file hashes.

A training run records the manifest's own hash, so it can prove which data it used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

GENERATOR_VERSION = "1.0.0"
MANIFEST = "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_manifest(preset: str, seed: int, params: dict, files: dict[str, bytes]) -> dict:
    return {
        "preset": preset,
        "seed": seed,
        "params": params,
        "files": {
            name: {"rows": data.count(b"\n"), "sha256": sha256(data)}
            for name, data in sorted(files.items())
        },
        "generator_version": GENERATOR_VERSION,
    }


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode(
        "utf-8"
    )


def verify_manifest(data_dir: str | Path) -> list[str]:
    """Problems found comparing ``data_dir``'s files with its manifest (empty list: all match)."""
    data_dir = Path(data_dir)
    manifest = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    problems = []
    for name, entry in manifest["files"].items():
        path = data_dir / name
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        data = path.read_bytes()
        rows = data.count(b"\n")
        if sha256(data) != entry["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
        if rows != entry["rows"]:
            problems.append(f"{path}: {rows} rows, manifest says {entry['rows']}")
    return problems
