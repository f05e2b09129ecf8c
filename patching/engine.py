"""KV-cached lockstep generation: the donor and the receiver advance one token together.

Patched row r = s*B*N + b*N + n runs spec s on prompt b, sample n (N samples per prompt;
greedy decoding has N = 1). The donor is unpatched, so its
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

The next token is chosen by `sampling.choose_tokens` from the receiver's patched logits: the
argmax, or a draw from the row's own random stream; the donor reads the tokens the patched
receiver chose, sampled or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from .architectures import BLOCK_OUTPUT_SITE
from .batch import Prompts, causal_mask, newest_query_mask
from .cache import SlotCache
from .decoding import DecodingConfig
from .hooks import Key, capturing, patching
from .layout import Layout, fed_by_donor
from .models import Runner
from .plans import MaskFor, Plan, build_plans, decoder_forward, keys_of, patch_edit
from .rows import RowPlan, row_windows
from .sampling import choose_tokens
from .spec import PatchSpec


def _site_plans_of(spec: PatchSpec) -> PatchSpec | None:
    """The part of a spec that site hooks apply: a block output's first layer is the join."""
    if not fed_by_donor(spec):
        return spec
    return replace(spec, layers=spec.layers[1:]) if len(spec.layers) > 1 else None


class Lockstep:
    """Patched generation of many specs over one prompt batch (see module docstring).

    Letters in shape comments: B prompts, N samples per prompt, P prompt length,
    R = specs x B x N patched rows, G token-history groups (G <= R), S cache slots
    (P + max_new_tokens - 1).
    """

    def __init__(
        self,
        receiver: Runner,
        donor: Runner,
        prompts: Prompts,
        specs: Sequence[PatchSpec],
        decoding: DecodingConfig,
        streams: Tensor | None,
    ) -> None:
        """`decoding` is resolved (eos and pad are set); `streams` (B x N, max_new_tokens)
        holds each (prompt, sample)'s uniforms when sampling."""
        self.receiver, self.donor, self.prompts, self.specs = receiver, donor, prompts, list(specs)
        self.decoding, self.max_new = decoding, decoding.max_new_tokens
        self.device = dev = receiver.device
        self.eos = torch.tensor(decoding.eos_token_id, dtype=torch.long, device=dev)
        self.pad = decoding.pad_token_id
        self.batch, self.prompt_len = prompts.ids.shape
        self.rows_per_spec = self.batch * decoding.num_return_sequences
        self.n_rows = len(self.specs) * self.rows_per_spec
        self.layers = receiver.config.num_hidden_layers
        self.keys = sorted({k for s in self.specs for k in keys_of(s)})
        rows = torch.arange(self.n_rows, device=dev)  # (R,)
        self.spec_of = rows // self.rows_per_spec
        self.stream_of_row = rows % self.rows_per_spec  # (R,) b * N + n
        self.prompt_of_row = self.stream_of_row // decoding.num_return_sequences
        self.streams = None if streams is None else streams.to(dev)[self.stream_of_row]  # (R, new)
        deepest = torch.tensor([max(s.layers) for s in self.specs], device=dev)
        self.deepest_layer_of_row = deepest[self.spec_of]  # (R,)
        is_all = torch.tensor([s.positions == "all" for s in self.specs], device=dev)
        self.all_rows, self.newest_rows = rows[is_all[self.spec_of]], rows[~is_all[self.spec_of]]
        history_fed = [
            min(s.layers) for s in self.specs if s.positions == "all" and not fed_by_donor(s)
        ]
        # History rows run blocks < history_depth: all of them while "newest" rows read their
        # K/V, else only up to the deepest block where an "all" row joins from its history.
        self.history_depth = (
            self.layers if len(self.newest_rows) else max(history_fed, default=0)
        )
        self.layout = Layout.build(rows, self.specs, self.spec_of, self.layers, self.history_depth)
        self.cache_row_of = torch.empty_like(rows)  # (R,) receiver cache row of patched row r
        self.cache_row_of[self.layout.rows] = rows
        self.newest_cache_rows = self.cache_row_of[self.newest_rows]
        self.group_of_row = self.prompt_of_row.clone()  # (R,) every row starts in its prompt's
        self.prompt_of_group = torch.arange(self.batch, device=dev)  # (G,)
        slots = self.prompt_len + self.max_new - 1
        self.key_valid = torch.ones(self.batch, slots, dtype=torch.bool, device=dev)  # (B, S)
        self.key_valid[:, : self.prompt_len] = prompts.mask
        self.done = torch.zeros(self.n_rows, dtype=torch.bool, device=dev)  # (R,)
        self.donor_acts: dict[Key, Tensor] = {}  # the donor's captures of the current pass

    # -- plans -----------------------------------------------------------------------
    def _receiver_plan(
        self, layout: Layout, cache_row_of: Tensor, input_row: Tensor, inputs: int,
        donor_row: Tensor,
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
                first_incoming = plan.incoming(j)[0]
                joins[j] = (donor_row[layout.rows[fed]], n + input_row[hist] - first_incoming)

        def join(j: int, hidden: Tensor) -> Tensor:
            fed, hist = joins[j]
            donor_out = self.donor_acts.get((BLOCK_OUTPUT_SITE, j - 1))
            parts = [donor_out[fed].to(hidden)] if len(fed) else []
            return torch.cat([*parts, hidden[hist]]) if len(hist) else parts[0]

        parts = []
        for i, spec in enumerate(self.specs):
            rows = layout.rows[self.spec_of[layout.rows] == i].sort().values
            if (sited := _site_plans_of(spec)) is not None and len(rows):
                parts.append((sited, cache_row_of[rows], donor_row[rows]))
        plan.join = join
        return plan, build_plans(parts, self.receiver, starts), starts

    def _refresh(self) -> None:
        """Recompute the donor order and the receiver plans after the groups changed."""
        groups = len(self.prompt_of_group)
        depth = torch.zeros(groups, dtype=torch.long, device=self.device)  # (G,)
        depth.scatter_reduce_(
            0, self.group_of_row, self.deepest_layer_of_row, "amax", include_self=False
        )
        self.donor_order = torch.sort(-depth, stable=True).indices  # (G,) deepest group first
        self.donor_row_of_group = torch.empty_like(self.donor_order)  # (G,)
        self.donor_row_of_group[self.donor_order] = torch.arange(groups, device=self.device)
        kept = [(0, int((depth >= j).sum())) for j in range(self.layers)]
        self.donor_rows = RowPlan((0, groups), kept + kept[-1:])
        # Per-group positions and key masks, in receiver and donor order (sliced each step).
        self.group_position = self.prompts.last_position[self.prompt_of_group][:, None]  # (G, 1)
        self.group_key_valid = self.key_valid[self.prompt_of_group]  # (G, S)
        self.donor_position = self.group_position[self.donor_order]
        self.donor_key_valid = self.group_key_valid[self.donor_order]
        self.newest_history_rows = self.n_rows + self.group_of_row[self.newest_rows]
        self.receiver_rows, self.patch_plans, self.receiver_cache.starts = self._receiver_plan(
            self.layout,
            self.cache_row_of,
            self.group_of_row[self.layout.rows],
            groups,
            self.donor_row_of_group[self.group_of_row],
        )

    def _regroup(self, tokens: Tensor) -> None:
        """Split groups whose rows picked different tokens (histories diverged).

        A group keeps its index for one of its tokens; each other token opens a new
        group at the end, whose cache rows start as copies of the parent's.
        """
        groups = len(self.prompt_of_group)
        if groups == self.n_rows:  # one row per group: nothing can split
            self.group_token = torch.empty_like(tokens)
            self.group_token[self.group_of_row] = tokens
            return
        vocab = self.receiver.config.vocab_size
        found, inverse = torch.unique(self.group_of_row * vocab + tokens, return_inverse=True)
        if len(found) == groups:  # sorted by group, one token each: indices unchanged
            self.group_token = found % vocab
            return
        parent = found // vocab
        opens = torch.zeros_like(parent, dtype=torch.bool)
        opens[1:] = parent[1:] == parent[:-1]
        new_id = torch.where(opens, groups + opens.cumsum(0) - 1, parent)
        parents = parent[opens]
        self.group_of_row = new_id[inverse]
        self.group_token = torch.empty_like(found)
        self.group_token[new_id] = found % vocab
        self.prompt_of_group = torch.cat([self.prompt_of_group, self.prompt_of_group[parents]])
        self.receiver_cache.copy_rows(self.n_rows + parents, self.n_rows + groups)
        # A new group's donor cache row starts as its parent's.
        old_donor_row = torch.cat([self.donor_row_of_group, self.donor_row_of_group[parents]])
        self._refresh()
        self.donor_cache.select_rows(
            old_donor_row[self.donor_order].to(self.donor.device), self.n_rows
        )

    # -- passes ----------------------------------------------------------------------
    def _caches(self, receiver_rows: int) -> None:
        slots, d, r = self.prompt_len + self.max_new - 1, self.donor, self.receiver
        self.donor_cache = SlotCache(
            d.config, d.head_dim, int(self.deepest_layer_of_row.max()) + 1, self.n_rows, slots,
            d.dtype, d.device,
        )
        self.receiver_cache = SlotCache(
            r.config, r.head_dim, self.layers, receiver_rows, slots, r.dtype, self.device
        )

    def _donor_pass(self, ids: Tensor, positions: Tensor, mask_for: MaskFor, plan: RowPlan
                    ) -> None:
        d = self.donor
        decoder_forward(
            d,
            ids.to(d.device),
            positions.to(d.device),
            lambda window: mask_for(window).to(d.device),
            self.donor_cache,
            capturing(d.lm, d.arch, self.keys, self.donor_acts, stop=True),
            row_windows(d.lm, d.arch, plan),
        )

    def _receiver_pass(
        self, ids: Tensor, positions: Tensor, mask_for: MaskFor, plan: RowPlan,
        plans: dict[Key, Plan],
    ) -> Tensor:
        r = self.receiver
        return decoder_forward(
            r,
            ids,
            positions,
            mask_for,
            self.receiver_cache,
            patching(r.lm, r.arch, plans, patch_edit(plans, self.donor_acts)),
            row_windows(r.lm, r.arch, plan),
        )

    def _prefill(self) -> None:
        """All prompt tokens but the last: the donor and the history once per prompt, and the
        "all" rows (patched) from the block they join at."""
        B, dev = self.batch, self.device
        n, samples = self.prompt_len - 1, self.decoding.num_return_sequences
        # The samples of one (spec, prompt) share their history until they first differ: only
        # sample 0 of an "all" row is prefilled, and the others start as copies of it.
        first = self.all_rows[self.all_rows % samples == 0]
        layout = Layout.build(first, self.specs, self.spec_of, self.layers, self.history_depth)
        n_all = len(layout.rows)
        self._caches(n_all + B)
        ids, pos = self.prompts.ids[:, :n], self.prompts.positions[:, :n]  # (B, P - 1)
        valid = self.prompts.mask[:, :n]

        def mask_for(window: int | None) -> Tensor:
            return causal_mask(valid, window=window)

        self._donor_pass(ids, pos, mask_for, RowPlan((0, B), [(0, B)] * (self.layers + 1)))
        prefill_row = torch.full((self.n_rows,), -1, device=dev)  # (R,) -1: not prefilled
        prefill_row[layout.rows] = torch.arange(n_all, device=dev)
        prefill_row[self.all_rows] = prefill_row[self.all_rows - self.all_rows % samples]
        plan, plans, self.receiver_cache.starts = self._receiver_plan(
            layout, prefill_row, self.prompt_of_row[layout.rows], B, self.prompt_of_row
        )
        self._receiver_pass(ids, pos, mask_for, plan, plans)
        # Decode layout: an "all" row keeps its rows; a "newest" row and a history row
        # start as the prompt's unpatched history.
        start = torch.where(prefill_row >= 0, prefill_row, n_all + self.prompt_of_row)
        self.receiver_cache.select_rows(
            torch.cat([start[self.layout.rows], n_all + torch.arange(B, device=dev)]),
            2 * self.n_rows,
        )

    def _step(self, k: int) -> Tensor:
        """Feed token k (the prompt's last at k=0) to every group; return each row's next token."""
        slot = self.prompt_len - 1 + k
        ids = self.group_token[:, None]  # (G, 1)
        donor_valid = self.donor_key_valid[:, : slot + 1]
        receiver_valid = self.group_key_valid[:, : slot + 1]
        self._donor_pass(
            ids[self.donor_order],
            self.donor_position + k,
            lambda window: newest_query_mask(donor_valid, window),
            self.donor_rows,
        )
        hidden = self._receiver_pass(
            ids,
            self.group_position + k,
            lambda window: newest_query_mask(receiver_valid, window),
            self.receiver_rows,
            self.patch_plans,
        )
        if len(self.newest_rows):
            self.receiver_cache.copy_slot(self.newest_cache_rows, self.newest_history_rows, slot)
        logits = self.receiver.logits(hidden[: self.n_rows, -1])[self.cache_row_of]  # (R, vocab)
        uniforms = None if self.streams is None else self.streams[:, k]
        return choose_tokens(logits, self.decoding, uniforms)

    def run(self, progress: bool = False) -> list[Tensor]:
        """Generate; return one [B x N, P + new] tensor per spec (prompt-major), each cut where
        all its rows ended."""
        per_spec = self.rows_per_spec
        if self.prompt_len > 1:
            self._prefill()
        else:
            self._caches(2 * self.n_rows)
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
                ended = self.done.view(-1, per_spec).all(dim=1).tolist()
                lengths = [
                    k + 1 if e and n == self.max_new else n
                    for e, n in zip(ended, lengths, strict=True)
                ]
            steps.append(tokens)
            if k + 1 == self.max_new or all(n <= k + 1 for n in lengths):
                break
            self._regroup(tokens)
        new = torch.stack(steps, dim=1)  # (R, steps)
        prompts = self.prompts.ids[self.prompt_of_row[:per_spec]]  # (B x N, P)
        return [
            torch.cat([prompts, new[s * per_spec : (s + 1) * per_spec, : lengths[s]]], dim=1)
            for s in range(len(self.specs))
        ]
