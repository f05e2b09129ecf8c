"""The naive definition of patched generation and scoring, written to be obviously right.

Each prompt alone, no cache: at every step both models process the whole context,
and the receiver's site activation is replaced at the newest position (or at all
positions). This is the semantics the engine must reproduce token for token, and
the original study's scheme that `bench/patching.py` times as the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .hooks import Key, capturing, patching
from .models import Runner, as_runner
from .spec import PatchSpec


def _column_mask(spec: PatchSpec, runner: Runner, act: Tensor) -> Tensor:
    """True where `spec` replaces the activation: every column, or the heads' slices."""
    if spec.heads is None:
        return torch.ones(act.shape[-1], dtype=torch.bool, device=act.device)
    size = runner.head_dim
    return torch.tensor([c // size in spec.heads for c in range(act.shape[-1])], device=act.device)


def patched_logits(receiver: Runner, donor: Runner, x: Tensor, spec: PatchSpec) -> Tensor:
    """Receiver logits [len(x), vocab] on the 1-D context `x` with the spec applied."""
    keys = [(spec.site, layer) for layer in spec.layers]
    acts: dict[Key, Tensor] = {}
    with donor.context(), capturing(donor.lm, donor.arch, keys, acts):
        donor.lm(input_ids=x[None].to(donor.device), use_cache=False)

    def edit(key: Key, act: Tensor) -> Tensor:
        new = act.clone()
        where = slice(None) if spec.positions == "all" else slice(-1, None)
        cols = _column_mask(spec, receiver, act)
        new[:, where] = torch.where(cols, acts[key][:, where].to(act), act[:, where])
        return new

    with receiver.context(), patching(receiver.lm, receiver.arch, keys, edit):
        return receiver.lm(input_ids=x[None].to(receiver.device), use_cache=False).logits[0]


def _rows(input_ids: Tensor, attention_mask: Tensor | None) -> list[Tensor]:
    mask = (
        torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.bool()
    )
    return [row[m] for row, m in zip(input_ids, mask, strict=True)]


@torch.inference_mode()
def naive_generate(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 64,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> Tensor:
    """Same contract as `patched_generate`, computed one prompt and one token at a time."""
    r, d = as_runner(receiver), as_runner(donor)
    eos = (
        []
        if eos_token_id is None
        else [eos_token_id]
        if isinstance(eos_token_id, int)
        else list(eos_token_id)
    )
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    generated = []
    for x in _rows(input_ids, attention_mask):
        new: list[int] = []
        while len(new) < max_new_tokens and not (new and new[-1] in eos):
            context = torch.cat([x, x.new_tensor(new)])
            new.append(int(patched_logits(r, d, context, spec)[-1].argmax()))
        generated.append(new)
    width = max(map(len, generated), default=0)
    tail = [g + [pad] * (width - len(g)) for g in generated]
    return torch.cat([input_ids, input_ids.new_tensor(tail).reshape(len(tail), width)], dim=1)


@torch.inference_mode()
def naive_logprobs(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec,
    continuation_lengths: Sequence[int],
    attention_mask: Tensor | None = None,
) -> list[Tensor]:
    """Per row, log p(x_t) for each continuation token: run both models on x[:t] with
    the spec applied (for "newest": at position t-1 only), read position t-1."""
    r, d = as_runner(receiver), as_runner(donor)
    out = []
    for x, c in zip(_rows(input_ids, attention_mask), continuation_lengths, strict=True):
        scores = []
        for t in range(len(x) - c, len(x)):
            logits = patched_logits(r, d, x[:t], spec)[-1]
            scores.append(torch.log_softmax(logits.double(), dim=-1)[x[t]])
        out.append(torch.stack(scores))
    return out
