"""Choosing the next token: greedy, or sampled from one random stream per row.

A row's stream is a function of (seed, its prompt's real tokens, its sample number) alone,
drawn from a CPU `torch.Generator` seeded by a hash of the three. So a reply does not depend on
which other prompts, specs or samples share its batch, on left padding, or on the device: the
engine's sweep equals one call per spec, and a batch equals each prompt alone, also when
sampling. Step k of a row uses the k-th number of its stream.

Sampling is by inverse CDF: with filtered probabilities p in token-id order, the token is the
first whose cumulative probability exceeds u * sum(p), for the row's uniform u. That draws
exactly from p, and it is a deterministic function of (logits, u), so the naive reference,
given the same logits and streams, picks the same tokens. Filters follow transformers'
`generate` order: temperature, then top-k, then top-p.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from .decoding import DecodingConfig


def stream_seed(seed: int, tokens: Sequence[int], sample: int) -> int:
    """The generator seed of one (seed, prompt, sample number) stream (63 bits)."""
    text = f"{seed}|{sample}|{','.join(map(str, tokens))}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def sample_streams(
    prompts: Sequence[Sequence[int]], first_sample: Sequence[int], samples: int, seed: int,
    steps: int,
) -> Tensor:
    """(len(prompts) * samples, steps) float64 uniforms, prompt-major: row b * samples + i is
    the stream of sample number first_sample[b] + i of prompt b."""
    out = torch.empty(len(prompts) * samples, steps, dtype=torch.float64)
    for b, tokens in enumerate(prompts):
        for i in range(samples):
            stream = torch.Generator().manual_seed(stream_seed(seed, tokens, first_sample[b] + i))
            out[b * samples + i] = torch.rand(steps, generator=stream, dtype=torch.float64)
    return out


def filtered_logits(logits: Tensor, decoding: DecodingConfig) -> Tensor:
    """(rows, vocab) logits / temperature with the top-k and top-p filters applied (-inf)."""
    scores = logits.to(torch.promote_types(logits.dtype, torch.float32)) / decoding.temperature
    if decoding.top_k is not None and decoding.top_k < scores.shape[-1]:
        kth = torch.topk(scores, decoding.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if decoding.top_p < 1:
        ascending, order = torch.sort(scores, dim=-1)
        below = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - decoding.top_p
        below[..., -1] = False  # the likeliest token always stays
        scores = scores.masked_fill(below.scatter(-1, order, below), float("-inf"))
    return scores


def choose_tokens(logits: Tensor, decoding: DecodingConfig, uniforms: Tensor | None) -> Tensor:
    """(rows,) next tokens from (rows, vocab) logits: argmax, or inverse-CDF draws with
    `uniforms` (rows,) in [0, 1) when `decoding.do_sample`."""
    if not decoding.do_sample:
        return logits.argmax(dim=-1)
    cdf = filtered_logits(logits, decoding).softmax(dim=-1).cumsum(dim=-1)  # (rows, vocab)
    target = uniforms.to(cdf)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True)[:, 0].clamp_(max=cdf.shape[-1] - 1)
