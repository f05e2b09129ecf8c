"""KV-cached lockstep generation: the donor and the receiver advance one token together.

Patched row r = s*B*N + b*N + n runs spec s on prompt b, sample n (N samples per prompt;
greedy decoding has N = 1). The donor is unpatched, so its state depends on the token history
alone: it runs once per distinct history (a "group", deepest needed layer first, rows leaving
after theirs); every row starts in its prompt's group, so the prompt prefill is shared by all
specs, and a group splits when its rows pick different tokens. The receiver also runs each
group once UNPATCHED (its "history" row), and each patched row joins the batch at its first
patch (`passes`).

- `all` and `prompt[i:j]` rows keep their own keys and values from the block they join at on,
  the prompt prefill included.
- `newest` and `steps[a:b]` rows attend to their history row's keys and values: after each
  step their newest slot is overwritten with the history row's (batch doubling, minus the
  blocks before the patch). They are not in the prefill.

The donor prefills its whole prompt (the receiver all but the last token), so the donor's
values for step 0, the pass over the receiver's last prompt token, are the last ones of its
prefill; at step k >= 1 both read new token k-1. The next token is chosen by
`sampling.choose_tokens` from the receiver's patched logits; the donor reads the tokens the
patched receiver chose, sampled or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .architectures import SITES
from .batch import Prompts, causal_mask, newest_query_mask
from .cache import SlotCache
from .decoding import DecodingConfig
from .donors import DonorSource, prompt_slots
from .forward import Values, run_pass
from .models import Runner
from .passes import STREAM, EditRows, PassPlan, donor_pass, layout_order, plain_pass, receiver_pass
from .positions import Positions
from .sampling import choose_tokens
from .spec import Part, PatchSpec


def pass_key(part: Part) -> tuple[str, int]:
    """A part's site key inside a pass: a stream site is the stream entering its block."""
    stream = SITES[part.site].stream
    return (part.site, part.layer) if stream is None else (STREAM, part.layer + stream)


def donor_depth(part: Part) -> int:
    """Donor blocks to run for this part (a stream part: those below it)."""
    key = pass_key(part)
    return key[1] if key[0] == STREAM else key[1] + 1


@dataclass(frozen=True)
class SpecShape:
    """How a spec's rows take part in passes: the block they join at, whether the donor feeds
    them there, how deep the donor must run for them, and whether they keep their own keys and
    values (`all`, `prompt`) or read their history row's (`newest`, `steps`)."""

    entry: int
    fed: bool
    depth: int
    own_history: bool

    @classmethod
    def of(cls, spec: PatchSpec, donor: DonorSource) -> SpecShape:
        keys = [pass_key(p) for p in spec.parts]
        entry = min(k[1] for k in keys)
        entry_is_stream = (STREAM, entry) in keys
        rule = spec.positions
        # Fed: the entry is a stream patch that replaces every position the row runs.
        fed = (entry_is_stream and donor.alpha == 1.0 and rule.kind in ("all", "newest")
               and not (donor.prompts is not None and rule.kind == "all"))
        return cls(entry, fed, max(donor_depth(p) for p in spec.parts), rule.own_history)


@dataclass(frozen=True)
class Histories:
    """The distinct token histories ("groups") and the donor's order of them."""

    of_row: Tensor  # (R,) group of each patched row
    prompt: Tensor  # (G,) prompt of each group
    donor_order: Tensor  # (G,) groups, deepest donor need first
    donor_row: Tensor  # (G,) donor batch row of each group
    depth: Tensor  # (G,) donor blocks each donor batch row needs, descending

    @classmethod
    def build(cls, of_row: Tensor, prompt: Tensor, row_depth: Tensor) -> Histories:
        groups = len(prompt)
        depth = torch.zeros(groups, dtype=torch.long, device=prompt.device)
        depth.scatter_reduce_(0, of_row, row_depth, "amax", include_self=False)
        order = torch.sort(-depth, stable=True).indices
        row = torch.empty_like(order)
        row[order] = torch.arange(groups, device=prompt.device)
        return cls(of_row, prompt, order, row, depth[order])


@dataclass(frozen=True)
class StepInputs:
    """What each decode step of the current histories reads, computed once per regroup."""

    receiver_valid: Tensor  # (G, S) receiver key slots each group may see
    receiver_position: Tensor  # (G, 1) position id of the prompt's last token
    donor_valid: Tensor | None  # (G, S') the same, donor order, on the donor's device
    donor_position: Tensor | None  # (G, 1)
    donor_plan: PassPlan | None
    newest_history: Tensor  # history cache row of each newest/steps cache row


def prompt_masks(rule: Positions, prompts: Prompts) -> Tensor:
    """(B, P) bool: the prompt slots `rule` patches in each left-padded row."""
    B, P = prompts.ids.shape
    out = torch.zeros(B, P, dtype=torch.bool)
    for b, n in enumerate(prompts.mask.sum(dim=1).tolist()):
        for p in rule.prompt_positions(n):
            out[b, P - n + p] = True
    return out.to(prompts.ids.device)


class Lockstep:
    """Patched generation of many specs over one prompt batch (see module docstring).

    Letters in shape comments: B prompts, N samples per prompt, P prompt length, Q the donor's
    prompt length, R = specs x B x N patched rows, G token-history groups (G <= R), K scored
    tokens.
    """

    def __init__(
        self,
        receiver: Runner,
        donor: DonorSource,
        prompts: Prompts,
        specs: Sequence[PatchSpec],
        decoding: DecodingConfig,
        streams: Tensor | None,
        score_tokens: Tensor | None = None,
    ) -> None:
        """`decoding` is resolved (eos and pad are set); `streams` (B x N, max_new_tokens)
        holds each (prompt, sample)'s uniforms when sampling; `score_tokens` (K,) are the token
        ids whose log-probs each step records."""
        self.receiver, self.donor, self.prompts, self.specs = receiver, donor, prompts, list(specs)
        self.decoding, self.max_new = decoding, decoding.max_new_tokens
        self.device = dev = receiver.device
        self.eos = torch.tensor(decoding.eos_token_id, dtype=torch.long, device=dev)
        self.layers = receiver.config.num_hidden_layers
        self.batch, self.prompt_len = prompts.ids.shape
        self.samples = decoding.num_return_sequences
        self.rows_per_spec = self.batch * self.samples
        self.n_rows = len(self.specs) * self.rows_per_spec
        rows = torch.arange(self.n_rows, device=dev)  # (R,)
        self.spec_of = rows // self.rows_per_spec
        stream_of_row = rows % self.rows_per_spec  # (R,) b * N + n
        self.prompt_of_row = stream_of_row // self.samples
        self.sample_of_row = stream_of_row % self.samples
        self.streams = None if streams is None else streams.to(dev)[stream_of_row]  # (R, new)
        self.score_tokens = score_tokens
        self.shapes = shapes = [SpecShape.of(s, donor) for s in self.specs]
        per_spec = {
            name: torch.tensor([getattr(s, name) for s in shapes], device=dev)[self.spec_of]
            for name in ("entry", "fed", "depth", "own_history")
        }
        self.entry_of_row, self.fed_of_row = per_spec["entry"], per_spec["fed"]
        self.depth_of_row, self.own_of_row = per_spec["depth"], per_spec["own_history"]
        self.order = layout_order(self.entry_of_row, self.fed_of_row)  # (R,) cache row -> row
        self.cache_row_of = torch.empty_like(rows)  # (R,) receiver cache row of patched row r
        self.cache_row_of[self.order] = rows
        self.newest_cache_rows = self.cache_row_of[~self.own_of_row]
        # History rows run blocks < history_depth: all while newest/steps rows read their keys
        # and values, else up to the deepest block where a row joins from its history.
        joins_history = [s.entry for s in shapes if not s.fed]
        self.history_depth = (
            self.layers if not all(s.own_history for s in shapes) else max(joins_history,
                                                                           default=0)
        )
        self.keys = sorted({pass_key(p) for s in self.specs for p in s.parts})
        self.cols = {p: receiver.head_columns(p.site, p.heads) for s in self.specs for p in s.parts}
        self.prompt_mask = [prompt_masks(s.positions, prompts) for s in self.specs]  # (B, P)
        self.slots = self.valid = None  # (B, P): donor prompt slot of each receiver prompt slot
        if donor.prompts is not None:
            needs = any(s.positions.kind in ("all", "prompt") for s in self.specs)
            self.slots, self.valid = prompt_slots(prompts, donor.prompts, donor.position_map,
                                                  needs)
        donor_ids = prompts if donor.prompts is None else donor.prompts
        self.donor_prompts = donor_ids
        self.donor_len = donor_ids.ids.shape[1]
        slots = self.prompt_len + self.max_new - 1
        self.key_valid = torch.ones(self.batch, slots, dtype=torch.bool, device=dev)  # (B, S)
        self.key_valid[:, : self.prompt_len] = prompts.mask
        donor_slots = self.donor_len + self.max_new - 1
        self.donor_key_valid = torch.ones(self.batch, donor_slots, dtype=torch.bool,
                                          device=donor_ids.ids.device)
        self.donor_key_valid[:, : self.donor_len] = donor_ids.mask
        self.done = torch.zeros(self.n_rows, dtype=torch.bool, device=dev)  # (R,)
        self.histories = Histories.build(self.prompt_of_row.clone(),
                                         torch.arange(self.batch, device=dev), self.depth_of_row)
        self.inputs = self._step_inputs()
        self.group_token = prompts.ids[:, -1]  # (G,) the token each group reads next
        # Decode plans of the current histories, by (step 0?, the specs patched in the step).
        self.plans: dict[tuple[bool, tuple[int, ...]], PassPlan] = {}
        first = self._prefill_rows()
        self.receiver_cache = SlotCache(
            receiver.config, receiver.head_dim, self.layers, len(first) + self.batch, slots,
            receiver.dtype, receiver.layer_devices,
        )
        self.donor_cache = None
        if donor.runs:
            d = donor.runner
            self.donor_cache = SlotCache(
                d.config, d.head_dim, max(1, int(self.depth_of_row.max())),
                max(self.n_rows, self.batch),
                donor_slots, d.dtype, d.layer_devices,
            )
        self.donor_values: Values | None = None  # the donor's values for the current step
        self.logprobs: list[Tensor] = []  # (R, K) per step, when scoring tokens

    # -- plans -----------------------------------------------------------------------
    def _edits(self, cache_rows: Tensor, spec_rows: Tensor, prompt_rows: Tensor, step: int | None
               ) -> list[EditRows]:
        """The edits of one pass over patched cache rows (`spec_rows`, `prompt_rows`: their spec
        and prompt). step None: the prefill, whose queries are prompt slots 0..P-2."""
        out = []
        for i, (spec, shape) in enumerate(zip(self.specs, self.shapes, strict=True)):
            mine = spec_rows == i
            rows, prompt = cache_rows[mine], prompt_rows[mine]
            rule = spec.positions
            where = slots = None
            if step is None:
                if rule.kind == "prompt":
                    where = self.prompt_mask[i][prompt, :-1]
                if self.slots is not None:
                    valid = self.valid[prompt, :-1]
                    slots = self.slots[prompt, :-1]
                    where = valid if where is None else where & valid
            elif rule.kind == "prompt":  # a decode step reaches a prompt position at step 0 only
                patched = self.prompt_mask[i][prompt, -1] & (step == 0)
                rows, prompt = rows[patched], prompt[patched]
            elif not rule.at_step(step):
                continue
            if step == 0 and self.slots is not None:
                # Step 0 reads the donor's prefill: its last slot (the newest position), or for
                # an own-history rule the slot the receiver's last prompt position maps to.
                if rule.own_history:
                    slots, where = self.slots[prompt, -1:], self.valid[prompt, -1:]
                else:
                    slots = torch.full((len(prompt), 1), self.donor_len - 1, device=self.device)
            if not len(rows):
                continue
            for part in spec.parts:
                key = pass_key(part)
                if not (shape.fed and key == (STREAM, shape.entry)):  # fed rows have it
                    out.append(EditRows(key, rows, self.cols[part], where, slots))
        return out

    def _prefill_rows(self) -> Tensor:
        """Cache-ordered patched rows in the prefill: sample 0 of each own-history row (the
        others start as copies of it)."""
        keep = self.own_of_row[self.order] & (self.sample_of_row[self.order] == 0)
        return self.order[keep]

    def _step_inputs(self) -> StepInputs:
        h = self.histories
        donor_valid = donor_position = donor_plan = None
        if self.donor.runs:
            dev = self.donor.runner.device
            prompt = h.prompt[h.donor_order]
            donor_valid = self.donor_key_valid[prompt].to(dev)
            donor_position = self.donor_prompts.last_position[prompt][:, None].to(dev)
            donor_plan = donor_pass(h.depth, self.layers)
        return StepInputs(
            self.key_valid[h.prompt], self.prompts.last_position[h.prompt][:, None],
            donor_valid, donor_position, donor_plan,
            self.n_rows + h.of_row[self.order[self.newest_cache_rows]],
        )

    def _decode_plan(self, step: int) -> PassPlan:
        """The receiver plan of one decode step, shared by the steps that patch the same specs."""
        active = tuple(i for i, s in enumerate(self.specs)
                       if s.positions.at_step(step) or s.positions.kind == "prompt")
        key = (step == 0, active)
        if key not in self.plans:
            h, order = self.histories, self.order
            self.plans[key] = receiver_pass(
                self.entry_of_row[order], self.fed_of_row[order], h.of_row[order],
                h.donor_row[h.of_row[order]], len(h.prompt), self.history_depth, self.layers,
                self._edits(torch.arange(self.n_rows, device=self.device), self.spec_of[order],
                            self.prompt_of_row[order], step),
            )
        return self.plans[key]

    # -- passes ----------------------------------------------------------------------
    def _donor_prefill(self) -> None:
        """The donor over its whole prompts; its captures are step 0's donor values."""
        d, prompts = self.donor.runner, self.donor_prompts
        dev = d.device
        _, captured = run_pass(
            d, plain_pass(self.batch, self.layers), prompts.ids.to(dev),
            prompts.positions.to(dev),
            lambda window: causal_mask(prompts.mask.to(dev), window=window), self.donor_cache,
            capture=self.keys, stop=True,
        )
        self.donor_values = Values(self.donor, captured)

    def _prefill(self) -> None:
        """All prompt tokens but the last: the history once per prompt, and the own-history
        rows (patched) from the block they join at."""
        B, dev = self.batch, self.device
        n = self.prompt_len - 1
        first = self._prefill_rows()
        n_first = len(first)
        if n > 0:
            ids, pos = self.prompts.ids[:, :n], self.prompts.positions[:, :n]  # (B, P - 1)
            valid = self.prompts.mask[:, :n]
            values = self.donor_values
            if values is not None and self.slots is None:  # the same prompts: the same slots
                values = Values(self.donor, {k: v[:, :n] for k, v in values.captured.items()})
            elif values is None:
                values = Values(self.donor)
            plan = receiver_pass(
                self.entry_of_row[first], self.fed_of_row[first], self.prompt_of_row[first],
                self.prompt_of_row[first], B, self.history_depth, self.layers,
                self._edits(torch.arange(n_first, device=dev), self.spec_of[first],
                            self.prompt_of_row[first], None),
            )
            run_pass(self.receiver, plan, ids, pos,
                     lambda window: causal_mask(valid, window=window), self.receiver_cache,
                     values)
        # Decode layout: an own-history row keeps its rows (the samples of one row start as
        # copies of sample 0's); a newest/steps row and a history row start as the prompt's
        # unpatched history.
        prefill_row = torch.full((self.n_rows,), -1, device=dev)  # (R,) -1: not prefilled
        prefill_row[first] = torch.arange(n_first, device=dev)
        own = self.own_of_row.nonzero()[:, 0]
        prefill_row[own] = prefill_row[own - self.sample_of_row[own]]
        start = torch.where(prefill_row >= 0, prefill_row, n_first + self.prompt_of_row)
        self.receiver_cache.select_rows(
            torch.cat([start[self.order], n_first + torch.arange(B, device=dev)]),
            2 * self.n_rows,
        )

    def _step(self, k: int) -> Tensor:
        """Feed token k (the prompt's last at k=0) to every group; return each row's next token."""
        h, inputs = self.histories, self.inputs
        slot = self.prompt_len - 1 + k
        ids = self.group_token[:, None]  # (G, 1)
        if self.donor.runs and k > 0:
            d = self.donor.runner
            donor_valid = inputs.donor_valid[:, : self.donor_len + k]
            _, captured = run_pass(
                d, inputs.donor_plan, ids[h.donor_order].to(d.device), inputs.donor_position + k,
                lambda window: newest_query_mask(donor_valid, window), self.donor_cache,
                capture=self.keys, stop=True,
            )
            self.donor_values = Values(self.donor, captured)
        elif not self.donor.runs:
            self.donor_values = Values(self.donor)
        receiver_valid = inputs.receiver_valid[:, : slot + 1]
        hidden, _ = run_pass(
            self.receiver, self._decode_plan(k), ids, inputs.receiver_position + k,
            lambda window: newest_query_mask(receiver_valid, window), self.receiver_cache,
            self.donor_values,
        )
        if len(self.newest_cache_rows):
            self.receiver_cache.copy_slot(self.newest_cache_rows, inputs.newest_history, slot)
        logits = self.receiver.logits(hidden[: self.n_rows, -1])[self.cache_row_of]  # (R, V)
        if self.score_tokens is not None:
            scores = torch.log_softmax(logits.to(torch.promote_types(logits.dtype,
                                                                     torch.float32)), -1)
            self.logprobs.append(scores[:, self.score_tokens].masked_fill(self.done[:, None],
                                                                         float("nan")))
        uniforms = None if self.streams is None else self.streams[:, k]
        return choose_tokens(logits, self.decoding, uniforms)

    def _regroup(self, tokens: Tensor) -> None:
        """Split groups whose rows picked different tokens (histories diverged).

        A group keeps its index for one of its tokens; each other token opens a new group at
        the end, whose cache rows start as copies of the parent's.
        """
        h = self.histories
        groups = len(h.prompt)
        if groups == self.n_rows:  # one row per group: nothing can split
            token = torch.empty_like(tokens)
            token[h.of_row] = tokens
            self.group_token = token
            return
        vocab = self.receiver.config.vocab_size
        found, inverse = torch.unique(h.of_row * vocab + tokens, return_inverse=True)
        if len(found) == groups:  # sorted by group, one token each: indices unchanged
            self.group_token = found % vocab
            return
        parent = found // vocab
        opens = torch.zeros_like(parent, dtype=torch.bool)
        opens[1:] = parent[1:] == parent[:-1]
        new_id = torch.where(opens, groups + opens.cumsum(0) - 1, parent)
        parents = parent[opens]
        token = torch.empty_like(found)
        token[new_id] = found % vocab
        self.group_token = token
        self.receiver_cache.copy_rows(self.n_rows + parents, self.n_rows + groups)
        # A new group's donor cache row starts as its parent's.
        old_donor_row = torch.cat([h.donor_row, h.donor_row[parents]])
        self.histories = Histories.build(
            new_id[inverse], torch.cat([h.prompt, h.prompt[parents]]), self.depth_of_row
        )
        self.inputs = self._step_inputs()
        self.plans.clear()
        if self.donor_cache is not None:
            self.donor_cache.select_rows(
                old_donor_row[self.histories.donor_order].to(self.donor.runner.device),
                self.n_rows,
            )

    def run(self, progress: bool = False) -> tuple[list[Tensor], Tensor | None]:
        """Generate; return one [B x N, P + new] tensor per spec (prompt-major), each cut where
        all its rows ended, and, when scoring tokens, (R, steps, K) log-probs."""
        per_spec = self.rows_per_spec
        if self.donor.runs:
            self._donor_prefill()
        self._prefill()
        steps: list[Tensor] = []
        lengths = [self.max_new] * len(self.specs)
        pad = self.decoding.pad_token_id
        for k in tqdm(range(self.max_new), disable=not progress, desc="patched decode"):
            tokens = self._step(k)
            if len(self.eos):  # rows that ended emit padding; a spec ends with its last row
                tokens = torch.where(self.done, pad, tokens)
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
        outs = [
            torch.cat([prompts, new[s * per_spec : (s + 1) * per_spec, : lengths[s]]], dim=1)
            for s in range(len(self.specs))
        ]
        scores = torch.stack(self.logprobs, dim=1) if self.logprobs else None  # (R, steps, K)
        return outs, scores
