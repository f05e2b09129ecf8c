"""A preallocated KV cache the engine can rearrange cheaply.

All layers on one device live in one tensor [2 (k/v), layers, rows, kv_heads, max_len,
head_dim]. A decode step writes one slot in place (DynamicCache concatenates, copying the whole
history every step); restoring the receiver's unpatched history after a "newest" step, and
splitting rows when histories diverge in a sweep, are each ONE indexing op over every layer of
a device. A model split over devices (accelerate's big-model dispatch) has one such tensor per
run of consecutive layers on one device, where those layers run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin

Rows = slice | Tensor


class _SlotLayer(CacheLayerMixin):
    """The per-layer view transformers' attention calls `update` on."""

    is_compileable = False

    def __init__(self, store: SlotCache, index: int, start: int) -> None:
        super().__init__()
        self.store, self.index, self.start, self.is_initialized = store, index, start, True

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        """Nothing to do: the store is allocated up front."""

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        # This block's batch is the cache rows [lo, lo + batch) (passes.PassPlan.starts).
        (kv, i), start, lo = self.store.layer(self.index), self.store.length, self.start
        rows, end = slice(lo, lo + key_states.shape[0]), start + key_states.shape[-2]
        kv[0, i, rows, :, start:end] = key_states
        kv[1, i, rows, :, start:end] = value_states
        return kv[0, i, rows, :, :end], kv[1, i, rows, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.store.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.store.length

    def get_max_length(self) -> int:
        return self.store.groups[0].shape[-2]


class SlotCache:
    """KV storage for `rows` sequences of up to `max_len` tokens. Each pass reads and writes it
    through `view(starts)`, a transformers `Cache` whose layer i writes cache rows from
    starts[i] on; `advance` after each pass. `device` is one device, or one per layer."""

    def __init__(
        self,
        config: Any,
        head_dim: int,
        num_layers: int,
        rows: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | Sequence[torch.device],
    ) -> None:
        devices = [device] * num_layers if isinstance(device, torch.device) else \
            list(device)[:num_layers]
        runs: list[tuple[torch.device, int]] = []  # (device, layers) per run of layers
        self._where: list[tuple[int, int]] = []  # per layer: (run, index in it)
        for layer, dev in enumerate(devices):
            if layer == 0 or dev != devices[layer - 1]:
                runs.append((dev, 0))
            self._where.append((len(runs) - 1, runs[-1][1]))
            runs[-1] = (dev, runs[-1][1] + 1)
        # per run: (2: keys/values, layers, rows, kv_heads, slots, head_dim)
        self.groups = [torch.empty((2, n, rows, config.num_key_value_heads, max_len, head_dim),
                                   dtype=dtype, device=dev) for dev, n in runs]
        self.length = 0
        self.num_layers = num_layers
        self._views: dict[tuple[int, ...], Cache] = {}

    def layer(self, index: int) -> tuple[Tensor, int]:
        """(the tensor holding layer `index`, its index there)."""
        group, local = self._where[index]
        return self.groups[group], local

    def view(self, starts: Sequence[int]) -> Cache:
        """The `Cache` one pass hands the decoder; block i's batch is cache rows starts[i]...
        (kept per `starts`: steps with one layout share it)."""
        key = tuple(starts)
        if key not in self._views:
            layers = [_SlotLayer(self, i, key[i]) for i in range(self.num_layers)]
            self._views[key] = Cache(layers=layers)
        return self._views[key]

    def advance(self, tokens: int) -> None:
        self.length += tokens

    def select_rows(self, index: Tensor, capacity: int | None = None) -> None:
        """Rebuild with rows `index` (repeats allowed) first, room for `capacity` rows."""
        for g, kv in enumerate(self.groups):
            shape = list(kv.shape)
            shape[2] = max(len(index), capacity or 0)
            new = kv.new_empty(shape)
            new[:, :, : len(index), :, : self.length] = kv[:, :, _on(index, kv), :, : self.length]
            self.groups[g] = new

    def prefix(self, index: Tensor, length: int) -> SlotCache:
        """A new cache of rows `index` (repeats allowed) holding this one's first `length`
        slots: rows that share an unpatched prefix start from it."""
        out = SlotCache.__new__(SlotCache)
        out.groups = []
        for kv in self.groups:
            shape = list(kv.shape)
            shape[2] = len(index)
            new = kv.new_empty(shape)
            new[:, :, :, :, :length] = kv[:, :, _on(index, kv), :, :length]
            out.groups.append(new)
        out._where, out.length, out.num_layers, out._views = self._where, length, \
            self.num_layers, {}
        return out

    def copy_rows(self, src: Tensor, dst: int) -> None:
        """Copy rows `src` into rows dst, dst+1, ...: new groups start as their parents."""
        for kv in self.groups:
            kv[:, :, dst : dst + len(src), :, : self.length] = \
                kv[:, :, _on(src, kv), :, : self.length]

    def copy_slot(self, dst: Rows, src: Rows, slot: int) -> None:
        """Overwrite slot `slot` of rows `dst` with rows `src`, in every layer."""
        for kv in self.groups:
            at = kv[:, :, :, :, slot]
            at[:, :, _on(dst, kv)] = at[:, :, _on(src, kv)]


def _on(rows: Rows, kv: Tensor) -> Rows:
    """Row indices on `kv`'s device (a no-op on one device)."""
    return rows if isinstance(rows, slice) else rows.to(kv.device)
