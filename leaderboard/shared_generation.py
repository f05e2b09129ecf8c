"""Generate once, for several patch variants of one model pair, what lm-eval asks each for.

The sweep scores variants one after another, each through its own ``simple_evaluate``, and
lm-eval hands every variant the same prompt batches (same requests, same sort, same batch
size). The first variant to ask for a batch runs ``sweep_generate`` for itself and the next
pending variants of its pair: the donor runs once per distinct token history instead of once
per variant, and the receiver rows of all of them form one batch (bench/results/sweep.md).
The others read their outputs back. ``sweep_generate`` returns per spec exactly what
``patched_generate`` returns, so a variant's files do not depend on which path made them;
a batch that was not stored (a variant asking something the first did not) is generated
on demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from patching import DecodingConfig, PatchSpec, sweep_generate

from .variants import Variant

# (ids, mask, shape, decoding, sample offsets): what a generated batch depends on besides spec
_Key = tuple[bytes, bytes, tuple[int, ...], DecodingConfig, tuple[int, ...] | None]


class SharedGeneration:
    """A ``patched_generate`` stand-in shared by the variants of one (receiver, donor) pair.

    ``specs``: the pair's variants still to run, in the order they will run; at most
    ``specs_per_call`` of them are generated together (it bounds the engine's KV caches: up to
    3 x specs x batch rows). Call ``finish(spec)`` when a variant is done (or failed) so
    nothing more is generated or kept for it.
    """

    def __init__(self, specs: Sequence[PatchSpec], specs_per_call: int) -> None:
        if specs_per_call < 1:
            raise ValueError(f"specs_per_call={specs_per_call!r}: expected an int >= 1")
        self._pending = list(dict.fromkeys(specs))
        self._per_call = specs_per_call
        self._stored: dict[_Key, dict[PatchSpec, Tensor]] = {}
        self.call_sizes: list[int] = []  # specs per engine call, in order (for reports, tests)

    def __call__(
        self,
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
        decoding = DecodingConfig.build(generation, **options)
        mask = b"" if attention_mask is None else attention_mask.cpu().numpy().tobytes()
        offsets = None if sample_offsets is None else tuple(sample_offsets)
        key = (input_ids.cpu().numpy().tobytes(), mask, tuple(input_ids.shape), decoding,
               offsets)
        stored = self._stored.get(key, {})
        if spec in stored:
            out = stored.pop(spec).to(input_ids.device)
        else:
            others = [s for s in self._pending if s != spec and s not in stored]
            todo = [spec, *others[: self._per_call - 1]]
            outs = sweep_generate(receiver, donor, input_ids, todo, attention_mask, decoding,
                                  sample_offsets=sample_offsets)
            self.call_sizes.append(len(todo))
            stored.update({s: o.cpu() for s, o in zip(todo[1:], outs[1:], strict=True)})
            out = outs[0]
        if stored:
            self._stored[key] = stored
        else:
            self._stored.pop(key, None)
        return out

    def finish(self, spec: PatchSpec) -> None:
        """Drop a variant that has run: generate nothing more for it and free what is kept."""
        if spec in self._pending:
            self._pending.remove(spec)
        for key in list(self._stored):
            self._stored[key].pop(spec, None)
            if not self._stored[key]:
                del self._stored[key]

    @property
    def stored_outputs(self) -> int:
        """How many generated batches wait for a variant (0 once every variant finished)."""
        return sum(map(len, self._stored.values()))


def patch_spec(variant: Variant) -> PatchSpec:
    """The engine's spec of a patch variant (what ``patched_hf`` builds from its args)."""
    return PatchSpec.parse(variant.spec or "")


def units(variants: list[Variant], together: int) -> dict[str, str]:
    """Variant name -> the unit of work it runs in: up to ``together`` consecutive patch
    variants of one model pair (``run_order``), which one engine pass generates for; a baseline
    (or any variant when ``together`` is 1) is a unit of its own. Workers claim units, so no
    engine pass generates for a variant another worker runs."""
    out, chunk, key = {}, [], None
    for variant in [*run_order(variants), None]:
        pair = None if variant is None else pair_of(variant)
        if chunk and (pair != key or len(chunk) == together or pair is None):
            unit = chunk[0].name if len(chunk) == 1 else f"{chunk[0].name}+{len(chunk) - 1}"
            out.update({v.name: unit for v in chunk})
            chunk = []
        if variant is not None:
            chunk.append(variant)
            key = pair
    return out


def shared_generators(variants: list[Variant], unit_of: dict[str, str], together: int
                      ) -> dict[str, SharedGeneration]:
    """One ``SharedGeneration`` per unit (``units``) of the patch variants still to run; none
    when ``together`` is 1 (each variant generates alone)."""
    if together == 1:
        return {}
    groups: dict[str, list[PatchSpec]] = {}
    for variant in variants:
        if pair_of(variant) is not None:
            groups.setdefault(unit_of[variant.name], []).append(patch_spec(variant))
    return {key: SharedGeneration(specs, together) for key, specs in groups.items()}


def pair_of(variant: Variant) -> tuple[str | None, str | None] | None:
    """The (corrupted label, direction) whose receiver and donor a patch variant runs on;
    None for a baseline, which patches nothing."""
    return (variant.label, variant.direction) if variant.role == "patch" else None


def run_order(variants: list[Variant]) -> list[Variant]:
    """Baselines first, then each model pair's patch variants back to back (config order
    within a pair), so a pair's shared outputs are consumed soon after they are made."""
    first: dict[Any, int] = {}
    for variant in variants:
        first.setdefault(pair_of(variant), len(first))
    return sorted(variants, key=lambda v: first[pair_of(v)])
