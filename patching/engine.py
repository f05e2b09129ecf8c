"""KV-cached lockstep generation: the donor and the receiver advance one token together.

Rows. Patched row r = s*B + b runs spec s on prompt b. The donor is unpatched, so
its state depends on the token history alone: it runs once per distinct history
(a "group"); every row starts in its prompt's group (the prompt prefill is shared
by all specs) and a group splits when its rows pick different tokens. The
receiver also runs each group once UNPATCHED (its "history" row): a row patching
layer l first differs from it at block l, so it joins the batch there, copying
the history row's block input (see rows.py), and donor rows leave after their
deepest needed layer.

Receiver cache rows: patched rows, those joining latest first, then history rows
(new groups are appended). Block j runs the contiguous window of rows that have
joined by j, plus the history rows while anything still needs them.

- positions="all": a patched row keeps its own patched K/V from its first layer
  on, the prompt prefill included.
- positions="newest": a patched row's K/V are its history row's: after each step
  its newest slot is overwritten with the history row's. The prompt's last token
  is the first patched position, so the prefill is the history alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .batch import Prompts, causal_mask
from .cache import SlotCache
from .hooks import Key, capturing, patching
from .models import Runner
from .plans import build_plans, decoder_forward, keys_of, patch_edit
from .rows import RowPlan, row_windows
from .spec import PatchSpec


def _layout(entry: Tensor, rows: Tensor) -> Tensor:
    """`rows` ordered by entry layer, latest first (ties keep their order)."""
    return rows[torch.sort(-entry[rows], stable=True).indices]


def _windows(
    entry_sorted: Tensor, history: int, history_depth: int, layers: int
) -> list[tuple[int, int]]:
    """Block j runs the patched rows that joined by j, then the history rows if still needed."""
    n = len(entry_sorted)
    return [
        (n - int((entry_sorted <= j).sum()), n + (history if j < history_depth else 0))
        for j in range(layers)
    ]


class Lockstep:
    """Greedy patched generation of many specs over one prompt batch (see module docstring)."""

    def __init__(
        self,
        receiver: Runner,
        donor: Runner,
        prompts: Prompts,
        specs: Sequence[PatchSpec],
        max_new_tokens: int,
        eos: Tensor,
        pad: int,
    ) -> None:
        self.receiver, self.donor, self.prompts, self.specs = receiver, donor, prompts, list(specs)
        self.eos, self.pad, self.max_new = eos, pad, max_new_tokens
        self.device = dev = receiver.device
        self.B, self.P = B, P = prompts.ids.shape
        self.R = R = len(self.specs) * B
        self.layers = receiver.config.num_hidden_layers
        self.keys = sorted({k for s in self.specs for k in keys_of(s)})
        row = torch.arange(R, device=dev)
        self.row_prompt = row % B
        spec_of = row // B
        self.entry = torch.tensor([min(s.layers) for s in self.specs], device=dev)[spec_of]
        self.depth = torch.tensor([max(s.layers) for s in self.specs], device=dev)[spec_of]
        self.is_all = torch.tensor([s.positions == "all" for s in self.specs], device=dev)[spec_of]
        self.order = _layout(self.entry, row)  # cache row i holds patched row order[i]
        self.cache_row = torch.empty_like(self.order)
        self.cache_row[self.order] = row
        newest = row[~self.is_all]
        self.newest_rows, self.newest_cache = newest, self.cache_row[newest]
        self.history_depth = self.layers if len(newest) else int(self.entry.max())
        self.group_of_row, self.group_prompt = self.row_prompt.clone(), torch.arange(B, device=dev)
        self.key_valid = torch.ones(B, P + max_new_tokens - 1, dtype=torch.bool, device=dev)
        self.key_valid[:, :P] = prompts.mask
        self.done = torch.zeros(R, dtype=torch.bool, device=dev)
        self.donor_layers = int(self.depth.max()) + 1

    # -- row bookkeeping ---------------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute donor order, windows and plans after the groups changed."""
        U, R = len(self.group_prompt), self.R
        depth = torch.zeros(U, dtype=torch.long, device=self.device)
        depth.scatter_reduce_(0, self.group_of_row, self.depth, "amax", include_self=False)
        self.d_order = torch.sort(-depth, stable=True).indices  # donor batch: deepest first
        self.d_pos = torch.empty_like(self.d_order)
        self.d_pos[self.d_order] = torch.arange(U, device=self.device)
        self.d_plan = RowPlan((0, U), [(0, int((depth >= j).sum())) for j in range(self.layers)])
        windows = _windows(self.entry[self.order], U, self.history_depth, self.layers)
        source = torch.cat(
            [R + self.group_of_row[self.order], R + torch.arange(U, device=self.device)]
        )
        self.r_plan = RowPlan((R, R + U), windows, source)
        self.r_cache.starts = [lo for lo, _ in windows]
        rows = torch.arange(R, device=self.device)
        self.plans = build_plans(
            [
                (
                    s,
                    rows[i * self.B : (i + 1) * self.B],
                    self.cache_row[i * self.B : (i + 1) * self.B],
                    self.d_pos[self.group_of_row[i * self.B : (i + 1) * self.B]],
                )
                for i, s in enumerate(self.specs)
            ],
            self.receiver.config,
            self.r_cache.starts,
        )

    def _regroup(self, tokens: Tensor) -> None:
        """Split groups whose rows picked different tokens (histories diverged).

        A group keeps its index for one of its tokens; each other token opens a new
        group at the end, whose cache rows start as copies of the parent's.
        """
        U = len(self.group_prompt)
        if U == self.R:  # one row per group: nothing can split
            self.group_token = torch.empty_like(tokens)
            self.group_token[self.group_of_row] = tokens
            return
        vocab = self.receiver.config.vocab_size
        found, inverse = torch.unique(self.group_of_row * vocab + tokens, return_inverse=True)
        if len(found) == U:  # sorted by group, one token each: indices unchanged
            self.group_token = found % vocab
            return
        parent = found // vocab
        opens = torch.zeros_like(parent, dtype=torch.bool)
        opens[1:] = parent[1:] == parent[:-1]
        new_id = torch.where(opens, U + opens.cumsum(0) - 1, parent)
        parents = parent[opens]
        self.group_of_row = new_id[inverse]
        self.group_token = torch.empty_like(found)
        self.group_token[new_id] = found % vocab
        self.group_prompt = torch.cat([self.group_prompt, self.group_prompt[parents]])
        self.r_cache.copy_rows(self.R + parents, self.R + U)
        old_pos = torch.cat([self.d_pos, self.d_pos[parents]])  # a new group starts as its parent
        self._refresh()
        self.d_cache.select_rows(old_pos[self.d_order].to(self.donor.device), self.R)

    # -- passes ----------------------------------------------------------------------
    def _caches(self, receiver_rows: int) -> None:
        length = self.P + self.max_new - 1
        self.d_cache = SlotCache(
            self.donor.config,
            self.donor_layers,
            self.R,
            length,
            self.donor.dtype,
            self.donor.device,
        )
        self.r_cache = SlotCache(
            self.receiver.config,
            self.layers,
            receiver_rows,
            length,
            self.receiver.dtype,
            self.device,
        )

    def _prefill(self) -> None:
        """All prompt tokens but the last: the donor and the history once per prompt, and
        the "all" rows (patched) from their first layer on."""
        B, R, n, dev = self.B, self.R, self.P - 1, self.device
        rows = torch.arange(R, device=dev)
        all_rows = _layout(self.entry, rows[self.is_all])
        A = len(all_rows)
        self._caches(A + B)
        ids, pos, valid = (
            self.prompts.ids[:, :n],
            self.prompts.positions[:, :n],
            self.prompts.mask[:, :n],
        )
        mask = causal_mask(valid)
        acts: dict[Key, Tensor] = {}
        d_plan = RowPlan((0, B), [(0, B)] * self.layers)
        decoder_forward(
            self.donor,
            *(t.to(self.donor.device) for t in (ids, pos, mask)),
            self.d_cache,
            capturing(self.donor.lm, self.donor.table, self.keys, acts, stop=True),
            row_windows(self.donor.lm, self.donor.table, d_plan),
        )
        windows = _windows(self.entry[all_rows], B, self.history_depth, self.layers)
        source = torch.cat([A + self.row_prompt[all_rows], A + torch.arange(B, device=dev)])
        self.r_cache.starts = [lo for lo, _ in windows]
        pre_row = torch.full((R,), -1, device=dev)
        pre_row[all_rows] = torch.arange(A, device=dev)
        plans = build_plans(
            [
                (s, rows[i * B : (i + 1) * B], pre_row[i * B : (i + 1) * B], self.row_prompt[:B])
                for i, s in enumerate(self.specs)
                if s.positions == "all"
            ],
            self.receiver.config,
            self.r_cache.starts,
        )
        decoder_forward(
            self.receiver,
            ids,
            pos,
            mask,
            self.r_cache,
            patching(self.receiver.lm, self.receiver.table, plans, patch_edit(plans, acts)),
            row_windows(
                self.receiver.lm, self.receiver.table, RowPlan((A, A + B), windows, source)
            ),
        )
        # Decode layout: an "all" row keeps its rows; a "newest" row and a history row
        # start as the prompt's unpatched history.
        start = torch.where(self.is_all, pre_row, A + self.row_prompt)[self.order]
        self.r_cache.select_rows(torch.cat([start, A + torch.arange(B, device=dev)]), 2 * R)

    def _step(self, k: int) -> Tensor:
        """Feed token k (the prompt's last at k=0) to every group; return each row's next token."""
        slot, R = self.P - 1 + k, self.R
        acts: dict[Key, Tensor] = {}
        g_pos = (self.prompts.last_position[self.group_prompt] + k)[:, None]
        g_mask = self.key_valid[self.group_prompt, : slot + 1][:, None, None]
        o, dev = self.d_order, self.donor.device
        decoder_forward(
            self.donor,
            self.group_token[o, None].to(dev),
            g_pos[o].to(dev),
            g_mask[o].to(dev),
            self.d_cache,
            capturing(self.donor.lm, self.donor.table, self.keys, acts, stop=True),
            row_windows(self.donor.lm, self.donor.table, self.d_plan),
        )
        hidden = decoder_forward(
            self.receiver,
            self.group_token[:, None],
            g_pos,
            g_mask,
            self.r_cache,
            patching(
                self.receiver.lm, self.receiver.table, self.plans, patch_edit(self.plans, acts)
            ),
            row_windows(self.receiver.lm, self.receiver.table, self.r_plan),
        )
        if len(self.newest_rows):
            self.r_cache.copy_slot(
                self.newest_cache, R + self.group_of_row[self.newest_rows], 0, slot
            )
        return self.receiver.logits(hidden[:R, -1]).argmax(dim=-1)[self.cache_row]

    def run(self, progress: bool = False) -> list[Tensor]:
        """Generate; return one [B, P + new] tensor per spec, each cut where all its rows ended."""
        B = self.B
        if self.P > 1:
            self._prefill()
        else:
            self._caches(2 * self.R)
        self._refresh()
        self.group_token = self.prompts.ids[:, -1]
        steps: list[Tensor] = []
        lengths = [self.max_new] * len(self.specs)
        from tqdm.auto import tqdm

        for k in tqdm(range(self.max_new), disable=not progress, desc="patched decode"):
            tokens = torch.where(self.done, self.pad, self._step(k))
            steps.append(tokens)
            self.done |= torch.isin(tokens, self.eos)
            ended = self.done.view(-1, B).all(dim=1).tolist()
            for s, over in enumerate(ended):
                if over and lengths[s] == self.max_new:
                    lengths[s] = k + 1
            if all(ended):
                break
            self._regroup(tokens)
        new = torch.stack(steps, dim=1)
        return [
            torch.cat([self.prompts.ids, new[s * B : (s + 1) * B, : lengths[s]]], dim=1)
            for s in range(len(self.specs))
        ]
