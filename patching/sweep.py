"""Public generation API: `patched_generate` (one spec) and `sweep_generate` (many).

Both validate everything first (one-line `PatchingError`), then run one lockstep
batch: a sweep shares the donor's prompt prefill and its decode rows across specs
(the donor runs once per distinct token history) and batches the receiver rows of
all specs, so it returns exactly what one `patched_generate` per spec returns, also
when sampling (each row's random stream depends on its seed, prompt and sample number
only: sampling.py).

Decoding is a `DecodingConfig` (`generation=`), or its fields as keyword arguments
(`max_new_tokens=16, do_sample=True, ...`), which build one. eos defaults to the
receiver's generation config, as `generate` does; after a row's eos its later
positions hold `pad_token_id`; a batch is cut once all its rows have ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .batch import Prompts, prepare
from .decoding import DecodingConfig
from .engine import Lockstep
from .models import Runner, as_runner
from .sampling import sample_streams
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
    (``patched_hf`` calls it at construction, before lm-eval builds any request)."""
    resolve(receiver, donor, specs)


def decoding_for(runner: Runner, generation: DecodingConfig | None, options: dict[str, Any]
                 ) -> DecodingConfig:
    """The call's decoding settings, with eos and pad read from the receiver where unset."""
    decoding = DecodingConfig.build(generation, **options)
    return decoding.resolved(runner.config, getattr(runner.lm, "generation_config", None))


def first_samples(sample_offsets: Sequence[int] | None, batch: int) -> list[int]:
    """Each prompt's first sample number (default 0): lm-eval's repeated requests of one prompt
    pass 0, 1, 2, ... so that each gets its own random stream."""
    if sample_offsets is None:
        return [0] * batch
    offsets = list(sample_offsets)
    if len(offsets) != batch or any(
        isinstance(o, bool) or not isinstance(o, int) or o < 0 for o in offsets
    ):
        raise PatchingError(
            f"sample_offsets must be {batch} non-negative ints (one per prompt), got {offsets!r}"
        )
    return offsets


def streams_for(prompts: Prompts, decoding: DecodingConfig, sample_offsets: Sequence[int] | None
                ) -> Tensor | None:
    """Each (prompt, sample)'s uniforms when sampling (sampling.sample_streams), else None."""
    first = first_samples(sample_offsets, len(prompts.ids))
    if not decoding.do_sample:
        return None
    tokens = [row[m].tolist() for row, m in zip(prompts.ids.cpu(), prompts.mask.cpu(), strict=True)]
    return sample_streams(
        tokens, first, decoding.num_return_sequences, decoding.seed, decoding.max_new_tokens
    )


@torch.inference_mode()
def sweep_generate(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    specs: Sequence[PatchSpec],
    attention_mask: Tensor | None = None,
    generation: DecodingConfig | None = None,
    *,
    sample_offsets: Sequence[int] | None = None,
    progress: bool = False,
    specs_per_batch: int | None = None,
    **options: Any,
) -> list[Tensor]:
    """Patched generation for every spec; one LongTensor [batch x samples, prompt + new] per
    spec, prompt-major (the samples of prompt 0 first), as `generate` returns them.

    `input_ids` may be left-padded (with `attention_mask`); each row gives the tokens
    the same prompt gives alone. `generation`/`options`: module docstring.
    `sample_offsets`: each prompt's first sample number (default 0). `progress` shows a
    tqdm bar over decode steps. `specs_per_batch` bounds memory: the KV caches hold up to
    3 x specs x prompts x samples rows of every layer (a 36-layer sweep of a 4B model at once
    may not fit a GPU).
    """
    r, d = resolve(receiver, donor, list(specs))
    decoding = decoding_for(r, generation, options)
    per_batch = 1 if specs_per_batch is None else specs_per_batch
    if isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1:
        raise PatchingError(f"specs_per_batch must be an int >= 1, got {specs_per_batch!r}")
    prompts = prepare(input_ids, attention_mask, r.device)
    streams = streams_for(prompts, decoding, sample_offsets)
    if decoding.max_new_tokens == 0:
        return [
            input_ids.repeat_interleave(decoding.num_return_sequences, dim=0) for _ in specs
        ]
    step = specs_per_batch or len(specs)
    outs = []
    for start in range(0, len(specs), step):
        chunk = specs[start : start + step]
        outs += Lockstep(r, d, prompts, chunk, decoding, streams).run(progress)
    return [out.to(input_ids.device) for out in outs]


def patched_generate(
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
    """Generation of `receiver` with `donor`'s activations patched in per `spec`.

    Returns [batch x samples, prompt + new]; decoding and eos padding: module docstring.
    """
    return sweep_generate(
        receiver, donor, input_ids, [spec], attention_mask, generation,
        sample_offsets=sample_offsets, **options,
    )[0]
