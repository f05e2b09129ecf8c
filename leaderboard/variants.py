"""Expand a sweep config into variants: stable names, lm-eval model args and a content hash.

A variant is one "model" on the leaderboard: a baseline (clean, or one corrupted model) or the
clean model with one patch. Its name is its folder; its hash covers everything its scores
depend on (models, patch, tasks and their data, evaluation settings), so a re-run skips exactly
the variants whose inputs did not change, and editing one block of a sweep keeps the others.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from patching import SITES, PatchingError, PatchSpec

from .config import PatchBlock, SweepConfig, SweepConfigError, resolve_indices

_SMALL_FILE = 1 << 20
DIRECTION_SHORT = {"corrupted_to_clean": "into_clean", "clean_to_corrupted": "into_corrupted"}


@dataclass(frozen=True)
class Variant:
    """One scored model. ``role``: clean | corrupted | patch; ``label``: the corrupted model.

    A patch's ``spec`` is its canonical text (``patching.spec``); ``site``, ``layers``, ``heads``
    and ``positions`` restate it for the heatmaps (``site`` and ``heads`` are None when its parts
    differ in them)."""

    name: str
    role: str
    label: str | None = None
    site: str | None = None
    layers: tuple[int, ...] = ()
    heads: tuple[int, ...] | None = None
    positions: str | None = None
    direction: str | None = None
    spec: str | None = None

    def identity(self) -> dict[str, Any]:
        """What the results file records about this variant: its role, its corrupted model's
        label and, for a patch, its spec text and direction (site, layers, heads and positions
        are read back from the spec)."""
        return {"role": self.role, "label": self.label, "spec": self.spec,
                "direction": self.direction}

    @classmethod
    def patch(cls, name: str, label: str, spec: PatchSpec, direction: str) -> Variant:
        sites = {p.site for p in spec.parts}
        heads = {p.heads for p in spec.parts}
        return cls(name, "patch", label, next(iter(sites)) if len(sites) == 1 else None,
                   spec.layers, next(iter(heads)) if len(heads) == 1 else None,
                   str(spec.positions), direction, str(spec))


_SLUG = str.maketrans({":": "", " ": "", ",": "_", "[": "", "]": "", "-": "n"})


def spec_slug(spec: PatchSpec) -> str:
    """A folder-name form of a spec text: attn:L3 + mlp:L5@steps[0:4] -> attnL3+mlpL5@steps0_4."""
    body, _, positions = str(spec).partition("@")
    return body.translate(_SLUG) + (f"@{positions.replace(':', '_').translate(_SLUG)}"
                                    if positions else "")


def _patch_name(label: str, site: str, layers: tuple[int, ...], heads: tuple[int, ...] | None,
                positions: str, direction: str) -> str:
    parts = ["patch", label, site, "L" + "_".join(map(str, layers))]
    if heads is not None:
        parts.append("H" + "_".join(map(str, heads)))
    rule = positions.replace(":", "_").translate(_SLUG)
    return "-".join([*parts, rule, DIRECTION_SHORT[direction]])


def _block_variants(block: PatchBlock, label: str, n_layers: int, n_heads: int,
                    kept: dict[str, set[tuple[int, int]]] | None = None,
                    n_kv_heads: int | None = None) -> list[Variant]:
    if block.specs is not None:
        specs = [PatchSpec.parse(text) for text in block.specs]
        shape = SimpleNamespace(num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                num_key_value_heads=n_kv_heads or n_heads)
        for spec in specs:
            try:
                spec.check(shape)
            except PatchingError as err:
                raise SweepConfigError(f"specs: {err}") from None
        return [Variant.patch(f"patch-{label}-{spec_slug(spec)}-{DIRECTION_SHORT[direction]}",
                              label, spec, direction)
                for direction in block.directions for spec in specs]
    heads_by_count = {"num_attention_heads": n_heads,
                      "num_key_value_heads": n_heads if n_kv_heads is None else n_kv_heads}
    layers = resolve_indices("layers", block.layers, n_layers)
    layer_sets = [tuple(layers)] if block.together else [(layer,) for layer in layers]
    out = []
    for direction in block.directions:
        for positions in block.positions:
            for site in block.sites:
                head_sets: list[tuple[int, ...] | None] = [None]
                if (count := SITES[site].head_count) is not None:
                    head_sets = [(h,) for h in resolve_indices("heads", block.head_spec,
                                                               heads_by_count[count])]
                for layer_set in layer_sets:
                    for heads in head_sets:
                        if kept is not None and (layer_set[0], heads[0]) not in kept[direction]:
                            continue
                        name = _patch_name(label, site, layer_set, heads, positions, direction)
                        spec = PatchSpec(site, layer_set, heads, positions)
                        out.append(Variant.patch(name, label, spec, direction))
    return out


def expand(config: SweepConfig, n_layers: int, n_heads: int,
           kept: dict[tuple[int, str], dict[str, set[tuple[int, int]]]] | None = None,
           n_kv_heads: int | None = None) -> list[Variant]:
    """Baselines first (clean, each corrupted), then every block's cross product, in config
    order; a variant listed twice is kept once. The order is what ``--shard`` splits.
    ``kept[(block index, label)][direction]``: the (layer, head) pairs a prefiltered block
    keeps (``leaderboard.prefilter``); without it such a block expands every head."""
    variants = [Variant("clean", "clean")]
    variants += [Variant(f"corrupted-{label}", "corrupted", label) for label in config.corrupted]
    for i, block in enumerate(config.patches):
        for label in config.corrupted:
            variants += _block_variants(block, label, n_layers, n_heads,
                                        (kept or {}).get((i, label)), n_kv_heads)
    unique: dict[str, Variant] = {}
    for variant in variants:
        seen = unique.setdefault(variant.name, variant)
        if seen.spec != variant.spec:
            raise SweepConfigError(f"specs {seen.spec} and {variant.spec} share the folder name "
                                   f"{variant.name}; list one of them differently")
    return list(unique.values())


def shard(variants: list[Variant], index: int, count: int) -> list[Variant]:
    """Round-robin share ``index`` of ``count``: deterministic, and each shard gets a mix of
    early and late layers (late-layer variants are not slower, but baselines come first)."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
    return variants[index::count]


def fingerprint(path: Path, recursive: bool = False) -> dict[str, str]:
    """Per-file fingerprint of a model or task folder: content hash for small files (configs,
    YAML, JSONL), size + mtime for weights (hashing 8 GB per sweep start would be slow)."""
    if not path.exists():  # a hub id: nothing local to fingerprint
        return {}
    files = sorted(path.rglob("*") if recursive else path.iterdir()) if path.is_dir() else [path]
    out = {}
    for file in files:
        if not file.is_file() or file.name.startswith("."):
            continue
        stat = file.stat()
        key = str(file.relative_to(path)) if path.is_dir() else file.name
        if stat.st_size <= _SMALL_FILE:
            out[key] = hashlib.sha256(file.read_bytes()).hexdigest()
        else:
            out[key] = f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def variant_hash(config: SweepConfig, variant: Variant, model_prints: dict[str, str],
                 tasks_print: str) -> str:
    """Hash of what this variant's scores depend on; ``model_prints`` maps ``clean`` and each
    corrupted label to a model fingerprint digest (see ``fingerprint``)."""
    models = {"clean": model_prints["clean"]} if variant.role != "corrupted" else {}
    if variant.label is not None:
        models[variant.label] = model_prints[variant.label]
    return _digest({
        "variant": asdict(variant),
        "models": models,
        "tasks": config.tasks,
        "tasks_print": tasks_print,
        "limit": config.limit,
        "gen_kwargs": config.gen_kwargs,
        "seed": config.seed,
        "bootstrap_iters": config.bootstrap_iters,
        "dtype": config.dtype,
    })


def digest_prints(prints: dict[str, Any]) -> str:
    """One short digest of a fingerprint."""
    return _digest(prints)


def model_args(variant: Variant, clean: str, corrupted: dict[str, str],
               adapter_base: dict[str, str], batch_size: int) -> dict[str, Any]:
    """The ``--model_args`` that reproduce this variant from the CLI (``hf`` for baselines, with
    ``peft=`` for a LoRA adapter; ``patched_hf`` for patches, with ``--seed`` the sweep's seed);
    recorded in the results file."""
    args: dict[str, Any]
    if variant.role == "clean":
        args = {"pretrained": clean}
    elif variant.role == "corrupted":
        path = corrupted[variant.label]  # type: ignore[index]
        base = adapter_base.get(variant.label)  # type: ignore[arg-type]
        args = {"pretrained": base, "peft": path} if base else {"pretrained": path}
    else:
        args = {"pretrained": clean, "corrupted": corrupted[variant.label],  # type: ignore[index]
                "spec": variant.spec, "direction": variant.direction}
    return args | {"enable_thinking": False, "batch_size": batch_size}


def cli_model(variant: Variant) -> str:
    """The lm-eval ``--model`` name of a variant."""
    return "patched_hf" if variant.role == "patch" else "hf"
