"""Patch plans and the single decoder pass every patched run is made of.

A plan says, for one (site, layer), which rows of a block's batch take which rows
of the donor's batch (and, for a site split into heads, which columns); `patch_edit`
turns plans into the hook that writes them. `decoder_forward` gives each family its
masks in the form its decoder takes (architectures.Architecture.mask_form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .architectures import site_named
from .cache import Rows
from .hooks import Key, StopForward
from .models import Runner
from .spec import PatchSpec

# The boolean [B, 1, queries, keys] mask of one pass for a sliding window (None: no window);
# each model evaluates it for the windows its layer types use (batch.causal_mask and kin).
MaskFor = Callable[[int | None], Tensor]


def keys_of(spec: PatchSpec) -> list[Key]:
    return [(spec.site, layer) for layer in spec.layers]


def compact(index: Tensor) -> Rows:
    """A slice when `index` is a contiguous ascending range (a view instead of a gather)."""
    values = index.tolist()
    if values and values == list(range(values[0], values[0] + len(values))):
        return slice(values[0], values[0] + len(values))
    return index


@dataclass
class Plan:
    """Where one (site, layer) is patched: batch rows, their donor rows, head columns."""

    rows: Rows  # positions in the block's batch
    src: Rows  # positions in the donor's batch
    cols: Tensor | None  # (rows, 1, width) bool for a site split into heads; None = all of it


def head_columns(runner: Runner, spec: PatchSpec, device: torch.device) -> Tensor | None:
    """(width,) bool: the columns of the spec's heads; None for a site not split into heads."""
    count = site_named(spec.site).head_count
    if count is None:
        return None
    size = runner.head_dim
    cols = torch.zeros(getattr(runner.config, count) * size, dtype=torch.bool, device=device)
    for h in spec.heads:
        cols[h * size : (h + 1) * size] = True
    return cols


def build_plans(
    parts: Sequence[tuple[PatchSpec, Tensor, Tensor]], runner: Runner, starts: Sequence[int]
) -> dict[Key, Plan]:
    """Plans from (spec, cache rows, donor rows) parts for the receiver `runner`; block j's
    batch starts at starts[j]."""
    found: dict[Key, list[tuple[Tensor, Tensor, Tensor | None]]] = {}
    for spec, rows, src in parts:
        cols = head_columns(runner, spec, rows.device)
        if cols is not None:
            cols = cols.expand(len(rows), 1, len(cols))
        for key in keys_of(spec):
            found.setdefault(key, []).append((rows - starts[key[1]], src, cols))
    plans = {}
    for key, parts_k in found.items():
        rows, src = (torch.cat([p[i] for p in parts_k]) for i in range(2))
        cols = None if parts_k[0][2] is None else torch.cat([p[2] for p in parts_k])
        plans[key] = Plan(compact(rows), compact(src), cols)
    return plans


def patch_edit(plans: dict[Key, Plan], donor_acts: dict[Key, Tensor]):
    """The receiver hook: copy donor activations into the planned rows (and heads)."""

    def edit(key: Key, act: Tensor) -> Tensor:
        plan = plans[key]
        new = donor_acts[key][plan.src].to(device=act.device, dtype=act.dtype)
        if plan.cols is not None:
            new = torch.where(plan.cols, new, act[plan.rows])
        act[plan.rows] = new
        return act

    return edit


def decoder_forward(
    runner: Runner,
    ids: Tensor,
    positions: Tensor,
    mask_for: MaskFor,
    cache: Any,
    *hooks: AbstractContextManager[Any],
) -> Tensor | None:
    """One decoder pass (no lm_head) under `hooks`; None if a capture hook stopped it early."""
    masks = {kind: attention_bias(runner, mask_for(w)) for kind, w in runner.windows.items()}
    by_type = runner.arch.mask_form == "by_layer_type"
    with runner.context(), ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook)
        try:
            out = runner.decoder(
                input_ids=ids,
                position_ids=positions,
                attention_mask=masks if by_type else next(iter(masks.values())),
                use_cache=cache is not None,
                **{runner.cache_argument: cache},
            )
        except StopForward:
            out = None
    if cache is not None:
        cache.advance(ids.shape[1])
    return None if out is None else out.last_hidden_state


def attention_bias(runner: Runner, mask: Tensor) -> Tensor:
    """The boolean mask in the form the model's attention implementation expects."""
    if runner.config._attn_implementation != "eager":
        return mask  # sdpa takes booleans (check_pair allows only sdpa and eager)
    bias = torch.zeros(mask.shape, dtype=runner.dtype, device=mask.device)
    return bias.masked_fill_(~mask, torch.finfo(runner.dtype).min)
