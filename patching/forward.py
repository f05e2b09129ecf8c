"""Run one decoder pass of a model as a `PassPlan` says: the one place hooks meet a pass.

`run_pass` installs, for the duration of one forward call and removed in `finally`:
- per block, a pre-hook that captures the stream entering it (donor), reshapes the batch
  (rows joining or leaving, with the per-row mask, position ids and rotary embeddings
  windowed alike) and patches the stream (receiver); the final norm gets the same for rows
  patched at the last block's output; a block with no row to run is skipped;
- per in-block site, one hook per module and kind that captures or patches it;
- for `resid_mid`: the patched stream goes into the MLP path, and the block's output becomes
  that stream plus the MLP term, the block's own residual add redone with the patched residual
  (its local `residual` still holds the unpatched one).

Edits are out of place (`hooks` module docstring). A donor pass returns its captures as a new
dict; nothing is shared between passes but the KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .architectures import MID_SITE, SITES, Located, locate
from .cache import SlotCache
from .donors import DonorSource
from .hooks import Key, StopForward, removing, with_columns
from .models import Runner
from .passes import STREAM, Edit, Join, PassPlan

# The boolean [B, 1, queries, keys] mask of one pass for a sliding window (None: no window);
# each model evaluates it for the windows its layer types use (batch.causal_mask and kin).
MaskFor = Callable[[int | None], Tensor]


@dataclass(frozen=True)
class Values:
    """What a pass's edits read: the donor's captures of this step (`captured`: key ->
    [donor rows, queries, width]), or the constants of `donor`; and its alpha. An edit
    without `slots` reads the donor's last queries (the receiver's align right with them)."""

    donor: DonorSource
    captured: Mapping[Key, Tensor] | None = None

    def read(self, key: Key, edit: Edit, current: Tensor) -> Tensor:
        """(rows, queries, width) donor values for `edit`'s rows; `current` is their own."""
        if self.captured is None:
            value = self.donor.constant_value(key, current.shape[-1], current)
            return value.expand(current.shape)
        acts = self.captured[key]
        if edit.slots is None:  # the receiver's queries align right with the donor's
            return acts[edit.source][:, acts.shape[1] - current.shape[1]:].to(current)
        source = edit.source
        if isinstance(source, slice):
            source = torch.arange(source.start, source.stop, device=acts.device)
        return acts[source[:, None], edit.slots.to(acts.device)].to(current)

    def apply(self, key: Key, edit: Edit, act: Tensor) -> Tensor:
        """`act` with `edit` applied, as a new tensor."""
        current = act[_rows_on(edit.rows, act)]
        new = self.read(key, edit, current)
        alpha = self.donor.alpha
        if alpha != 1.0:
            new = current + alpha * (new - current)
        mask = edit.cols
        if edit.where is not None:
            mask = edit.where if mask is None else mask & edit.where
        if mask is not None:
            new = torch.where(mask.to(act.device), new, current)
        out = act.clone()
        out[_rows_on(edit.rows, act)] = new
        return out

    def fed(self, key: Key, join: Join, like: Tensor) -> Tensor:
        """The stream values of the rows a join feeds from the donor."""
        edit = join.fed
        rows = edit.rows.stop if isinstance(edit.rows, slice) else len(edit.rows)
        shape = (rows, *like.shape[1:])
        return self.read(key, edit, like.new_empty(shape))


def _rows_on(rows: slice | Tensor, act: Tensor) -> slice | Tensor:
    """Row indices on the device of the block they index (blocks of a split model differ)."""
    return rows if isinstance(rows, slice) else rows.to(act.device)


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


class _Pass:
    """The hooks of one pass (module docstring); `captured` fills as the pass runs."""

    def __init__(self, runner: Runner, plan: PassPlan, values: Values | None,
                 capture: Sequence[Key], stop: bool) -> None:
        self.runner, self.plan, self.values = runner, plan, values
        self.capture, self.stop = set(capture), stop
        self.captured: dict[Key, Tensor] = {}
        self.layers = runner.config.num_hidden_layers
        # Per-row arguments extended to every cache row, once per argument object (blocks of
        # one layer type share them); the original is kept so its id is not reused meanwhile.
        self._every: dict[int, tuple[Any, Any]] = {}
        # resid_mid patches: the layers, and per layer the patched stream and its MLP term.
        self._mid_layers = {layer for site, layer in plan.edits if site == MID_SITE}
        self._mid: dict[int, Tensor] = {}
        self._mlp: dict[int, Tensor] = {}

    # -- what hooks do ---------------------------------------------------------------
    def _record(self, key: Key, act: Tensor) -> None:
        self.captured[key] = act
        if self.stop and len(self.captured) == len(self.capture):
            raise StopForward

    def _join(self, j: int, hidden: Tensor) -> Tensor:
        (a, _), (c, d) = self.plan.incoming(j), self.plan.windows[j]
        kept = hidden[: d - a] if d - a < hidden.shape[0] else hidden
        if c == a:
            return kept
        join = self.plan.joins[j]
        parts = [] if join.fed is None else [self.values.fed((STREAM, j), join, hidden)]
        if len(join.history):
            parts.append(hidden[join.history.to(hidden.device)])
        return torch.cat([*parts, kept]) if d > a else torch.cat(parts)

    def stream(self, j: int, hidden: Tensor) -> Tensor:
        """The stream entering block j (or the final norm): capture, reshape, patch."""
        key = (STREAM, j)
        if key in self.capture:
            self._record(key, hidden)
        if self.plan.windows[j] is not None and self.plan.reshapes(j):
            hidden = self._join(j, hidden)
        edit = self.plan.edits.get(key)
        return hidden if edit is None else self.values.apply(key, edit, hidden)

    def site(self, key: Key, act: Tensor) -> Tensor | None:
        """An in-block site: capture (donor) or patch (receiver)."""
        if key in self.capture:
            self._record(key, act)
            return None
        edit = self.plan.edits.get(key)
        new = None if edit is None else self.values.apply(key, edit, act)
        if key[0] == MID_SITE and key[1] in self._mid_layers:
            self._mid[key[1]] = act if new is None else new
        if key[0] == "mlp" and key[1] in self._mid_layers:
            self._mlp[key[1]] = act if new is None else new
        return new

    # -- installing them -------------------------------------------------------------
    def _block_pre(self, j: int) -> Callable[..., Any]:
        windowed = self.plan.windows[j] not in (None, self.plan.first)

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if windowed:
                c, d = self.plan.windows[j]
                for name in self.runner.arch.row_kwargs:
                    if name in kwargs:
                        value = kwargs[name]
                        if id(value) not in self._every:
                            self._every[id(value)] = (value, _every_row(value, self.plan.source))
                        kwargs[name] = _window(self._every[id(value)][1], c, d)
            return (self.stream(j, args[0]), *args[1:]), kwargs

        return hook

    @contextmanager
    def installed(self) -> Iterator[None]:
        lm, arch, plan = self.runner.lm, self.runner.arch, self.plan
        blocks = lm.get_submodule(arch.layers)
        keys = set(self.capture) | set(plan.edits)
        streams = {j for site, j in keys if site == STREAM}
        in_block = {k for k in keys if k[0] != STREAM}
        in_block |= {("mlp", layer) for layer in self._mid_layers}
        skipped: list[tuple[nn.Module, Any]] = []
        with removing([]) as handles:
            try:
                for j, block in enumerate(blocks):
                    if plan.windows[j] is None:
                        skipped.append((block, block.__dict__.get("forward")))
                        block.forward = _identity
                    if j in streams or (plan.windows[j] is not None and (
                            plan.windows[j] != plan.first or plan.reshapes(j))):
                        handles.append(block.register_forward_pre_hook(
                            self._block_pre(j), with_kwargs=True, prepend=True))
                final = self.layers
                if final in streams or plan.reshapes(final):
                    norm = lm.get_submodule(arch.final_norm)
                    handles.append(norm.register_forward_pre_hook(
                        lambda m, args: (self.stream(final, args[0]), *args[1:]), prepend=True))
                handles += self._site_hooks(sorted(in_block, key=lambda k: SITES[k[0]].order))
                for layer in self._mid_layers:
                    handles.append(blocks[layer].register_forward_hook(
                        lambda m, a, out, layer=layer: self._mid[layer] + self._mlp[layer],
                        prepend=True))
                yield
            finally:
                for block, forward in skipped:
                    del block.forward
                    if forward is not None:
                        block.forward = forward

    def _site_hooks(self, keys: Sequence[Key]) -> list[RemovableHandle]:
        """One hook per module and kind, running its sites in forward order."""
        lm, arch = self.runner.lm, self.runner.arch
        groups: dict[tuple[int, bool], tuple[Located, list[tuple[Key, Located]]]] = {}
        for key in keys:
            at = locate(lm, arch, *key)
            slot = (id(at.module), at.read == "input[0]")
            groups.setdefault(slot, (at, []))[1].append((key, at))
        handles = []
        for (_, pre), (at, sites) in groups.items():
            def run(full: Tensor, sites=sites) -> Tensor | None:
                changed = None
                for key, where in sites:
                    current = changed if changed is not None else full
                    part = current if where.columns is None else \
                        current[..., where.columns[0]:where.columns[1]]
                    new = self.site(key, part)
                    if new is not None:
                        changed = with_columns(current, where.columns, new)
                return changed

            if pre:
                handles.append(at.module.register_forward_pre_hook(
                    lambda m, args, run=run: None if (new := run(args[0])) is None
                    else (new, *args[1:]), prepend=True))
            elif at.read == "output[0]":
                handles.append(at.module.register_forward_hook(
                    lambda m, a, out, run=run: None if (new := run(out[0])) is None
                    else (new, *out[1:]), prepend=True))
            else:
                handles.append(at.module.register_forward_hook(
                    lambda m, a, out, run=run: run(out), prepend=True))
        return handles


def run_pass(
    runner: Runner,
    plan: PassPlan,
    ids: Tensor,
    positions: Tensor,
    mask_for: MaskFor,
    cache: SlotCache | None = None,
    values: Values | None = None,
    capture: Sequence[Key] = (),
    stop: bool = False,
) -> tuple[Tensor | None, dict[Key, Tensor]]:
    """One decoder pass (no lm_head) of `runner` as `plan` says; returns the final hidden states
    (None if the pass stopped once `capture` was complete, with `stop`) and the captures."""
    hooks = _Pass(runner, plan, values, capture, stop)
    view = None if cache is None else cache.view(plan.starts)
    hidden = decoder_forward(runner, ids, positions, mask_for, view, hooks.installed())
    if cache is not None:
        cache.advance(ids.shape[1])
    return hidden, hooks.captured


def decoder_forward(
    runner: Runner,
    ids: Tensor,
    positions: Tensor,
    mask_for: MaskFor,
    cache: Any = None,
    *hooks: AbstractContextManager[Any],
) -> Tensor | None:
    """One decoder pass (no lm_head) under `hooks`, with the engine's own masks in the form
    the family takes; None if a capture hook stopped it early."""
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
            return None
    return out.last_hidden_state


def attention_bias(runner: Runner, mask: Tensor) -> Tensor:
    """The boolean mask in the form the model's attention implementation expects."""
    if runner.config._attn_implementation != "eager":
        return mask  # sdpa takes booleans (check_pair allows only sdpa and eager)
    bias = torch.zeros(mask.shape, dtype=runner.dtype, device=mask.device)
    return bias.masked_fill_(~mask, torch.finfo(runner.dtype).min)
