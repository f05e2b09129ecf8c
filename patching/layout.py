"""Where each patched row sits in the receiver's batch, and at which block it joins.

A patched row computes exactly what its unpatched "history" row computes until
its first patch, so it joins the batch there (rows.py): a row patching a block
output (site "resid") at l joins at block l + 1 with the donor's block output as
its input (after the last block, straight into the final norm, when l is the
last layer); any other row joins at its first patched block with its history
row's block input. Cache rows 0..n-1 hold
the patched rows, latest joiners first and, within one block, donor-fed rows
first, so every block runs one contiguous window; history rows follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .architectures import site_named
from .spec import PatchSpec


def fed_by_donor(spec: PatchSpec) -> bool:
    """A block-output patch: its rows join the next block with the donor's value."""
    return site_named(spec.site).block_output


def entry_of(spec: PatchSpec) -> int:
    """The block a row of this spec joins at."""
    return min(spec.layers) + fed_by_donor(spec)


@dataclass(frozen=True)
class Layout:
    rows: Tensor  # (n,) the patched row held by each cache row
    entry: Tensor  # (n,) the block each cache row joins at
    from_donor: Tensor  # (n,) bool: joins with the donor's block output
    layers: int
    history_depth: int  # history rows run blocks < history_depth

    @classmethod
    def build(
        cls, rows: Tensor, specs: list[PatchSpec], spec_of: Tensor, layers: int, history_depth: int
    ) -> Layout:
        """Lay out patched `rows` (spec_of[r] = index of row r's spec)."""
        entry = torch.tensor([entry_of(s) for s in specs], device=rows.device)[spec_of[rows]]
        fed = torch.tensor([fed_by_donor(s) for s in specs], device=rows.device)[spec_of[rows]]
        order = torch.sort(-(2 * entry + fed), stable=True).indices
        return cls(rows[order], entry[order], fed[order], layers, history_depth)

    def windows(self, history: int) -> list[tuple[int, int] | None]:
        """Cache rows [lo, hi) run by block j, for j = 0..layers (the last: the final norm).

        None: nothing to run yet (no row has joined, no history row is needed).
        """
        n, out = len(self.rows), []
        for j in range(self.layers + 1):
            lo = n - int((self.entry <= j).sum())
            hi = n + (history if j < self.history_depth else 0)
            out.append((lo, hi) if hi > lo else None)
        return out

    def joining(self, j: int) -> tuple[Tensor, Tensor]:
        """Cache rows joining at block j: (donor-fed, history-fed), each ascending."""
        at = (self.entry == j).nonzero()[:, 0]
        return at[self.from_donor[at]], at[~self.from_donor[at]]
