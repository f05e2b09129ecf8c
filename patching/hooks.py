"""Hook context managers: one generic installer, two named uses (capture, patch).

Hooks live only inside a `with` block and are removed in `finally`, so an exception
(or Ctrl-C) mid-generation never leaves a model silently patched. They are installed
per forward call, which also lets a donor and a receiver share one set of modules
(a LoRA adapter toggled on and off over one base).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .architectures import Architecture, locate

Key = tuple[str, int]  # (site, layer)
Edit = Callable[[Key, Tensor], "Tensor | None"]  # return a replacement, or None to leave it


class StopForward(Exception):
    """Raised by a capture hook once every needed activation is stored: later layers are waste."""


def _post_hook(edit: Edit, key: Key, read: str) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if read == "output[0]":
            new = edit(key, output[0])
            return None if new is None else (new, *output[1:])
        return edit(key, output)

    return hook


def _pre_hook(edit: Edit, key: Key) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        new = edit(key, args[0])
        return None if new is None else (new, *args[1:])

    return hook


@contextmanager
def site_hooks(
    lm: nn.Module, arch: Architecture, keys: Iterable[Key], edit: Edit
) -> Iterator[None]:
    """Call `edit((site, layer), activation)` wherever a listed site is computed.

    The activation is [batch, seq, width] (width = hidden size, or heads * head_dim for a
    site split into heads); a returned tensor replaces it in the forward pass.
    """
    handles: list[RemovableHandle] = []
    try:
        for key in keys:
            module, read = locate(lm, arch, *key)
            if read == "input[0]":
                handles.append(module.register_forward_pre_hook(_pre_hook(edit, key)))
            else:
                handles.append(module.register_forward_hook(_post_hook(edit, key, read)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capturing(
    lm: nn.Module,
    arch: Architecture,
    keys: Iterable[Key],
    store: dict[Key, Tensor],
    stop: bool = False,
) -> Iterator[None]:
    """Store each listed site's activation in `store`; with `stop`, raise StopForward
    once all are stored (the caller catches it) so the donor skips the layers above."""
    keys = list(keys)

    def record(key: Key, act: Tensor) -> None:
        store[key] = act
        if stop and len(store) == len(keys):
            raise StopForward

    store.clear()
    with site_hooks(lm, arch, keys, record):
        yield


@contextmanager
def patching(lm: nn.Module, arch: Architecture, keys: Iterable[Key], edit: Edit) -> Iterator[None]:
    """Replace each listed site's activation with `edit`'s result."""
    with site_hooks(lm, arch, keys, edit):
        yield
