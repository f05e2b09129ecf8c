"""The naive definition of patched generation and scoring, written to be obviously right.

Each prompt alone, no cache: at every step both models process the whole context, and the
receiver's activation at each part of the spec is replaced, at the positions its rule names at
that step, by the donor's value for the same position. The engine must reproduce this token
for token. It is also the original study's scheme, which `bench/patching.py` times as the
baseline. It shares nothing with the engine but the site table (`architectures.locate`, checked
by `architecture_checks`): its hooks are plain torch hooks, registered here.

- `resid` of layer l is block l's output, `resid_pre` its input;
- `resid_mid` of layer l: the block's output becomes mid' + MLP path(mid'), mid' being the
  patched stream between attention and MLP (the MLP path's modules applied in order);
- a donor value is the donor's activation at the same position (`OtherPrompt`: at the mapped
  position, generated positions aligned right), or the constant of `Zero`/`Mean`;
- the new value is the donor's (alpha = 1) or receiver + alpha * (donor - receiver), in the
  part's head columns only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .architectures import MID_SITE, locate
from .decoding import DecodingConfig
from .donors import Blend, Mean, OtherPrompt, Zero
from .models import Runner, as_runner
from .sampling import choose_tokens, sample_streams
from .spec import PatchSpec
from .sweep import decoding_for, first_samples

Key = tuple[str, int]


def _hook(lm: nn.Module, runner: Runner, key: Key, fn: Callable[[Tensor], Tensor | None]
          ) -> Any:
    """A plain torch hook calling fn(site value) where `key` is computed (None: unchanged)."""
    at = locate(lm, runner.arch, *key)

    def value(full: Tensor) -> Tensor | None:
        if at.columns is None:
            return fn(full)
        lo, hi = at.columns
        new = fn(full[..., lo:hi])
        return None if new is None else torch.cat([full[..., :lo], new, full[..., hi:]], -1)

    if at.read == "input[0]":
        return at.module.register_forward_pre_hook(
            lambda m, args: None if (n := value(args[0])) is None else (n, *args[1:]))
    if at.read == "output[0]":
        return at.module.register_forward_hook(
            lambda m, args, out: None if (n := value(out[0])) is None else (n, *out[1:]))
    return at.module.register_forward_hook(lambda m, args, out: value(out))


def _run(runner: Runner, x: Tensor, hooks: list[tuple[Key, Callable]]) -> Tensor:
    """Logits [len(x), vocab] of one full forward of `x` under plain hooks."""
    handles = []
    try:
        with runner.context():
            for key, fn in hooks:
                handles.append(_hook(runner.lm, runner, key, fn))
            return runner.lm(input_ids=x[None].to(runner.device), use_cache=False).logits[0]
    finally:
        for handle in handles:
            handle.remove()


def _keys(spec: PatchSpec) -> list[Key]:
    return [(p.site, p.layer) for p in spec.parts]


def donor_activations(donor: Runner, x: Tensor, keys: Sequence[Key]) -> dict[Key, Tensor]:
    """The unpatched donor's activation [len(x), width] at every key, on the context `x`."""
    acts: dict[Key, Tensor] = {}

    def keep(key: Key) -> Callable[[Tensor], None]:
        def fn(act: Tensor) -> None:
            acts[key] = act[0]

        return fn

    _run(donor, x, [(key, keep(key)) for key in keys])
    return acts


def patched_logits(
    receiver: Runner,
    x: Tensor,
    spec: PatchSpec,
    patched: Sequence[int],
    donor_value: Callable[[Key, int, Tensor], Tensor],
    alpha: float = 1.0,
) -> Tensor:
    """Receiver logits [len(x), vocab] on the 1-D context `x`, each part of `spec` replaced at
    the positions `patched` by donor_value(key, position, own activation there)."""
    arch = receiver.arch
    size = receiver.head_dim
    lm = receiver.lm

    def new_value(key: Key, heads: Sequence[int] | None, act: Tensor) -> Tensor:
        out = act.clone()
        for p in patched:
            own = act[0, p]
            d = donor_value(key, p, own).to(act)
            mixed = d if alpha == 1.0 else own + alpha * (d - own)
            if heads is None:
                out[0, p] = mixed
            else:
                for h in heads:
                    out[0, p, h * size:(h + 1) * size] = mixed[h * size:(h + 1) * size]
        return out

    hooks: list[tuple[Key, Callable]] = []
    rebuilt: list[tuple[nn.Module, Callable]] = []
    recomputing = [False]  # the MLP path re-run by a resid_mid rebuild is not patched again
    for part in spec.parts:
        key = (part.site, part.layer)
        if part.site != MID_SITE:
            hooks.append((key, lambda act, key=key, heads=part.heads: new_value(key, heads, act)))
            continue
        mid: dict[str, Tensor] = {}

        def read_mid(act: Tensor, key=key, mid=mid) -> None:
            if not recomputing[0]:
                mid["patched"] = new_value(key, None, act)

        def rebuild(block: nn.Module, args: Any, out: Tensor, mid=mid) -> Tensor:
            recomputing[0] = True
            try:
                term = mid["patched"]
                for path in arch.mlp:
                    term = block.get_submodule(path)(term)
                return mid["patched"] + term
            finally:
                recomputing[0] = False

        hooks.append((key, read_mid))
        rebuilt.append((lm.get_submodule(arch.layers)[part.layer], rebuild))
    handles = [block.register_forward_hook(fn) for block, fn in rebuilt]
    try:
        return _run(receiver, x, hooks)
    finally:
        for handle in handles:
            handle.remove()


def _prompt_rows(input_ids: Tensor, attention_mask: Tensor | None) -> list[Tensor]:
    mask = (
        torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.bool()
    )
    return [row[m] for row, m in zip(input_ids, mask, strict=True)]


class _Donor:
    """A donor argument, read naively: per row, the value at a receiver position."""

    def __init__(self, donor: Any) -> None:
        self.alpha = 1.0
        if isinstance(donor, Blend):
            donor, self.alpha = donor.donor, float(donor.alpha)
        self.constant = donor if isinstance(donor, (Zero, Mean)) else None
        self.other = donor if isinstance(donor, OtherPrompt) else None
        model = None if self.constant is not None else (
            donor.model if self.other is not None else donor)
        self.runner = None if model is None else as_runner(model)
        self.prompts = None if self.other is None else _prompt_rows(
            self.other.input_ids, self.other.attention_mask)

    def values_for(self, row: int, prompt: Tensor, extra: Tensor, keys: Sequence[Key]
                   ) -> Callable[[Key, int, Tensor], Tensor]:
        """donor_value for a receiver context prompt + extra (extra: tokens after the prompt)."""
        if self.constant is not None:
            if isinstance(self.constant, Zero):
                return lambda key, p, own: torch.zeros_like(own)
            return lambda key, p, own: self.constant.value(key)
        n = len(prompt)
        donor_prompt = prompt if self.other is None else self.prompts[row]
        m = len(donor_prompt)
        acts = donor_activations(self.runner, torch.cat([donor_prompt, extra]), keys)
        table = None if self.other is None else self.other.position_map

        def position(p: int) -> int:
            if p >= n or table is None:
                return p - n + m
            return table[row][p] % m

        return lambda key, p, own: acts[key][position(p)]

    def maps(self, row: int, p: int) -> bool:
        """Whether receiver prompt position p has a donor position (a map may say None)."""
        table = None if self.other is None else self.other.position_map
        return table is None or table[row][p] is not None


def _patched_positions(spec: PatchSpec, prompt_length: int, length: int, step: int,
                       donor: _Donor, row: int) -> list[int]:
    """The positions of a context of `length` tokens (`prompt_length` of them the prompt) that
    the spec patches in the pass choosing new token `step`."""
    rule = spec.positions
    if rule.kind == "all":
        found = list(range(length))
    elif rule.kind == "prompt":
        found = list(rule.prompt_positions(prompt_length))
    else:
        found = [length - 1] if rule.at_step(step) else []
    return [p for p in found if p >= prompt_length or donor.maps(row, p)]


@torch.inference_mode()
def context_logits(receiver: Any, donor: Any, x: Tensor, spec: PatchSpec | str) -> Tensor:
    """Receiver logits [len(x), vocab] on the 1-D prompt `x` with the spec applied as in the
    first generation step (for `all`: at every position)."""
    spec = PatchSpec.parse(spec)
    r, d = as_runner(receiver), _Donor(donor)
    values = d.values_for(0, x, x[:0], _keys(spec))
    where = _patched_positions(spec, len(x), len(x), 0, d, 0)
    return patched_logits(r, x, spec, where, values, d.alpha)


@torch.inference_mode()
def naive_generate(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec | str,
    attention_mask: Tensor | None = None,
    generation: DecodingConfig | None = None,
    *,
    sample_offsets: Sequence[int] | None = None,
    **options: Any,
) -> Tensor:
    """Same contract as `patched_generate`, computed one prompt, one sample and one token at a
    time; the next token comes from the same sampler and random streams (sampling.py)."""
    spec = PatchSpec.parse(spec)
    r, d = as_runner(receiver), _Donor(donor)
    decoding = decoding_for(r, generation, options)
    eos, samples = decoding.eos_token_id, decoding.num_return_sequences
    rows = _prompt_rows(input_ids, attention_mask)
    first = first_samples(sample_offsets, len(rows))
    generated = []
    for row, (x, first_sample) in enumerate(zip(rows, first, strict=True)):
        for n in range(samples):
            stream = (
                sample_streams([x.tolist()], [first_sample + n], 1, decoding.seed,
                               decoding.max_new_tokens)[0]
                if decoding.do_sample
                else None
            )
            new: list[int] = []
            while len(new) < decoding.max_new_tokens and not (new and new[-1] in eos):
                extra = x.new_tensor(new)
                context = torch.cat([x, extra])
                values = d.values_for(row, x, extra, _keys(spec))
                where = _patched_positions(spec, len(x), len(context), len(new), d, row)
                logits = patched_logits(r, context, spec, where, values, d.alpha)[-1:]
                u = None if stream is None else stream[len(new) : len(new) + 1]
                new.append(int(choose_tokens(logits, decoding, u)[0]))
            generated.append(new)
    width = max(map(len, generated), default=0)
    tail = [g + [decoding.pad_token_id] * (width - len(g)) for g in generated]
    prompts = input_ids.repeat_interleave(samples, dim=0)
    return torch.cat([prompts, prompts.new_tensor(tail).reshape(len(tail), width)], dim=1)


@torch.inference_mode()
def naive_token_logprobs(
    receiver: Any, donor: Any, input_ids: Tensor, spec: PatchSpec | str, tokens: Sequence[int],
    attention_mask: Tensor | None = None, **options: Any,
) -> list[Tensor]:
    """Per row, [new, K] log-probs of `tokens` at each step of `naive_generate`'s greedy reply
    (what `score_tokens=` records)."""
    spec = PatchSpec.parse(spec)
    out = naive_generate(receiver, donor, input_ids, spec, attention_mask, **options)
    r, d = as_runner(receiver), _Donor(donor)
    rows = _prompt_rows(input_ids, attention_mask)
    scores = []
    for row, x in enumerate(rows):
        new = out[row, input_ids.shape[1]:].tolist()
        per_step = []
        for k in range(len(new)):
            extra = x.new_tensor(new[:k])
            context = torch.cat([x, extra])
            where = _patched_positions(spec, len(x), len(context), k, d, row)
            logits = patched_logits(r, context, spec, where, d.values_for(row, x, extra,
                                                                          _keys(spec)), d.alpha)
            per_step.append(torch.log_softmax(logits[-1].double(), -1)[list(tokens)])
        scores.append(torch.stack(per_step))
    return scores


@torch.inference_mode()
def naive_logprobs(
    receiver: Any,
    donor: Any,
    input_ids: Tensor,
    spec: PatchSpec | str,
    continuation_lengths: Sequence[int],
    attention_mask: Tensor | None = None,
) -> list[Tensor]:
    """Per row, log p(x_t) for each continuation token: both models run on x[:t] with the spec
    applied as in generation (the context is the prompt, continuation token c is new token c),
    read at position t-1."""
    spec = PatchSpec.parse(spec)
    r, d = as_runner(receiver), _Donor(donor)
    out = []
    for row, (x, c) in enumerate(zip(_prompt_rows(input_ids, attention_mask),
                                     continuation_lengths, strict=True)):
        n = len(x) - c
        scores = []
        for t in range(n, len(x)):
            values = d.values_for(row, x[:n], x[n:t], _keys(spec))
            where = _patched_positions(spec, n, t, t - n, d, row)
            logits = patched_logits(r, x[:t], spec, where, values, d.alpha)[-1]
            scores.append(torch.log_softmax(logits.double(), dim=-1)[x[t]])
        out.append(torch.stack(scores))
    return out
