"""Patched log-likelihood of given continuations (multiple-choice scoring), exactly and in one pass.

Teacher forcing is generation with the tokens given: the context is the prompt and
continuation token c is new token c. The naive definition scores token t by running both
models on x[:t] with the spec applied as at generation step t - context length. Every rule
collapses to a single forward of each model:

- `all` and `prompt[i:j]`: position t-1 only sees positions <= t-1, all patched the same way
  whatever the later tokens are, so one patched pass over x[:-1] scores every token.
- `newest` and `steps[a:b]`: the receiver's sequence is x[:-1] (unpatched) followed by one
  COPY of each scored position t-1, with its own position id. A 4-D mask lets copy t-1 see the
  unpatched tokens before it and itself, and nothing else; only copies are patched (for
  `steps`, those of continuation tokens a..b-1). Each copy thus computes exactly "unpatched
  history, patched newest".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .batch import Prompts, causal_mask, check_continuations, copies_mask, prepare
from .donors import DonorSource, donor_positions
from .engine import pass_key
from .forward import MaskFor, Values, run_pass
from .passes import EditRows, edited_pass, plain_pass
from .positions import Positions
from .spec import PatchSpec
from .sweep import resolve


@dataclass(frozen=True)
class ContinuationScores:
    """Per-token scores of the continuations, right-aligned: column j of C scores
    token n-C+j of its row; columns before a row's continuation hold 0 / True."""

    logprobs: Tensor  # [B, C] log p(token | context), float32 or wider
    greedy: Tensor  # [B, C] bool: the token was the receiver's argmax

    def total(self) -> Tensor:
        """[B] log-likelihood of each continuation (lm-eval's loglikelihood)."""
        return self.logprobs.sum(dim=-1)

    def all_greedy(self) -> Tensor:
        """[B] whether greedy decoding would have produced each continuation."""
        return self.greedy.all(dim=-1)


@dataclass(frozen=True)
class TeacherInputs:
    """The receiver's teacher-forced sequence for one rule, and what each query stands for."""

    ids: Tensor  # (B, Q) receiver tokens
    positions: Tensor  # (B, Q)
    mask_for: MaskFor
    x_slot: Tensor  # (Q,) the slot of x[:-1] each query computes (a copy: the slot it copies)
    copies: bool  # newest/steps: the last C queries are copies


def teacher_inputs(prompts: Prompts, C: int, rule: Positions) -> TeacherInputs:
    """x[:-1], plus copies of its last C slots for a newest/steps rule (module docstring)."""
    ids, pos, valid = prompts.ids[:, :-1], prompts.positions[:, :-1], prompts.mask[:, :-1]
    n = ids.shape[1]
    slots = torch.arange(n, device=ids.device)
    if rule.own_history:
        return TeacherInputs(ids, pos, lambda window: causal_mask(valid, window=window), slots,
                             False)
    return TeacherInputs(
        torch.cat([ids, ids[:, -C:]], dim=1), torch.cat([pos, pos[:, -C:]], dim=1),
        lambda window: copies_mask(valid, C, window), torch.cat([slots, slots[-C:]]), True,
    )


def patched_queries(rule: Positions, inputs: TeacherInputs, prompts: Prompts,
                    lengths: Sequence[int]) -> Tensor | None:
    """(B, Q) bool: the queries `rule` patches (None: all of them)."""
    if rule.kind == "all":
        return None
    B, W = prompts.ids.shape
    Q = inputs.ids.shape[1]
    real = prompts.mask.sum(dim=1).tolist()
    where = torch.zeros(B, Q, dtype=torch.bool)
    C = max(lengths)
    for b in range(B):
        context = real[b] - lengths[b]
        first = W - real[b]  # slot of the row's first real token
        if rule.kind == "prompt":
            for p in rule.prompt_positions(context):
                where[b, first + p] = True
            continue
        for j in range(C):  # copy j predicts continuation token j - (C - c)
            step = j - (C - lengths[b])
            where[b, Q - C + j] = step >= 0 and rule.at_step(step)
    return where.to(prompts.ids.device)


def donor_teacher_values(source: DonorSource, prompts: Prompts, lengths: Sequence[int],
                         keys: Sequence[tuple[str, int]], inputs: TeacherInputs
                         ) -> tuple[Values, Tensor | None, Tensor | None]:
    """The donor's values over the teacher-forced rows, the donor slot each receiver query
    reads ((B, Q), None: the same one), and (B, Q) which queries have a donor position."""
    if not source.runs:
        return Values(source), None, None
    d = source.runner
    dev = d.device
    if source.prompts is None:
        ids, pos, valid = prompts.ids[:, :-1], prompts.positions[:, :-1], prompts.mask[:, :-1]
        slots = inputs.x_slot.expand(len(ids), -1) if inputs.copies else None
        have = None
    else:
        donor_rows, slots, have = _other_prompt_rows(source, prompts, lengths, inputs)
        ids, pos, valid = donor_rows.ids[:, :-1], donor_rows.positions[:, :-1], \
            donor_rows.mask[:, :-1]
    _, captured = run_pass(
        d, plain_pass(len(ids), d.config.num_hidden_layers), ids.to(dev), pos.to(dev),
        lambda window: causal_mask(valid.to(dev), window=window), capture=keys, stop=True,
    )
    return Values(source, captured), slots, have


def _other_prompt_rows(source: DonorSource, prompts: Prompts, lengths: Sequence[int],
                       inputs: TeacherInputs) -> tuple[Prompts, Tensor, Tensor]:
    """Donor rows = donor context + the row's continuation, and the slot of them each receiver
    query reads ((B, Q) long, (B, Q) bool: it has one)."""
    B, W = prompts.ids.shape
    donor = source.prompts
    real = prompts.mask.sum(dim=1).tolist()
    contexts = [n - c for n, c in zip(real, lengths, strict=True)]
    m = donor.mask.sum(dim=1).tolist()
    needs = inputs.copies is False
    table = donor_positions(source.position_map, contexts, m, needs, "context")
    rows = [torch.cat([donor.ids[b][donor.mask[b]], prompts.ids[b, W - lengths[b]:]])
            for b in range(B)]
    width = max(map(len, rows))
    ids = torch.zeros(B, width, dtype=torch.long, device=prompts.ids.device)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, width - len(row):], mask[b, width - len(row):] = row, 1
    Q = inputs.ids.shape[1]
    slots = torch.zeros(B, Q, dtype=torch.long)
    have = torch.zeros(B, Q, dtype=torch.bool)
    for b in range(B):
        first, pad = W - real[b], width - len(rows[b])
        for query, slot in enumerate(inputs.x_slot.tolist()):
            p = slot - first  # the receiver position this query computes
            q = None if p < 0 else (table[b][p] if p < contexts[b] else p - contexts[b] + m[b])
            if q is not None:
                slots[b, query], have[b, query] = pad + q, True
    dev = prompts.ids.device
    return prepare(ids, mask, dev), slots.to(dev), have.to(dev)


@torch.inference_mode()
def patched_logprobs(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec | str,
    continuation_lengths: Sequence[int],
    attention_mask: Tensor | None = None,
) -> ContinuationScores:
    """Receiver log-probs of each row's last `continuation_lengths[b]` tokens, patched per `spec`.

    `input_ids` holds left-padded context + continuation rows; every context must keep at
    least one token. `donor`: any form of `patching.donors` (an `OtherPrompt` gives each row's
    donor context; the continuation follows it). Equals `reference.naive_logprobs`.
    """
    r, source, (spec,) = resolve(receiver, donor, [spec])
    prompts = prepare(input_ids, attention_mask, r.device)
    lengths = check_continuations(continuation_lengths, prompts)
    real = prompts.mask.sum(dim=1).tolist()
    spec.positions.check_prompt([n - c for n, c in zip(real, lengths, strict=True)], "context")
    C = max(lengths)
    rule = spec.positions
    inputs = teacher_inputs(prompts, C, rule)
    keys = [pass_key(p) for p in spec.parts]
    values, slots, have = donor_teacher_values(source, prompts, lengths, keys, inputs)
    where = patched_queries(rule, inputs, prompts, lengths)
    if have is not None:
        where = have if where is None else where & have
    rows = torch.arange(len(input_ids), device=r.device)
    parts = [EditRows(pass_key(p), rows, r.head_columns(p.site, p.heads), where, slots)
             for p in spec.parts]
    plan = edited_pass(len(input_ids), r.config.num_hidden_layers, parts)
    hidden, _ = run_pass(r, plan, inputs.ids, inputs.positions, inputs.mask_for, values=values)
    logits = r.logits(hidden[:, -C:])
    logprobs = torch.log_softmax(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1
    )
    targets = prompts.ids[:, -C:]
    scores = logprobs.gather(-1, targets[..., None])[..., 0]
    greedy = logits.argmax(dim=-1) == targets
    outside = (
        torch.arange(C, device=r.device)[None, :]
        < (C - torch.tensor(lengths, device=r.device))[:, None]
    )
    return ContinuationScores(scores.masked_fill(outside, 0.0), greedy | outside)
