"""Patch plans and the single decoder pass every patched run is made of.

A plan says, for one (site, layer), which rows of a block's batch take which rows
of the donor's batch (and, for site "head", which columns); `patch_edit` turns
plans into the hook that writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .cache import Rows
from .hooks import Key, StopForward
from .models import Runner
from .spec import PatchSpec, head_dim


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
    cols: Tensor | None  # [rows, 1, width] bool for site "head"; None = the whole site


def build_plans(
    parts: Sequence[tuple[PatchSpec, Tensor, Tensor]], config: Any, starts: Sequence[int]
) -> dict[Key, Plan]:
    """Plans from (spec, cache rows, donor rows) parts; block j's batch starts at starts[j]."""
    found: dict[Key, list[tuple[Tensor, Tensor, Tensor | None]]] = {}
    width = config.num_attention_heads * head_dim(config)
    for spec, rows, src in parts:
        cols = None
        if spec.site == "head":
            cols = torch.zeros(width, dtype=torch.bool, device=rows.device)
            for h in spec.heads:
                cols[h * head_dim(config) : (h + 1) * head_dim(config)] = True
            cols = cols.expand(len(rows), 1, width)
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
    mask: Tensor,
    cache: Any,
    *hooks: AbstractContextManager[Any],
) -> Tensor | None:
    """One decoder pass (no lm_head) under `hooks`; None if a capture hook stopped it early."""
    with runner.context(), ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook)
        try:
            out = runner.decoder(
                input_ids=ids,
                position_ids=positions,
                attention_mask={"full_attention": attention_bias(runner, mask)},
                past_key_values=cache,
                use_cache=cache is not None,
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
