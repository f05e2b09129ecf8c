"""Run each decoder block on a window of rows, so rows can join or leave mid-forward.

Rows that patch layer l compute blocks < l exactly like the unpatched run of the
same tokens, so they need not run them: they join at block l, copying their block
input from that unpatched "history" row. Donor rows leave after their deepest
needed layer. A block pre-hook reshapes the batch and its per-row arguments
(mask, position ids, rotary embeddings: named in the site table); the model code
is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .sites import SiteTable


@dataclass
class RowPlan:
    """Cache rows per block: block j runs rows [lo, hi) = windows[j], in cache order.

    Windows only grow at the front (rows join) and shrink at the back (rows leave).
    `first` are the rows of the model's input batch; `source[r]` is the row whose
    block input row r copies when it joins (input rows map to themselves). None:
    nobody joins and the input rows are 0..n-1.
    """

    first: tuple[int, int]
    windows: list[tuple[int, int]]
    source: Tensor | None = None


def _every_row(value: Any, index: Tensor | None) -> Any:
    """A per-row argument given for the input rows, extended to every cache row."""
    if isinstance(value, tuple):
        return tuple(_every_row(v, index) for v in value)
    return value if index is None or not isinstance(value, Tensor) else value[index]


def _window(value: Any, lo: int, hi: int) -> Any:
    if isinstance(value, tuple):
        return tuple(_window(v, lo, hi) for v in value)
    return value[lo:hi] if isinstance(value, Tensor) else value


@contextmanager
def row_windows(lm: nn.Module, table: SiteTable, plan: RowPlan) -> Iterator[None]:
    """Install the per-block row reshaping for one forward pass."""
    index = None if plan.source is None else plan.source - plan.first[0]
    every: dict[str, Any] = {}  # the model passes the same per-row arguments to every block

    def hook_for(j: int):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            a, _ = plan.windows[j - 1] if j else plan.first
            c, d = plan.windows[j]
            hidden = args[0]
            if c < a:  # rows joining here copy their history row's block input
                joined = hidden[plan.source[c:a] - a]
                hidden = torch.cat([joined, hidden[: d - a]]) if d > a else joined
            elif d - a < hidden.shape[0]:  # rows leaving
                hidden = hidden[: d - a]
            for name in table.row_kwargs:
                if name in kwargs:
                    if name not in every:
                        every[name] = _every_row(kwargs[name], index)
                    kwargs[name] = _window(every[name], c, d)
            return (hidden, *args[1:]), kwargs

        return hook

    handles: list[RemovableHandle] = []
    try:
        for j, block in enumerate(lm.get_submodule(table.layers)):
            handles.append(block.register_forward_pre_hook(hook_for(j), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
