"""Left-padded prompt batches: validation, position ids and 4-D attention masks.

The engine calls the decoder with its own position ids and boolean 4-D masks, so a
left-padded row computes exactly what the same prompt computes alone: positions
count real tokens only, and no real token attends to padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import PatchingError


@dataclass(frozen=True)
class Prompts:
    """A validated left-padded batch."""

    ids: Tensor  # [B, P] long
    mask: Tensor  # [B, P] bool, zeros then ones in each row
    positions: Tensor  # [B, P] long: cumsum(mask) - 1, clamped at 0 under padding

    @property
    def last_position(self) -> Tensor:
        """[B] position id of each row's last prompt token."""
        return self.positions[:, -1]


def prepare(input_ids: Tensor, attention_mask: Tensor | None, device: torch.device) -> Prompts:
    """Check shapes and left padding before any work; return the batch on `device`."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        shape = (
            tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        )
        raise PatchingError(
            f"input_ids must be a [batch, length] LongTensor with length >= 1, got {shape}"
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not isinstance(attention_mask, Tensor):
        raise PatchingError(
            f"attention_mask must be a tensor shaped like input_ids, got a "
            f"{type(attention_mask).__name__}"
        )
    if attention_mask.shape != input_ids.shape:
        raise PatchingError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from "
            f"input_ids shape {tuple(input_ids.shape)}"
        )
    mask = attention_mask.to(device=device, dtype=torch.bool)
    not_left_padded = (mask[:, :-1] & ~mask[:, 1:]).any(dim=1) | ~mask[:, -1]
    if bool(not_left_padded.any()):
        row = int(not_left_padded.nonzero()[0, 0])
        raise PatchingError(
            f"attention_mask row {row} is not left-padded (zeros then ones, ending in a real token)"
        )
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    return Prompts(input_ids.to(device=device, dtype=torch.long), mask, positions)


def check_continuations(lengths: Sequence[int], prompts: Prompts) -> list[int]:
    """Teacher-forced rows: one continuation length per row, each in 1..(row's tokens - 1), so
    every context keeps at least one token; one-line ``PatchingError`` otherwise."""
    lengths = list(lengths)
    real = prompts.mask.sum(dim=1).tolist()
    if len(lengths) != len(real):
        raise PatchingError(
            f"continuation_lengths has {len(lengths)} entries for a batch of {len(real)}"
        )
    for b, (c, m) in enumerate(zip(lengths, real, strict=True)):
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= m - 1:
            raise PatchingError(
                f"continuation_lengths[{b}] = {c!r} must be an int in 1..{m - 1} "
                f"(row {b} has {m} tokens)"
            )
    return lengths


def causal_mask(key_valid: Tensor, queries: int | None = None, window: int | None = None
                ) -> Tensor:
    """[B, 1, q, k] boolean mask for the last q of k positions: causal, padding hidden, and
    with a `window`, only the `window` latest keys (the query's own included).

    A window counts slots, which here are positions: padding sits only at the left, so real
    tokens are contiguous. A padding query attends to itself only: a row with no visible key
    would give NaN K/V that later leak into real rows through the cache.
    """
    keys = key_valid.shape[1]
    queries = keys if queries is None else queries
    rows = torch.arange(keys - queries, keys, device=key_valid.device)[:, None]  # (q, 1)
    cols = torch.arange(keys, device=key_valid.device)[None, :]  # (1, k)
    near = cols <= rows if window is None else (cols <= rows) & (rows - cols < window)
    allowed = near[None] & key_valid[:, None, :]  # (B, q, k)
    allowed |= (cols == rows)[None]
    return allowed[:, None]


def copies_mask(key_valid: Tensor, copies: int, window: int | None = None) -> Tensor:
    """Mask for [x[:-1] | copies of its last `copies` positions]: copy t sees the real tokens
    before it and itself, so each copy computes "unpatched history, patched newest" exactly.
    A `window` counts positions from the copied token, as it would from the token itself."""
    B, n = key_valid.shape
    size = n + copies
    mask = torch.zeros(B, 1, size, size, dtype=torch.bool, device=key_valid.device)
    mask[:, :, :n, :n] = causal_mask(key_valid, window=window)
    source = torch.arange(n - copies, n, device=key_valid.device)[:, None]  # (copies, 1)
    cols = torch.arange(n, device=key_valid.device)[None, :]  # (1, n)
    before = cols < source if window is None else (cols < source) & (source - cols < window)
    mask[:, 0, n:, :n] = before[None] & key_valid[:, None, :]
    mask[:, 0, n:, n:] = torch.eye(copies, dtype=torch.bool, device=key_valid.device)
    return mask


def newest_query_mask(key_valid: Tensor, window: int | None = None) -> Tensor:
    """[B, 1, 1, k] mask of one query at the last of k slots (a decode step)."""
    mask = key_valid[:, None, None, :]
    if window is None:
        return mask
    keys = key_valid.shape[-1]
    return mask & (torch.arange(keys, device=key_valid.device) > keys - 1 - window)
