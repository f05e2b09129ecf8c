"""One forward pass as a value (`PassPlan`), and the pure functions that build one.

A pass runs a batch whose rows may join mid-forward and leave early:

- Cache rows 0..n-1 are patched rows, latest joiners first (and within one block, rows fed by
  the donor first); rows n..n+h-1 are unpatched "history" rows, which form the model's input
  batch. A patched row computes exactly what its history row computes until its first patch,
  so it joins there: at block j, either with the donor's stream value (a `resid_pre`/`resid`
  patch that replaces every position it runs: "fed") or with its history row's input.
  Joining rows are prepended, so each block runs one contiguous window of cache rows.
- A donor pass runs rows sorted by how deep they must go; rows leave after their last block.
- `edits` say which rows of a site's batch take which donor values, in which head columns and
  at which query positions.

Block j = `layers` stands for the final norm (rows patched at the last block's output join
there). The stream entering block j is the site key ("resid_pre", j) inside a pass: `resid` of
layer l is ("resid_pre", l + 1). Builders take plain index tensors, never a model, so they
are unit-tested on their own (tests/test_passes.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from .hooks import Key

Rows = slice | Tensor  # rows of a batch: a slice where contiguous (a view), else an index
Window = tuple[int, int] | None  # cache rows [lo, hi) a block runs; None: the block is skipped
STREAM = "resid_pre"  # the pass-internal name of every point of the residual stream


def compact(index: Tensor) -> Rows:
    """A slice when `index` is a contiguous ascending range (a view instead of a gather)."""
    values = index.tolist()
    if values and values == list(range(values[0], values[0] + len(values))):
        return slice(values[0], values[0] + len(values))
    return index


def stream_block(key: Key) -> int:
    """The block whose batch a site key's activation lives in (a stream key: the block it
    enters)."""
    return key[1]


@dataclass(frozen=True)
class Edit:
    """The rows of one site's batch that a pass patches, and what they take.

    New value = donor[source] (at `slots` per query, else the same query positions), blended
    as receiver + alpha * (donor - receiver) when alpha != 1, kept only in `cols` and `where`.
    """

    rows: Rows  # rows of the block's batch
    source: Rows  # rows of the donor's batch (unused for a constant donor)
    cols: Tensor | None = None  # (rows, 1, width) bool: the heads' columns; None: all
    where: Tensor | None = None  # (rows, queries, 1) bool: patched queries; None: all
    slots: Tensor | None = None  # (rows, queries) long: donor query slot of each query


@dataclass(frozen=True)
class Join:
    """Rows entering the batch at one block, in cache order: first those fed by the donor
    (`fed`, an Edit whose rows are their positions among the joiners), then those taking their
    history row's input (`history`: rows of the incoming batch)."""

    fed: Edit | None
    history: Tensor


@dataclass(frozen=True)
class PassPlan:
    """Which rows run which blocks, where rows join, and which edits apply (module docstring)."""

    first: tuple[int, int]  # cache rows of the model's input batch
    windows: tuple[Window, ...]  # per block j = 0..layers (layers: the final norm)
    joins: Mapping[int, Join] = field(default_factory=lambda: MappingProxyType({}))
    edits: Mapping[Key, Edit] = field(default_factory=lambda: MappingProxyType({}))
    source: Tensor | None = None  # cache row -> the input row whose per-row arguments it uses

    def incoming(self, j: int) -> tuple[int, int]:
        """The cache rows block j receives: those of the last block run before it."""
        return next((w for w in reversed(self.windows[:j]) if w is not None), self.first)

    @property
    def starts(self) -> tuple[int, ...]:
        """The first cache row of each block's batch (what its KV-cache layer writes)."""
        return tuple(w[0] if w else 0 for w in self.windows[:-1])

    def reshapes(self, j: int) -> bool:
        """Whether block j's batch differs from what it receives."""
        window = self.windows[j]
        return window is not None and window != self.incoming(j)


def plain_pass(rows: int, layers: int) -> PassPlan:
    """Every row through every block: no joins, no edits."""
    return PassPlan((0, rows), ((0, rows),) * (layers + 1))


def donor_pass(depth: Tensor, layers: int) -> PassPlan:
    """A donor pass over rows sorted deepest first: row r runs blocks < depth[r] (a stream
    capture at block j needs depth j, a site inside block l needs depth l + 1)."""
    windows: list[Window] = []
    for j in range(layers + 1):
        keep = int((depth > j).sum())
        windows.append((0, keep) if keep else None)
    return PassPlan((0, len(depth)), tuple(windows))


def edited_pass(rows: int, layers: int, parts: Sequence[EditRows]) -> PassPlan:
    """Every row through every block, with edits (row r reads donor row r)."""
    plan = plain_pass(rows, layers)
    arange = torch.arange(rows, device=parts[0].rows.device if parts else None)
    return PassPlan(plan.first, plan.windows, edits=_merge(parts, plan.windows, arange,
                                                            arange.device))


@dataclass(frozen=True)
class EditRows:
    """One part's patch in one pass, in cache rows (the builder turns it into an `Edit`)."""

    key: Key
    rows: Tensor  # (r,) cache rows
    cols: Tensor | None = None  # (width,) bool head columns; None: all
    where: Tensor | None = None  # (r, queries) bool; None: every query
    slots: Tensor | None = None  # (r, queries) long donor slots; None: the same ones


def layout_order(entry: Tensor, fed: Tensor) -> Tensor:
    """The cache order of patched rows: latest joiners first, and within one block the rows
    the donor feeds first (the order `receiver_pass` needs)."""
    return torch.sort(-(2 * entry + fed.long()), stable=True).indices


def receiver_pass(
    entry: Tensor,
    fed: Tensor,
    history_of: Tensor,
    donor_of: Tensor,
    histories: int,
    history_depth: int,
    layers: int,
    parts: Sequence[EditRows] = (),
) -> PassPlan:
    """The receiver pass of n patched cache rows (in `layout_order`) and `histories` history
    rows.

    entry[i]: the block cache row i joins at (layers: the final norm); fed[i]: it joins with
    the donor's stream value there; history_of[i]: its history row (0..histories-1);
    donor_of[i]: its donor batch row. History rows run blocks < history_depth. `parts`: the
    edits of this pass, in cache rows.
    """
    n, dev = len(entry), entry.device
    if n and bool(((entry[1:] > entry[:-1]) | ((entry[1:] == entry[:-1]) & fed[1:] & ~fed[:-1]))
                  .any()):
        raise ValueError("patched rows are not in layout_order")
    windows: list[Window] = []
    for j in range(layers + 1):
        lo = n - int((entry <= j).sum())
        hi = n + (histories if j < history_depth else 0)
        windows.append((lo, hi) if hi > lo else None)
    plan = PassPlan((n, n + histories), tuple(windows))
    joins = {}
    for j in range(layers + 1):
        at = (entry == j).nonzero()[:, 0]
        if not len(at):
            continue
        incoming_lo = plan.incoming(j)[0]
        is_fed = fed[at]
        fed_rows, hist_rows = at[is_fed], at[~is_fed]
        fed_edit = None
        if len(fed_rows):
            fed_edit = Edit(slice(0, len(fed_rows)), compact(donor_of[fed_rows]))
        history = n + history_of[hist_rows] - incoming_lo
        if bool((history < 0).any()):
            raise ValueError(f"block {j}: a joining row's history row does not reach it")
        joins[j] = Join(fed_edit, history)
    edits = _merge(parts, windows, donor_of, dev)
    source = torch.cat([history_of, torch.arange(histories, device=dev)])
    return PassPlan(plan.first, plan.windows, MappingProxyType(joins), edits, source)


def _merge(parts: Sequence[EditRows], windows: Sequence[Window], donor_of: Tensor,
           device: torch.device) -> Mapping[Key, Edit]:
    """One `Edit` per key from the parts touching it, rows made relative to the key's block.
    Where one part restricts columns or queries and another does not, the other's rows get an
    all-true mask."""
    by_key: dict[Key, list[EditRows]] = {}
    for part in parts:
        if len(part.rows):
            by_key.setdefault(part.key, []).append(part)
    edits = {}
    for key, group in by_key.items():
        window = windows[stream_block(key)]
        rows = torch.cat([p.rows for p in group])
        if window is None or bool(((rows < window[0]) | (rows >= window[1])).any()):
            raise ValueError(f"{key}: an edited row does not run block {stream_block(key)}")
        cols = where = slots = None
        if any(p.cols is not None for p in group):
            width = next(p.cols for p in group if p.cols is not None).shape[0]
            cols = torch.cat([
                (p.cols if p.cols is not None
                 else torch.ones(width, dtype=torch.bool, device=device)).expand(len(p.rows), 1,
                                                                                  width)
                for p in group
            ])
        if any(p.where is not None for p in group):
            queries = next(p.where for p in group if p.where is not None).shape[1]
            where = torch.cat([
                p.where if p.where is not None
                else torch.ones(len(p.rows), queries, dtype=torch.bool, device=device)
                for p in group
            ])[..., None]
        if any(p.slots is not None for p in group):
            if not all(p.slots is not None for p in group):
                raise ValueError(f"{key}: parts disagree on donor slots")
            slots = torch.cat([p.slots for p in group])
        edits[key] = Edit(compact(rows - window[0]), compact(donor_of[rows]), cols, where, slots)
    return MappingProxyType(edits)
