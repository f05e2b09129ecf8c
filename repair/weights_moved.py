"""Where fine-tuning moved the weights: per component, ‖W_corrupted − W_clean‖ / ‖W_clean‖.

A component is one of ``patching.components``' units (a block, its attention or MLP path, one
head), and the norm is the Frobenius norm over all its parameter slices together, so a block's
change pools its two paths. For a LoRA fine-tune the change is the adapter's effective update,
``scaling · B A`` (PEFT's own ``get_delta_weight``), sliced the same way, over the frozen
weight, which is the clean one. This is the third localisation beside activation patching and
the restore sweep: where the weights moved need not be where the activations differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from patching.components import (
    Component,
    check_repair_pair,
    component_slices,
    components_of,
    named_weights,
    peft_base,
)
from patching.errors import PatchingError


def _deltas_of_adapter(base: nn.Module) -> dict[str, Tensor]:
    """Parameter name (plain-model naming) -> the adapter's effective update of that weight,
    summed over the module's active adapters."""
    out: dict[str, Tensor] = {}
    for path, module in base.named_modules():
        if not hasattr(module, "lora_A") or not hasattr(module, "get_delta_weight"):
            continue
        names = [n for n in module.lora_A if n in getattr(module, "active_adapters", [n])]
        if names:
            out[f"{path}.weight"] = sum(module.get_delta_weight(n).detach().double()
                                        for n in names)
    return out


def relative_change(clean: nn.Module | None, corrupted: Any, components: Iterable[str]
                    ) -> dict[str, float]:
    """Component name -> ‖ΔW‖ / ‖W_clean‖ over its slices. ``corrupted``: a plain model (with
    ``clean`` the clean one) or a PEFT LoRA model (``clean=None``: its frozen base is clean)."""
    base = peft_base(corrupted)
    if base is None:
        if clean is None:
            raise PatchingError("the change of a plain corrupted model needs the clean model")
        check_repair_pair(corrupted, clean)
        lm, good, bad = corrupted, named_weights(clean), named_weights(corrupted)
        deltas = None
    else:
        if clean is not None:
            raise PatchingError("a PEFT model's clean weights are its base: pass clean=None")
        lm, good, bad, deltas = base, named_weights(base), None, _deltas_of_adapter(base)
    out = {}
    with torch.no_grad():
        for name in components:
            moved = size = 0.0
            for piece in component_slices(lm, Component.parse(name)):
                index = piece.index()
                weight = good[piece.param][index].double()
                if deltas is None:
                    delta = bad[piece.param][index].double() - weight  # type: ignore[index]
                else:
                    full = deltas.get(piece.param)
                    delta = torch.zeros_like(weight) if full is None else full[index]
                moved += float(delta.square().sum())
                size += float(weight.square().sum())
            out[name] = math.sqrt(moved / size) if size else 0.0
    return out


def weights_record(clean_path: str, corrupted: dict[str, str], kinds: Iterable[str],
                   device: str = "cpu", dtype: str = "auto") -> dict[str, Any]:
    """``{"kinds", "labels": {label: {component: change}}}`` for every component of these
    kinds in each corrupted model (a LoRA adapter left unmerged, so its change is B A)."""
    from leaderboard.loading import load_model, load_unmerged, resolve_device

    where = resolve_device(device)
    clean = load_model(clean_path, where, dtype)
    names = [str(c) for kind in kinds for c in components_of(kind, clean.config)]
    out: dict[str, Any] = {"kinds": list(kinds), "labels": {}}
    for label, path in corrupted.items():
        model = load_unmerged(path, where, dtype)
        plain = peft_base(model) is None
        out["labels"][label] = relative_change(clean if plain else None, model, names)
        del model
    return out
