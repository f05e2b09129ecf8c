"""Where the patched-in activations come from: the `donor` argument of every patching call.

- a model (a transformers causal LM, a PeftModel or an `AdapterSide`): the study's cross-model
  patch; the donor reads the same tokens as the receiver;
- `OtherPrompt(model, input_ids, attention_mask, position_map)`: a model (the receiver itself
  for classic activation patching) reading ANOTHER prompt per row, followed by the tokens the
  patched receiver generates. Generated positions align right (the donor's newest position is
  the receiver's); prompt positions align right too when a row's two prompts have the same
  length, else a `position_map` says, per row and receiver prompt position, which donor
  position it reads (None: not patched);
- `Zero()`: zero ablation;
- `Mean(values)`: mean ablation, a vector per (site, layer) (`patching.means` computes and
  caches one over a dataset);
- `Blend(donor, alpha)`: receiver + alpha * (donor - receiver) for any donor above (alpha = 1
  is the donor itself, exactly; 0 changes nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .batch import Prompts, prepare
from .errors import PatchingError
from .hooks import Key
from .models import Runner, as_runner


@dataclass(frozen=True)
class OtherPrompt:
    """A model reading other prompts (module docstring); rows pair with the receiver's."""

    model: Any
    input_ids: Tensor  # [B, P'] left-padded donor prompts, one per receiver prompt
    attention_mask: Tensor | None = None
    position_map: Sequence[Sequence[int | None]] | None = None


@dataclass(frozen=True)
class Zero:
    """Zero ablation: every patched activation becomes 0."""


@dataclass(frozen=True)
class Mean:
    """Mean ablation: `values[(site, layer)]` is the [width] vector patched in there."""

    values: Mapping[Key, Tensor]
    fingerprint: str = ""  # what it was computed from (patching.means)

    def value(self, key: Key) -> Tensor:
        """The vector at `key`; the stream entering block j is resid_pre:Lj and resid:L(j-1)."""
        before = ("resid", key[1] - 1)
        if key not in self.values and key[0] == "resid_pre" and before in self.values:
            return self.values[before]
        if key not in self.values:
            have = sorted({site for site, _ in self.values})
            raise PatchingError(
                f"the mean donor has no values for {key[0]}:L{key[1]}; it holds sites {have} "
                "(compute it with patching.means.mean_activations over these sites)"
            )
        return self.values[key]


@dataclass(frozen=True)
class Blend:
    """receiver + alpha * (donor - receiver), for `donor` any other donor form."""

    donor: Any
    alpha: float

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(self.alpha):
            raise PatchingError(f"alpha must be a finite number, got {self.alpha!r}")
        if isinstance(self.donor, Blend):
            raise PatchingError("Blend of a Blend: give one alpha")


@dataclass(frozen=True)
class DonorSource:
    """A donor argument resolved against the receiver: a model run in lockstep (`runner`,
    with its own prompts for `OtherPrompt`), or constant values (`constant`)."""

    runner: Runner | None
    prompts: Prompts | None = None  # OtherPrompt: the donor's own prompts
    position_map: Sequence[Sequence[int | None]] | None = None
    constant: Zero | Mean | None = None
    alpha: float = 1.0

    @property
    def runs(self) -> bool:
        """Whether a donor model runs (else the patched values are constants)."""
        return self.runner is not None

    def constant_value(self, key: Key, width: int, like: Tensor) -> Tensor:
        """(width,) the constant patched in at `key`, in `like`'s dtype and device."""
        if isinstance(self.constant, Zero):
            return like.new_zeros(width)
        value = self.constant.value(key)
        if value.shape != (width,):
            raise PatchingError(
                f"the mean donor's {key[0]}:L{key[1]} is {tuple(value.shape)}, the receiver's "
                f"activation there is ({width},)"
            )
        return value.to(like)


def resolve_donor(donor: Any) -> DonorSource:
    """The internal form of a `donor` argument (module docstring); one-line errors."""
    alpha = 1.0
    if isinstance(donor, Blend):
        donor, alpha = donor.donor, float(donor.alpha)
    if isinstance(donor, (Zero, Mean)):
        return DonorSource(None, constant=donor, alpha=alpha)
    if isinstance(donor, OtherPrompt):
        runner = as_runner(donor.model)
        prompts = prepare(donor.input_ids, donor.attention_mask, runner.device)
        return DonorSource(runner, prompts, donor.position_map, alpha=alpha)
    return DonorSource(as_runner(donor), alpha=alpha)


def donor_positions(position_map: Sequence[Sequence[int | None]] | None, n: Sequence[int],
                    m: Sequence[int], needs_prompt: bool, what: str = "prompt"
                    ) -> list[list[int | None]]:
    """Per row, the donor position each receiver prompt position reads (None: not patched),
    for receiver and donor prompts of n[b] and m[b] real tokens: aligned right, or as
    `position_map` says. `needs_prompt`: the rule patches prompt positions, so a row whose two
    prompts differ in length needs a map."""
    B = len(n)
    if len(m) != B:
        raise PatchingError(f"the donor has {len(m)} {what}s for {B} receiver {what}s; give "
                            f"one donor {what} per receiver {what}")
    if position_map is not None and len(position_map) != B:
        raise PatchingError(f"position_map has {len(position_map)} rows for {B} {what}s")
    out = []
    for b in range(B):
        if position_map is None:
            if n[b] != m[b] and needs_prompt:
                raise PatchingError(
                    f"row {b}'s receiver {what} has {n[b]} tokens and its donor {what} {m[b]}: "
                    f"these positions patch {what} positions, so give "
                    "OtherPrompt(position_map=...) or prompts of one length"
                )
            out.append([p - n[b] + m[b] if p - n[b] + m[b] >= 0 else None for p in range(n[b])])
            continue
        mapped = list(position_map[b])
        if len(mapped) != n[b]:
            raise PatchingError(f"position_map row {b} has {len(mapped)} entries for a "
                                f"{n[b]}-token receiver {what}")
        for p, q in enumerate(mapped):
            if q is not None and (isinstance(q, bool) or not isinstance(q, int)
                                  or not -m[b] <= q < m[b]):
                raise PatchingError(
                    f"position_map[{b}][{p}] = {q!r} is not a position of the {m[b]}-token "
                    f"donor {what} (0..{m[b] - 1}, or negative from its end)")
        out.append([None if q is None else q % m[b] for q in mapped])
    return out


def prompt_slots(receiver: Prompts, donor: Prompts, position_map: Sequence[Sequence[int | None]]
                 | None, needs_prompt: bool) -> tuple[Tensor, Tensor]:
    """For each receiver prompt slot, the donor prompt slot it reads: ((B, P) long, (B, P) bool
    valid), slots being positions in the left-padded batches (`donor_positions`)."""
    B, P = receiver.ids.shape
    Q = donor.ids.shape[1]
    n = receiver.mask.sum(dim=1).tolist()
    m = donor.mask.sum(dim=1).tolist()
    table = donor_positions(position_map, n, m, needs_prompt)
    slots = torch.zeros(B, P, dtype=torch.long)
    valid = torch.zeros(B, P, dtype=torch.bool)
    for b, mapped in enumerate(table):
        for p, q in enumerate(mapped):
            if q is not None:
                slots[b, P - n[b] + p], valid[b, P - n[b] + p] = Q - m[b] + q, True
    return slots.to(receiver.ids.device), valid.to(receiver.ids.device)
