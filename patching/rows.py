"""Run each decoder block on a window of rows, so rows can join or leave mid-forward.

See layout.py for why: patched rows join at their first patched block, donor rows
leave after their deepest needed block. A pre-hook on a block reshapes the batch
and its per-row arguments (mask, position ids, rotary embeddings: named in the
architecture table); a hook on the last block lets rows join just before the final norm;
a block with no row to run is skipped (its forward is the identity for the pass).
The model code is unchanged and everything is restored on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .architectures import Architecture

Window = tuple[int, int] | None  # cache rows [lo, hi) a block runs; None: the block is skipped
Join = Callable[[int, Tensor], Tensor]  # (block j, its incoming batch) -> inputs of the joiners


@dataclass
class RowPlan:
    """Block j runs cache rows windows[j] (j = layers: the rows reaching the final norm).

    Windows only grow at the front (rows join, their inputs from `join`) and shrink
    at the back (rows leave). `first` are the rows of the model's input batch;
    source[r] is the input row whose per-row arguments row r shares (None: input
    rows are 0..n-1 and nobody joins).
    """

    first: tuple[int, int]
    windows: list[Window]
    source: Tensor | None = None
    join: Join | None = None

    def incoming(self, j: int) -> tuple[int, int]:
        """The rows block j receives: those of the last block run before it."""
        return next((w for w in reversed(self.windows[:j]) if w is not None), self.first)


def _every_row(value: Any, index: Tensor | None) -> Any:
    """A per-row argument given for the input rows, extended to every cache row."""
    if isinstance(value, tuple):
        return tuple(_every_row(v, index) for v in value)
    return value if index is None or not isinstance(value, Tensor) else value[index]


def _window(value: Any, lo: int, hi: int) -> Any:
    if isinstance(value, tuple):
        return tuple(_window(v, lo, hi) for v in value)
    return value[lo:hi] if isinstance(value, Tensor) else value


def _identity(hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return hidden_states


@contextmanager
def row_windows(lm: nn.Module, arch: Architecture, plan: RowPlan) -> Iterator[None]:
    """Install the per-block row reshaping for one forward pass."""
    # A per-row argument extended to every cache row, once per argument object: blocks of one
    # layer type share their mask and rotary embeddings (Gemma 3's differ between types).
    # The original is kept with it, so its id cannot be reused within the pass.
    every: dict[int, tuple[Any, Any]] = {}

    def reshape(j: int, hidden: Tensor) -> Tensor:
        (a, _), (c, d) = plan.incoming(j), plan.windows[j]
        if c < a:
            joined = plan.join(j, hidden)
            return torch.cat([joined, hidden[: d - a]]) if d > a else joined
        return hidden[: d - a] if d - a < hidden.shape[0] else hidden

    def pre_hook(j: int):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            c, d = plan.windows[j]
            for name in arch.row_kwargs:
                if name in kwargs:
                    value = kwargs[name]
                    if id(value) not in every:
                        every[id(value)] = (value, _every_row(value, plan.source))
                    kwargs[name] = _window(every[id(value)][1], c, d)
            return (reshape(j, args[0]), *args[1:]), kwargs

        return hook

    blocks = lm.get_submodule(arch.layers)
    handles: list[RemovableHandle] = []
    skipped: list[tuple[nn.Module, Any]] = []
    try:
        for j, block in enumerate(blocks):
            if plan.windows[j] is None:
                skipped.append((block, block.__dict__.get("forward")))
                block.forward = _identity
            elif plan.windows[j] != plan.first or plan.incoming(j) != plan.first:
                handles.append(block.register_forward_pre_hook(pre_hook(j), with_kwargs=True))
        last = len(blocks)
        if plan.windows[last] not in (None, plan.incoming(last)):  # None: nothing is read
            handles.append(blocks[-1].register_forward_hook(lambda m, a, out: reshape(last, out)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for block, forward in skipped:
            del block.forward
            if forward is not None:
                block.forward = forward
