"""Patched log-likelihood of given continuations (multiple-choice scoring), exactly and in one pass.

The naive definition scores continuation token t by running both models on x[:t]
and patching position t-1 ("newest") or every position ("all"). Both collapse to a
single forward of each model:

- "all": position t-1 only sees positions <= t-1, all patched the same way whatever
  the later tokens are, so one patched pass over x[:-1] scores every token.
- "newest": the receiver's sequence is x[:-1] (unpatched) followed by one COPY of
  each scored position t-1, with its own position id. A 4-D mask lets copy t-1 see
  the unpatched tokens before it and itself, and nothing else; only copies are
  patched. Each copy thus computes exactly "unpatched history, patched newest".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .batch import causal_mask, check_continuations, copies_mask, prepare
from .hooks import Key, capturing, patching
from .plans import build_plans, decoder_forward, keys_of, patch_edit
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


@torch.inference_mode()
def patched_logprobs(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec,
    continuation_lengths: Sequence[int],
    attention_mask: Tensor | None = None,
) -> ContinuationScores:
    """Receiver log-probs of each row's last `continuation_lengths[b]` tokens, patched per `spec`.

    `input_ids` holds left-padded context + continuation rows; every context must
    keep at least one token. Equals `reference.naive_logprobs`.
    """
    r, d = resolve(receiver, donor, [spec])
    prompts = prepare(input_ids, attention_mask, r.device)
    B, n = prompts.ids.shape
    lengths = check_continuations(continuation_lengths, prompts)
    C = max(lengths)
    ids, pos, valid = prompts.ids[:, :-1], prompts.positions[:, :-1], prompts.mask[:, :-1]
    acts: dict[Key, Tensor] = {}
    dev = d.device
    decoder_forward(
        d,
        ids.to(dev),
        pos.to(dev),
        lambda window: causal_mask(valid, window=window).to(dev),
        None,
        capturing(d.lm, d.arch, keys_of(spec), acts, stop=True),
    )
    rows = torch.arange(B, device=r.device)
    plans = build_plans([(spec, rows, rows)], r, [0] * r.config.num_hidden_layers)
    if spec.positions == "all":
        hidden = decoder_forward(
            r,
            ids,
            pos,
            lambda window: causal_mask(valid, window=window),
            None,
            patching(r.lm, r.arch, plans, patch_edit(plans, acts)),
        )[:, -C:]
    else:
        acts = {key: act[:, -C:] for key, act in acts.items()}
        edit = patch_edit(plans, acts)
        copies = n - 1

        def edit_copies(key: Key, act: Tensor) -> Tensor:
            edit(key, act[:, copies:])  # writes through the view
            return act

        hidden = decoder_forward(
            r,
            torch.cat([ids, ids[:, -C:]], dim=1),
            torch.cat([pos, pos[:, -C:]], dim=1),
            lambda window: copies_mask(valid, C, window),
            None,
            patching(r.lm, r.arch, plans, edit_copies),
        )[:, copies:]
    logits = r.logits(hidden)
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
