"""KV-cached lockstep generation: the donor and the receiver advance one token together.

Row layout of the receiver batch: spec s owns rows [s*B, (s+1)*B) (row r holds
prompt r % B); when any spec patches only the newest position, U "history" rows
follow, each the receiver's UNPATCHED run of one distinct token history.

- The donor is unpatched, so its state depends on the token history alone: it runs
  once per distinct history (a "group"), not once per spec. All rows start in their
  prompt's group (so the prompt prefill is shared by every spec); a group splits
  when its rows pick different tokens.
- positions="all": a patched row keeps its own (patched) cache; every new position
  is patched, the prefill included.
- positions="newest": a patched row attends to its group's unpatched history; after
  each step its newest K/V slot is overwritten with the history row's (batch
  doubling). The prompt's last token is the first patched position, so the prefill
  (all but that token) is the unpatched history itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .batch import Prompts, causal_mask
from .cache import Rows, SlotCache
from .hooks import Key, StopForward, capturing, patching
from .models import Runner
from .spec import PatchSpec, head_dim


def keys_of(spec: PatchSpec) -> list[Key]:
    return [(spec.site, layer) for layer in spec.layers]


def compact(index: Tensor) -> Rows:
    """A slice when `index` is a contiguous ascending range (a view instead of a gather)."""
    values = index.tolist()
    if values and values == list(range(values[0], values[0] + len(values))):
        return slice(values[0], values[0] + len(values))
    return index


@dataclass
class Plan:
    """Where one (site, layer) is patched: receiver rows, their donor rows, head columns."""

    rows: Rows
    row_index: Tensor  # rows as a tensor, to look up donor rows after a regroup
    src: Rows
    cols: Tensor | None  # [rows, 1, width] bool for site "head"; None = the whole site


def build_plans(specs: Sequence[tuple[PatchSpec, Tensor, Tensor]], config, device: torch.device) -> dict[Key, Plan]:
    """Plans from (spec, receiver rows, donor rows) triples; specs may share a (site, layer)."""
    found: dict[Key, list[tuple[Tensor, Tensor, Tensor | None]]] = {}
    hd = head_dim(config)
    for spec, rows, src in specs:
        cols = None
        if spec.site == "head":
            cols = torch.zeros(config.num_attention_heads, hd, dtype=torch.bool, device=device)
            cols[list(spec.heads)] = True
            cols = cols.reshape(1, 1, -1).expand(len(rows), 1, -1)
        for key in keys_of(spec):
            found.setdefault(key, []).append((rows, src, cols))
    plans = {}
    for key, parts in found.items():
        rows = torch.cat([p[0] for p in parts])
        cols = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        plans[key] = Plan(compact(rows), rows, compact(torch.cat([p[1] for p in parts])), cols)
    return plans


def patch_edit(plans: dict[Key, Plan], donor_acts: dict[Key, Tensor]):
    """The receiver hook: copy donor activations into the planned rows (and heads)."""

    def edit(key: Key, act: Tensor) -> Tensor:
        plan = plans[key]
        new = donor_acts[key][plan.src].to(device=act.device, dtype=act.dtype)
        if plan.cols is not None:
            new = torch.where(plan.cols, new, act[plan.rows])
        act[plan.rows] = new
        return act

    return edit


def decoder_forward(runner: Runner, ids: Tensor, positions: Tensor, mask: Tensor, cache, hooks) -> Tensor | None:
    """One decoder pass (no lm_head) under `hooks`; None if a capture hook stopped it early."""
    with runner.context(), hooks:
        try:
            out = runner.decoder(
                input_ids=ids,
                position_ids=positions,
                attention_mask={"full_attention": mask},
                past_key_values=cache,
                use_cache=cache is not None,
            )
        except StopForward:
            out = None
    if cache is not None:
        cache.advance(ids.shape[1])
    return None if out is None else out.last_hidden_state


class Lockstep:
    """Greedy patched generation of many specs over one prompt batch (see module docstring)."""

    def __init__(self, receiver: Runner, donor: Runner, prompts: Prompts, specs: Sequence[PatchSpec],
                 max_new_tokens: int, eos: Tensor, pad: int) -> None:
        self.receiver, self.donor, self.prompts, self.specs = receiver, donor, prompts, list(specs)
        self.eos, self.pad, self.max_new = eos, pad, max_new_tokens
        self.device = receiver.device
        B, P = prompts.ids.shape
        self.B, self.P, self.R = B, P, len(self.specs) * B
        self.keys = sorted({k for s in self.specs for k in keys_of(s)})
        self.donor_layers = max(layer for _, layer in self.keys) + 1
        self.newest = [i for i, s in enumerate(self.specs) if s.positions == "newest"]
        self.history = B if self.newest else 0  # unpatched history rows, one per group
        row = torch.arange(self.R, device=self.device)
        self.row_prompt = row % B
        self.group_of_row = self.row_prompt.clone()  # donor row ("group") of each receiver row
        self.group_prompt = torch.arange(B, device=self.device)
        self.plans = build_plans(
            [(s, row[i * B:(i + 1) * B], self.group_prompt) for i, s in enumerate(self.specs)],
            receiver.config, self.device)
        newest_rows = torch.cat([row[i * B:(i + 1) * B] for i in self.newest]) if self.newest else row[:0]
        self.newest_rows, self.newest_row_index = compact(newest_rows), newest_rows
        first = [min(self.specs[i].layers) + 1 for i in self.newest]
        self.fix_from = min(first) if first else receiver.config.num_hidden_layers
        self.key_valid = torch.ones(B, P + max_new_tokens - 1, dtype=torch.bool, device=self.device)
        self.key_valid[:, :P] = prompts.mask
        self.done = torch.zeros(self.R, dtype=torch.bool, device=self.device)

    def _caches(self, receiver_rows: int) -> None:
        length = self.P + self.max_new - 1
        dtype = lambda r: r.lm.get_input_embeddings().weight.dtype  # noqa: E731
        self.d_cache = SlotCache(self.donor.config, self.donor_layers, self.B, length,
                                 dtype(self.donor), self.donor.device)
        self.r_cache = SlotCache(self.receiver.config, self.receiver.config.num_hidden_layers, receiver_rows,
                                 length, dtype(self.receiver), self.device)

    def _prefill(self) -> None:
        """Every token but the prompt's last: donor once per prompt; receiver for "all" specs
        (patched) and once unpatched (the history "newest" specs attend to)."""
        B, n = self.B, self.P - 1
        spans = [i for i, s in enumerate(self.specs) if s.positions == "all"]
        pre_rows = len(spans) * B + self.history
        self._caches(pre_rows)
        ids, pos = self.prompts.ids[:, :n], self.prompts.positions[:, :n]
        mask = causal_mask(self.prompts.mask[:, :n])
        acts: dict[Key, Tensor] = {}
        d_ids, d_pos, d_mask = (t.to(self.donor.device) for t in (ids, pos, mask))
        decoder_forward(self.donor, d_ids, d_pos, d_mask, self.d_cache,
                        capturing(self.donor.lm, self.donor.table, self.keys, acts, stop=True))
        prompt = torch.arange(B, device=self.device)
        pre = torch.arange(pre_rows, device=self.device)
        plans = build_plans([(self.specs[i], pre[j * B:(j + 1) * B], prompt) for j, i in enumerate(spans)],
                            self.receiver.config, self.device)
        idx = torch.cat([prompt] * (pre_rows // B))
        decoder_forward(self.receiver, ids[idx], pos[idx], mask[idx], self.r_cache,
                        patching(self.receiver.lm, self.receiver.table, plans, patch_edit(plans, acts)))
        # Decode layout: an "all" row keeps its prefill row; a "newest" row and a history
        # row start from the unpatched prefill row of their prompt.
        rank = {i: j for j, i in enumerate(spans)}
        layout = [pre[rank[i] * B:(rank[i] + 1) * B] if i in rank else len(spans) * B + prompt
                  for i in range(len(self.specs))]
        if self.history:
            layout.append(len(spans) * B + prompt)
        self.r_cache.select_rows(torch.cat(layout))

    def _regroup(self, tokens: Tensor) -> None:
        """Split donor groups whose rows picked different tokens (histories diverged)."""
        U = len(self.group_prompt)
        if U == self.R:  # every group holds one row: nothing can split
            self.group_token = torch.empty_like(tokens)
            self.group_token[self.group_of_row] = tokens
            return
        vocab = self.receiver.config.vocab_size
        found, inverse = torch.unique(self.group_of_row * vocab + tokens, return_inverse=True)
        self.group_of_row, self.group_token = inverse, found % vocab
        if len(found) == U:
            return
        src = found // vocab
        self.group_prompt = self.group_prompt[src]
        self.d_cache.select_rows(src.to(self.donor.device))
        if self.history:
            self.r_cache.select_rows(torch.cat([torch.arange(self.R, device=self.device), self.R + src]))
        for plan in self.plans.values():
            plan.src = compact(self.group_of_row[plan.row_index])

    def _step(self, k: int) -> Tensor:
        """Feed token k (the prompt's last token at k=0) to every row; return the next tokens."""
        slot = self.P - 1 + k
        acts: dict[Key, Tensor] = {}
        g_pos = self.prompts.last_position[self.group_prompt] + k
        g_valid = self.key_valid[self.group_prompt, : slot + 1]
        dev = self.donor.device
        decoder_forward(self.donor, self.group_token[:, None].to(dev), g_pos[:, None].to(dev),
                        g_valid[:, None, None].to(dev), self.d_cache,
                        capturing(self.donor.lm, self.donor.table, self.keys, acts, stop=True))
        ids, pos, valid = self.row_token, self.prompts.last_position[self.row_prompt] + k, \
            self.key_valid[self.row_prompt, : slot + 1]
        if self.history:
            ids, pos, valid = torch.cat([ids, self.group_token]), torch.cat([pos, g_pos]), torch.cat([valid, g_valid])
        hidden = decoder_forward(self.receiver, ids[:, None], pos[:, None], valid[:, None, None], self.r_cache,
                                 patching(self.receiver.lm, self.receiver.table, self.plans,
                                          patch_edit(self.plans, acts)))
        if self.history and self.fix_from < self.receiver.config.num_hidden_layers:
            src = compact(self.R + self.group_of_row[self.newest_row_index])
            self.r_cache.copy_slot(self.newest_rows, src, self.fix_from, slot)
        return self.receiver.logits(hidden[: self.R, -1]).argmax(dim=-1)

    def run(self, progress: bool = False) -> list[Tensor]:
        """Generate; return one [B, P + new] tensor per spec, each cut where all its rows ended."""
        B, P = self.B, self.P
        if P > 1:
            self._prefill()
        else:
            self._caches(self.R + self.history)
        self.row_token = self.prompts.ids[self.row_prompt, -1]
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
            self.row_token = tokens
            self._regroup(tokens)
        new = torch.stack(steps, dim=1) if steps else self.prompts.ids.new_zeros(self.R, 0)
        return [torch.cat([self.prompts.ids, new[s * B:(s + 1) * B, : lengths[s]]], dim=1)
                for s in range(len(self.specs))]

