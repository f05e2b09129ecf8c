"""Public generation API: `patched_generate` (one spec) and `sweep_generate` (many).

Both validate everything first (one-line `PatchingError`), then run one lockstep
batch: a sweep shares the donor's prompt prefill and its decode rows across specs
(the donor runs once per distinct token history) and batches the receiver rows of
all specs, so it returns exactly what one `patched_generate` per spec returns.

After a row emits an eos token, its later positions hold `pad_token_id`, which
defaults to the (first) eos id, as transformers' `generate` does for a model
without a pad token; a batch is cut once all its rows have ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .batch import prepare
from .engine import Lockstep
from .models import Runner, as_runner
from .spec import PatchingError, PatchSpec, check_pair


def resolve(receiver: Any, donor: Any, specs: Sequence[PatchSpec]) -> tuple[Runner, Runner]:
    """Resolve both models and check the specs against them, before any work."""
    r, d = as_runner(receiver), as_runner(donor)
    check_pair(r.config, d.config)
    if not specs:
        raise PatchingError("specs is empty; pass at least one PatchSpec")
    for spec in specs:
        if not isinstance(spec, PatchSpec):
            raise PatchingError(f"specs must hold PatchSpec objects, got a {type(spec).__name__}")
        spec.check(r.config)
    return r, d


def check_patch(receiver: Any, donor: Any, specs: Sequence[PatchSpec]) -> None:
    """Raise a one-line ``PatchingError`` unless every spec fits this model pair; runs nothing
    (``patched_qwen`` calls it at construction, before lm-eval builds any request)."""
    resolve(receiver, donor, specs)


def _token_ids(value: int | Sequence[int] | None, name: str, vocab: int) -> list[int]:
    ids = [] if value is None else [value] if isinstance(value, int) else list(value)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab:
            raise PatchingError(
                f"{name} {i!r} is not a token id of a {vocab}-token vocabulary (0..{vocab - 1})"
            )
    return ids


@torch.inference_mode()
def sweep_generate(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    specs: Sequence[PatchSpec],
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 64,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    progress: bool = False,
    specs_per_batch: int | None = None,
) -> list[Tensor]:
    """Greedy patched generation for every spec; one LongTensor [batch, prompt + new] per spec.

    `input_ids` may be left-padded (with `attention_mask`); each row gives the tokens
    the same prompt gives alone. `progress` shows a tqdm bar over decode steps.
    `specs_per_batch` bounds memory: the KV caches hold up to 3 x specs x prompts
    rows of every layer (a 36-layer sweep of a 4B model at once may not fit a GPU).
    """
    r, d = resolve(receiver, donor, list(specs))
    for name, value, low in (
        ("max_new_tokens", max_new_tokens, 0),
        ("specs_per_batch", 1 if specs_per_batch is None else specs_per_batch, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PatchingError(f"{name} must be an int >= {low}, got {value!r}")
    vocab = r.config.vocab_size
    eos = _token_ids(eos_token_id, "eos_token_id", vocab)
    pad = _token_ids(pad_token_id, "pad_token_id", vocab) or eos[:1] or [0]
    prompts = prepare(input_ids, attention_mask, r.device)
    if max_new_tokens == 0:
        return [input_ids.clone() for _ in specs]
    eos_t = torch.tensor(eos, dtype=torch.long, device=r.device)
    step = specs_per_batch or len(specs)
    outs = []
    for start in range(0, len(specs), step):
        chunk = specs[start : start + step]
        outs += Lockstep(r, d, prompts, chunk, max_new_tokens, eos_t, pad[0]).run(progress)
    return [out.to(input_ids.device) for out in outs]


def patched_generate(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 64,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> Tensor:
    """Greedy generation of `receiver` with `donor`'s activations patched in per `spec`.

    Returns [batch, prompt + new]; see the module docstring for eos padding.
    """
    return sweep_generate(
        receiver,
        donor,
        input_ids,
        [spec],
        attention_mask,
        max_new_tokens,
        eos_token_id,
        pad_token_id,
    )[0]
