"""Hook context managers: one generic installer of site hooks, and capturing built on it.

Hooks live only inside a `with` block and are removed in `finally`, so an exception (or
Ctrl-C) mid-generation never leaves a model silently patched. They are installed per forward
call, which also lets a donor and a receiver share one set of modules (a LoRA adapter toggled
on and off over one base).

Contract of an edit: it gets the site's activation and returns a NEW tensor (or None to leave
it); it never writes into the tensor it is given. Transformers' blocks keep locals that alias
their activations (`residual = hidden_states`), so an in-place write would also change what a
later residual add reads. Our hooks are put in front of any hook already on a module
(`prepend`), so a user's own hooks observe the patched activation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .architectures import Architecture, Located, locate

Key = tuple[str, int]  # (site, layer)
Edit = Callable[[Key, Tensor], "Tensor | None"]  # a NEW tensor to use instead, or None


class StopForward(Exception):
    """Raised by a capture hook once every needed activation is stored: later layers are waste."""


def with_columns(full: Tensor, columns: tuple[int, int] | None, new: Tensor) -> Tensor:
    """`full` with its `columns` replaced by `new`, as a new tensor (`full` is not written)."""
    if columns is None:
        return new
    lo, hi = columns
    return torch.cat([full[..., :lo], new, full[..., hi:]], dim=-1)


def _edit_value(edit: Edit, key: Key, full: Tensor, columns: tuple[int, int] | None
                ) -> Tensor | None:
    act = full if columns is None else full[..., columns[0]:columns[1]]
    new = edit(key, act)
    return None if new is None else with_columns(full, columns, new)


def _post_hook(edit: Edit, key: Key, at: Located) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if at.read == "output[0]":
            new = _edit_value(edit, key, output[0], at.columns)
            return None if new is None else (new, *output[1:])
        return _edit_value(edit, key, output, at.columns)

    return hook


def _pre_hook(edit: Edit, key: Key, at: Located) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        new = _edit_value(edit, key, args[0], at.columns)
        return None if new is None else (new, *args[1:])

    return hook


def add_hook(at: Located, edit: Edit, key: Key) -> RemovableHandle:
    """Register `edit` for `key` at a located site (a pre-hook for an input, else a post-hook),
    in front of the module's other hooks."""
    if at.read == "input[0]":
        return at.module.register_forward_pre_hook(_pre_hook(edit, key, at), prepend=True)
    return at.module.register_forward_hook(_post_hook(edit, key, at), prepend=True)


@contextmanager
def removing(handles: list[RemovableHandle]) -> Iterator[list[RemovableHandle]]:
    """Remove every handle appended to the list on exit, whatever happens."""
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def site_hooks(
    lm: nn.Module, arch: Architecture, keys: Iterable[Key], edit: Edit
) -> Iterator[None]:
    """Call `edit((site, layer), activation)` wherever a listed site is computed.

    The activation is [batch, seq, width] (width = hidden size, or heads * head_dim for a
    site split into heads); a returned tensor replaces it in the forward pass. Stream sites
    are read at their block here (`resid`: its output, `resid_pre`: its input).
    """
    with removing([]) as handles:
        for key in keys:
            handles.append(add_hook(locate(lm, arch, *key), edit, key))
        yield


@contextmanager
def capturing(
    lm: nn.Module,
    arch: Architecture,
    keys: Iterable[Key],
    store: dict[Key, Tensor],
    stop: bool = False,
) -> Iterator[None]:
    """Store each listed site's activation in `store`; with `stop`, raise StopForward
    once all are stored (the caller catches it) so the model skips the layers above."""
    keys = list(keys)

    def record(key: Key, act: Tensor) -> None:
        store[key] = act
        if stop and len(store) == len(keys):
            raise StopForward

    store.clear()
    with site_hooks(lm, arch, keys, record):
        yield
