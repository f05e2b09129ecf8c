"""KV-cached lockstep generation: the donor and the receiver advance one token together.

Patched row r = s*B + b runs spec s on prompt b. The donor is unpatched, so its
state depends on the token history alone: it runs once per distinct history (a
"group", deepest needed layer first, rows leaving after theirs); every row starts
in its prompt's group, so the prompt prefill is shared by all specs, and a group
splits when its rows pick different tokens. The receiver also runs each group
once UNPATCHED (its "history" row), and each patched row joins the batch at its
first patch (layout.py, rows.py).

- positions="all": a patched row keeps its own patched K/V from the block it joins
  at on, the prompt prefill included.
- positions="newest": a patched row attends to its history row's K/V: after each
  step its newest slot is overwritten with the history row's (batch doubling,
  minus the blocks before the patch). The prompt's last token is the first patched
  position, so the prefill (all but that token) is the history alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from .batch import Prompts, causal_mask
from .cache import SlotCache
from .hooks import Key, capturing, patching
from .layout import Layout
from .models import Runner
from .plans import Plan, build_plans, decoder_forward, keys_of, patch_edit
from .rows import RowPlan, row_windows
from .spec import PatchSpec


def _site_plans_of(spec: PatchSpec) -> PatchSpec | None:
    """The part of a spec that site hooks apply: resid at the first layer is the join."""
    if spec.site != "resid":
        return spec
    return replace(spec, layers=spec.layers[1:]) if len(spec.layers) > 1 else None


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
        self.layers = N = receiver.config.num_hidden_layers
        self.keys = sorted({k for s in self.specs for k in keys_of(s)})
        rows = torch.arange(R, device=dev)
        self.row_prompt, self.spec_of = rows % B, rows // B
        self.depth = torch.tensor([max(s.layers) for s in self.specs], device=dev)[self.spec_of]
        is_all = torch.tensor([s.positions == "all" for s in self.specs], device=dev)
        self.all_rows, self.newest_rows = rows[is_all[self.spec_of]], rows[~is_all[self.spec_of]]
        history_fed = [
            min(s.layers) for s in self.specs if s.positions == "all" and s.site != "resid"
        ]
        self.history_depth = N if len(self.newest_rows) else max(history_fed, default=0)
        self.layout = Layout.build(rows, self.specs, self.spec_of, N, self.history_depth)
        self.cache_row = torch.empty_like(rows)
        self.cache_row[self.layout.rows] = rows
        self.newest_cache = self.cache_row[self.newest_rows]
        self.group_of_row, self.group_prompt = self.row_prompt.clone(), torch.arange(B, device=dev)
        self.key_valid = torch.ones(B, P + max_new_tokens - 1, dtype=torch.bool, device=dev)
        self.key_valid[:, :P] = prompts.mask
        self.done = torch.zeros(R, dtype=torch.bool, device=dev)
        self.acts: dict[Key, Tensor] = {}  # the donor's captures of the current pass

    # -- plans -----------------------------------------------------------------------
    def _receiver_plan(
        self, layout: Layout, cache_row: Tensor, input_row: Tensor, inputs: int, donor_row: Tensor
    ) -> tuple[RowPlan, dict[Key, Plan], list[int]]:
        """Row windows, joins and patch plans of one receiver pass.

        input_row[i]: the history (input) row of patched cache row i; donor_row[r]: the
        donor batch row patched row r reads.
        """
        windows, n = layout.windows(inputs), len(layout.rows)
        starts = [w[0] if w else 0 for w in windows[:-1]]
        source = torch.cat([input_row, torch.arange(inputs, device=self.device)])
        plan = RowPlan((n, n + inputs), windows, source)
        joins = {}
        for j in range(self.layers + 1):
            fed, hist = layout.joining(j)
            if len(fed) or len(hist):
                a = plan.incoming(j)[0]
                joins[j] = (donor_row[layout.rows[fed]], n + input_row[hist] - a)

        def join(j: int, hidden: Tensor) -> Tensor:
            fed, hist = joins[j]
            parts = [self.acts[("resid", j - 1)][fed].to(hidden)] if len(fed) else []
            return torch.cat([*parts, hidden[hist]]) if len(hist) else parts[0]

        parts = []
        for i, spec in enumerate(self.specs):
            rows = layout.rows[self.spec_of[layout.rows] == i].sort().values
            if (sited := _site_plans_of(spec)) is not None and len(rows):
                parts.append((sited, cache_row[rows], donor_row[rows]))
        plan.join = join
        return plan, build_plans(parts, self.receiver.config, starts), starts

    def _refresh(self) -> None:
        """Recompute the donor order and the receiver plans after the groups changed."""
        U = len(self.group_prompt)
        depth = torch.zeros(U, dtype=torch.long, device=self.device)
        depth.scatter_reduce_(0, self.group_of_row, self.depth, "amax", include_self=False)
        self.d_order = torch.sort(-depth, stable=True).indices  # donor batch: deepest first
        self.d_pos = torch.empty_like(self.d_order)
        self.d_pos[self.d_order] = torch.arange(U, device=self.device)
        kept = [(0, int((depth >= j).sum())) for j in range(self.layers)]
        self.d_plan = RowPlan((0, U), kept + kept[-1:])
        # Per-group positions and key masks, in receiver and donor order (sliced each step).
        self.g_pos0 = self.prompts.last_position[self.group_prompt][:, None]
        self.g_valid = self.key_valid[self.group_prompt][:, None, None]
        self.d_pos0, self.d_valid = self.g_pos0[self.d_order], self.g_valid[self.d_order]
        self.newest_history = self.R + self.group_of_row[self.newest_rows]
        self.r_plan, self.plans, self.r_cache.starts = self._receiver_plan(
            self.layout,
            self.cache_row,
            self.group_of_row[self.layout.rows],
            U,
            self.d_pos[self.group_of_row],
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
        length, d, r = self.P + self.max_new - 1, self.donor, self.receiver
        self.d_cache = SlotCache(
            d.config, int(self.depth.max()) + 1, self.R, length, d.dtype, d.device
        )
        self.r_cache = SlotCache(r.config, self.layers, receiver_rows, length, r.dtype, self.device)

    def _donor_pass(self, ids: Tensor, positions: Tensor, mask: Tensor, plan: RowPlan) -> None:
        d = self.donor
        decoder_forward(
            d,
            ids.to(d.device),
            positions.to(d.device),
            mask.to(d.device),
            self.d_cache,
            capturing(d.lm, d.table, self.keys, self.acts, stop=True),
            row_windows(d.lm, d.table, plan),
        )

    def _receiver_pass(
        self, ids: Tensor, positions: Tensor, mask: Tensor, plan: RowPlan, plans: dict[Key, Plan]
    ) -> Tensor:
        r = self.receiver
        return decoder_forward(
            r,
            ids,
            positions,
            mask,
            self.r_cache,
            patching(r.lm, r.table, plans, patch_edit(plans, self.acts)),
            row_windows(r.lm, r.table, plan),
        )

    def _prefill(self) -> None:
        """All prompt tokens but the last: the donor and the history once per prompt, and the
        "all" rows (patched) from the block they join at."""
        B, R, n, dev = self.B, self.R, self.P - 1, self.device
        layout = Layout.build(
            self.all_rows, self.specs, self.spec_of, self.layers, self.history_depth
        )
        A = len(layout.rows)
        self._caches(A + B)
        ids, pos = self.prompts.ids[:, :n], self.prompts.positions[:, :n]
        mask = causal_mask(self.prompts.mask[:, :n])
        self._donor_pass(ids, pos, mask, RowPlan((0, B), [(0, B)] * (self.layers + 1)))
        pre_row = torch.full((R,), -1, device=dev)
        pre_row[layout.rows] = torch.arange(A, device=dev)
        plan, plans, self.r_cache.starts = self._receiver_plan(
            layout, pre_row, self.row_prompt[layout.rows], B, self.row_prompt
        )
        self._receiver_pass(ids, pos, mask, plan, plans)
        # Decode layout: an "all" row keeps its rows; a "newest" row and a history row
        # start as the prompt's unpatched history.
        start = torch.where(pre_row >= 0, pre_row, A + self.row_prompt)[self.layout.rows]
        self.r_cache.select_rows(torch.cat([start, A + torch.arange(B, device=dev)]), 2 * R)

    def _step(self, k: int) -> Tensor:
        """Feed token k (the prompt's last at k=0) to every group; return each row's next token."""
        slot, ids = self.P - 1 + k, self.group_token[:, None]
        d_ids = self.group_token[self.d_order, None]
        self._donor_pass(d_ids, self.d_pos0 + k, self.d_valid[..., : slot + 1], self.d_plan)
        hidden = self._receiver_pass(
            ids, self.g_pos0 + k, self.g_valid[..., : slot + 1], self.r_plan, self.plans
        )
        if len(self.newest_rows):
            self.r_cache.copy_slot(self.newest_cache, self.newest_history, slot)
        return self.receiver.logits(hidden[: self.R, -1]).argmax(dim=-1)[self.cache_row]

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
            tokens = self._step(k)
            if len(self.eos):  # rows that ended emit padding; a spec ends with its last row
                tokens = torch.where(self.done, self.pad, tokens)
                self.done |= torch.isin(tokens, self.eos)
                ended = self.done.view(-1, B).all(dim=1).tolist()
                lengths = [
                    k + 1 if e and n == self.max_new else n
                    for e, n in zip(ended, lengths, strict=True)
                ]
            steps.append(tokens)
            if k + 1 == self.max_new or all(n <= k + 1 for n in lengths):
                break
            self._regroup(tokens)
        new = torch.stack(steps, dim=1)
        return [
            torch.cat([self.prompts.ids, new[s * B : (s + 1) * B, : lengths[s]]], dim=1)
            for s in range(len(self.specs))
        ]
