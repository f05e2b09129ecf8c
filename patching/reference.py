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

from .decoding import DecodingConfig
from .hooks import Key, capturing, patching
from .models import Runner, as_runner
from .sampling import choose_tokens, sample_streams
from .spec import PatchSpec
from .sweep import decoding_for, first_samples


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
    generation: DecodingConfig | None = None,
    *,
    sample_offsets: Sequence[int] | None = None,
    **options: Any,
) -> Tensor:
    """Same contract as `patched_generate`, computed one prompt, one sample and one token at a
    time; the next token comes from the same sampler and random streams (sampling.py)."""
    r, d = as_runner(receiver), as_runner(donor)
    decoding = decoding_for(r, generation, options)
    eos, samples = decoding.eos_token_id, decoding.num_return_sequences
    rows = _rows(input_ids, attention_mask)
    first = first_samples(sample_offsets, len(rows))
    generated = []
    for x, first_sample in zip(rows, first, strict=True):
        for n in range(samples):
            stream = (
                sample_streams([x.tolist()], [first_sample + n], 1, decoding.seed,
                               decoding.max_new_tokens)[0]
                if decoding.do_sample
                else None
            )
            new: list[int] = []
            while len(new) < decoding.max_new_tokens and not (new and new[-1] in eos):
                logits = patched_logits(r, d, torch.cat([x, x.new_tensor(new)]), spec)[-1:]
                u = None if stream is None else stream[len(new) : len(new) + 1]
                new.append(int(choose_tokens(logits, decoding, u)[0]))
            generated.append(new)
    width = max(map(len, generated), default=0)
    tail = [g + [decoding.pad_token_id] * (width - len(g)) for g in generated]
    prompts = input_ids.repeat_interleave(samples, dim=0)
    return torch.cat([prompts, prompts.new_tensor(tail).reshape(len(tail), width)], dim=1)


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
