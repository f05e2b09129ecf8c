"""Whether a local model or adapter folder can be loaded, judged from its files' headers alone.

Entry points call `weights_problem` before they load anything, so a folder holding only
``config.json``, a shard missing from an index, or a ``.safetensors`` file cut short by a
killed copy is one line at start-up, not a traceback after the other model has loaded (or an
hour into a sweep). A safetensors file is an 8-byte little-endian header length, a JSON header
giving each tensor's byte range, and the data: its size must be exactly 8 + header + data.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MODEL_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file, or None."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return f"{path.name} is truncated ({size} bytes, no header)"
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER or 8 + length > size:
            return f"{path.name} is truncated or not safetensors (header of {length} bytes, file " \
                   f"of {size})"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return f"{path.name} has an unreadable header (not safetensors?)"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        return f"{path.name} is truncated: {size} bytes where its header needs {expected}"
    return None


def weights_problem(folder: str | Path) -> str | None:
    """Why the model (or PEFT adapter) folder cannot be loaded, or None. Not a local model
    folder (a hub id, or no config.json / adapter_config.json, which callers report in their
    own words): None, as there are no weights to judge."""
    folder = Path(folder).expanduser()
    adapter = (folder / "adapter_config.json").is_file()
    if not adapter and not (folder / "config.json").is_file():
        return None
    config = folder / ("adapter_config.json" if adapter else "config.json")
    try:
        if not isinstance(json.loads(config.read_text()), dict):
            return f"{config.name} is not a JSON object"
    except (ValueError, UnicodeDecodeError) as err:
        return f"{config.name} is not valid JSON ({getattr(err, 'msg', err)}; a cut-off copy?)"
    names = ADAPTER_WEIGHTS if adapter else MODEL_WEIGHTS
    index = folder / "model.safetensors.index.json"
    if not adapter and index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            return f"{index.name} is not a weight index (no weight_map)"
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            return f"{index.name} lists shards that are missing: {', '.join(missing)}"
        files = [folder / s for s in shards]
    else:
        files = [folder / n for n in names if (folder / n).is_file()][:1]
    if not files:
        kind = "adapter_config.json" if adapter else "config.json"
        return f"holds {kind} but no weights ({' or '.join(names)})"
    for path in files:
        if path.suffix == ".safetensors" and (problem := safetensors_problem(path)):
            return problem
        if path.suffix == ".bin" and path.stat().st_size == 0:
            return f"{path.name} is empty"
    return None


SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "vocab_size")


def adapter_base_problem(adapter: str | Path, base: str | Path) -> str | None:
    """Why a PEFT adapter folder was not trained over a model of ``base``'s shape, or None.

    The adapter records its base (``base_model_name_or_path``); where that is a local folder,
    its config.json is compared with ``base``'s on the keys that decide tensor shapes (the same
    model at another path passes). A base recorded as a hub id is not checked offline."""
    config = Path(adapter).expanduser() / "adapter_config.json"
    if not config.is_file():
        return None
    recorded = json.loads(config.read_text()).get("base_model_name_or_path")
    mine, theirs = (Path(p).expanduser() / "config.json" for p in (base, recorded or ""))
    if not recorded or not theirs.is_file() or not mine.is_file():
        return None
    a, b = json.loads(mine.read_text()), json.loads(theirs.read_text())
    differ = [k for k in SHAPE_KEYS if a.get(k) != b.get(k)]
    if differ:
        key = differ[0]
        return (f"was trained over {recorded} ({key} {b.get(key)!r}), not a model of this base's "
                f"shape ({key} {a.get(key)!r})")
    return None
