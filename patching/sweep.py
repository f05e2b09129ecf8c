"""Public generation API: `patched_generate` (one spec) and `sweep_generate` (many).

Both validate everything first (one-line `PatchingError`), then run one lockstep
batch: a sweep shares the donor's prompt prefill and its decode rows across specs
(the donor runs once per distinct token history) and batches the receiver rows of
all specs, so it returns exactly what one `patched_generate` per spec returns, also
when sampling (each row's random stream depends on its seed, prompt and sample number
only: sampling.py). Specs may be `PatchSpec`s or their text; the donor any form of
`patching.donors`.

Decoding is a `DecodingConfig` (`generation=`), or its fields as keyword arguments
(`max_new_tokens=16, do_sample=True, ...`), which build one. eos defaults to the
receiver's generation config, as `generate` does; after a row's eos its later
positions hold `pad_token_id`; a batch is cut once all its rows have ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .batch import Prompts, prepare
from .decoding import DecodingConfig
from .donors import DonorSource, prompt_slots, resolve_donor
from .engine import Lockstep
from .models import Runner, as_runner
from .sampling import sample_streams
from .spec import PatchingError, PatchSpec, check_pair


@dataclass(frozen=True)
class PatchedGeneration:
    """A patched generation with per-step scores of chosen tokens (`score_tokens=`)."""

    sequences: Tensor  # [B x N, P + new] as patched_generate returns them
    token_logprobs: Tensor  # [B x N, new, K] log p(token k) at each step; NaN after a row ended


def as_specs(specs: Sequence[PatchSpec | str]) -> list[PatchSpec]:
    """Specs as given: `PatchSpec`s or their text form."""
    if isinstance(specs, (str, PatchSpec)):
        raise PatchingError("specs must be a list of specs; for one spec use patched_generate")
    out = []
    for spec in specs:
        if not isinstance(spec, (PatchSpec, str)):
            raise PatchingError(f"specs must hold PatchSpec objects or spec texts, got a "
                                f"{type(spec).__name__}")
        out.append(PatchSpec.parse(spec))
    if not out:
        raise PatchingError("specs is empty; pass at least one PatchSpec")
    return out


def resolve(receiver: Any, donor: Any, specs: Sequence[PatchSpec | str]
            ) -> tuple[Runner, DonorSource, list[PatchSpec]]:
    """Resolve both models and check the specs against them, before any work."""
    r = as_runner(receiver)
    source = resolve_donor(donor)
    if source.runner is not None:
        check_pair(r.config, source.runner.config)
    specs = as_specs(specs)
    for spec in specs:
        spec.check(r.config)
    return r, source, specs


def check_patch(receiver: Any, donor: Any, specs: Sequence[PatchSpec | str]) -> None:
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


def check_prompts(specs: Sequence[PatchSpec], prompts: Prompts, donor: DonorSource) -> None:
    """Windows that select nothing, and donor prompts that cannot align, fail before work."""
    lengths = prompts.mask.sum(dim=1).tolist()
    for spec in specs:
        try:
            spec.positions.check_prompt(lengths)
        except PatchingError as err:
            raise PatchingError(f"spec {spec}: {err}") from None
    if donor.prompts is not None:
        needs = any(s.positions.kind in ("all", "prompt") for s in specs)
        prompt_slots(prompts, donor.prompts, donor.position_map, needs)


def score_ids(score_tokens: Sequence[int] | None, vocab: int, device: torch.device
              ) -> Tensor | None:
    if score_tokens is None:
        return None
    ids = list(score_tokens)
    if not ids or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab
                      for i in ids):
        raise PatchingError(f"score_tokens must be token ids in 0..{vocab - 1}, got {ids!r}")
    return torch.tensor(ids, dtype=torch.long, device=device)


@torch.inference_mode()
def sweep_generate(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    specs: Sequence[PatchSpec | str],
    attention_mask: Tensor | None = None,
    generation: DecodingConfig | None = None,
    *,
    sample_offsets: Sequence[int] | None = None,
    progress: bool = False,
    specs_per_batch: int | None = None,
    score_tokens: Sequence[int] | None = None,
    **options: Any,
) -> list[Tensor] | list[PatchedGeneration]:
    """Patched generation for every spec; one LongTensor [batch x samples, prompt + new] per
    spec, prompt-major (the samples of prompt 0 first), as `generate` returns them.

    `input_ids` may be left-padded (with `attention_mask`); each row gives the tokens
    the same prompt gives alone. `donor`: a model or another form of `patching.donors`.
    `generation`/`options`: module docstring. `sample_offsets`: each prompt's first sample
    number (default 0). `progress` shows a tqdm bar over decode steps. `specs_per_batch`
    bounds memory: the KV caches hold up to 3 x specs x prompts x samples rows of every layer
    (a 36-layer sweep of a 4B model at once may not fit a GPU). `score_tokens`: token ids
    whose log-probs every step records; then each spec gives a `PatchedGeneration`.
    """
    r, source, specs = resolve(receiver, donor, specs)
    decoding = decoding_for(r, generation, options)
    per_batch = 1 if specs_per_batch is None else specs_per_batch
    if isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1:
        raise PatchingError(f"specs_per_batch must be an int >= 1, got {specs_per_batch!r}")
    prompts = prepare(input_ids, attention_mask, r.device)
    check_prompts(specs, prompts, source)
    targets = score_ids(score_tokens, r.config.vocab_size, r.device)
    streams = streams_for(prompts, decoding, sample_offsets)
    if decoding.max_new_tokens == 0:
        same = input_ids.repeat_interleave(decoding.num_return_sequences, dim=0)
        if targets is None:
            return [same for _ in specs]
        empty = torch.zeros(len(same), 0, len(targets))
        return [PatchedGeneration(same, empty) for _ in specs]
    step = specs_per_batch or len(specs)
    outs: list[Tensor] = []
    scores: list[Tensor] = []
    for start in range(0, len(specs), step):
        chunk = specs[start : start + step]
        got, chunk_scores = Lockstep(r, source, prompts, chunk, decoding, streams, targets
                                     ).run(progress)
        outs += got
        if chunk_scores is not None:
            per = len(chunk_scores) // len(chunk)
            scores += [chunk_scores[i * per:(i + 1) * per] for i in range(len(chunk))]
    outs = [out.to(input_ids.device) for out in outs]
    if targets is None:
        return outs
    return [PatchedGeneration(seq, lp[:, : seq.shape[1] - input_ids.shape[1]].cpu())
            for seq, lp in zip(outs, scores, strict=True)]


def patched_generate(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec | str,
    attention_mask: Tensor | None = None,
    generation: DecodingConfig | None = None,
    *,
    sample_offsets: Sequence[int] | None = None,
    score_tokens: Sequence[int] | None = None,
    **options: Any,
) -> Tensor | PatchedGeneration:
    """Generation of `receiver` with `donor`'s activations patched in per `spec`.

    Returns [batch x samples, prompt + new] (a `PatchedGeneration` with `score_tokens`);
    decoding and eos padding: module docstring.
    """
    return sweep_generate(
        receiver, donor, input_ids, [spec], attention_mask, generation,
        sample_offsets=sample_offsets, score_tokens=score_tokens, **options,
    )[0]
