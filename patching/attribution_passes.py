"""The teacher-forced passes attribution patching is made of, and its exact-effect oracle.

Both use the sequence layout of `teacher_forced.patched_logprobs`, so attribution scores and
exact effects are about the same patch:

- positions="all": one pass over x[:-1]; a component is patched at every position (prompt
  included), and each scored token sees the patched history.
- positions="newest": the receiver runs x[:-1] unpatched followed by one COPY of each scored
  position; copy t-1 sees the unpatched history and itself, and only copies are patched. The
  gradient at a copy is thus only the effect of "unpatched history, patched newest" on the
  token it predicts.

`span` is the part of the receiver sequence (and the matching part of the donor's) that a
patch touches: everything for "all", the copies for "newest".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .architectures import site_named
from .attribution_metrics import AttributionBatch, Metric, Scored, metric_named
from .batch import causal_mask, check_continuations, copies_mask, prepare
from .forward import MaskFor, decoder_forward
from .hooks import Key, capturing, site_hooks
from .models import Runner, as_runner
from .spec import PatchingError, check_pair

POSITIONS: tuple[str, ...] = ("all", "newest")  # the rules attribution scores

Component = tuple[str, int, "int | None"]  # (site, layer, head or None)


@dataclass(frozen=True)
class Layout:
    """Receiver and donor inputs of one teacher-forced batch (module docstring)."""

    ids: Tensor  # receiver (B, S)
    positions: Tensor
    mask: MaskFor  # (B, 1, S, S) bool for a sliding window
    donor_ids: Tensor  # x[:-1], (B, n - 1)
    donor_positions: Tensor
    donor_mask: MaskFor
    span: slice  # patched positions, in receiver and donor sequences alike
    targets: Tensor  # [B, C]
    scored: Tensor  # [B, C] bool


def teacher_layout(batch: AttributionBatch, positions: str, device: torch.device) -> Layout:
    """Check the batch (one-line errors) and build both models' inputs."""
    if positions not in POSITIONS:
        raise PatchingError(f"unknown positions {positions!r}; allowed: {', '.join(POSITIONS)}")
    prompts = prepare(batch.input_ids, batch.attention_mask, device)
    lengths = check_continuations(batch.continuation_lengths, prompts)
    C = max(lengths)
    ids, pos, valid = prompts.ids[:, :-1], prompts.positions[:, :-1], prompts.mask[:, :-1]
    scored = torch.arange(C, device=device)[None, :] >= (
        C - torch.tensor(lengths, device=device)[:, None]
    )
    donor = (ids, pos, lambda window: causal_mask(valid, window=window))
    if positions == "all":
        receiver, span = donor, slice(None)
    else:
        receiver = (
            torch.cat([ids, ids[:, -C:]], dim=1),
            torch.cat([pos, pos[:, -C:]], dim=1),
            lambda window: copies_mask(valid, C, window),
        )
        span = slice(-C, None)
    return Layout(*receiver, *donor, span, prompts.ids[:, -C:], scored)


def log_softmax(runner: Runner, hidden: Tensor) -> Tensor:
    """Log-probs in float32 or wider (a bf16 softmax would swamp small effects)."""
    logits = runner.logits(hidden)
    return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def run(
    runner: Runner, lay: Layout, *hooks: AbstractContextManager[Any], donor: bool = False
) -> Tensor:
    """Log-probs [B, C, V] at the scored positions of one pass under `hooks`."""
    ids, positions, mask_for = (
        (lay.donor_ids, lay.donor_positions, lay.donor_mask)
        if donor
        else (lay.ids, lay.positions, lay.mask)
    )
    dev = runner.device
    hidden = decoder_forward(
        runner,
        ids.to(dev),
        positions.to(dev),
        lambda window: mask_for(window).to(dev),
        None,
        *hooks,
    )
    return log_softmax(runner, hidden[:, -lay.targets.shape[1] :])


def all_keys(config: Any, sites: Iterable[str]) -> list[Key]:
    return [(site, layer) for site in sites for layer in range(config.num_hidden_layers)]


@torch.no_grad()
def donor_pass(donor: Runner, lay: Layout, keys: Sequence[Key]) -> tuple[dict[Key, Tensor], Tensor]:
    """The donor's activations at `keys` and its log-probs; no graph is ever built."""
    acts: dict[Key, Tensor] = {}
    logprobs = run(donor, lay, capturing(donor.lm, donor.arch, keys, acts), donor=True)
    return acts, logprobs


def scored_inputs(lay: Layout, batch: AttributionBatch, own: Tensor, donor: Tensor) -> Scored:
    dev = own.device
    return Scored(
        lay.targets.to(dev),
        lay.scored.to(dev),
        batch.row_weights(own.dtype, dev),
        own.detach(),
        donor.detach().to(dev),
    )


def check_components(config: Any, components: Sequence[Component]) -> None:
    for site, layer, head in components:
        count = site_named(site).head_count
        ok = 0 <= layer < config.num_hidden_layers and (
            head is None if count is None else 0 <= head < getattr(config, count)
        )
        if not ok:
            raise PatchingError(f"component {(site, layer, head)!r} does not exist in this model")


def head_columns(runner: Runner, head: int | None) -> slice:
    """The columns of a site's activation that a component owns (all, or one head's slice)."""
    if head is None:
        return slice(None)
    return slice(head * runner.head_dim, (head + 1) * runner.head_dim)


@contextmanager
def _partial_patch(
    r: Runner, lay: Layout, component: Component, donor_act: Tensor, alpha: float
) -> Iterator[None]:
    site, layer, head = component
    cols = head_columns(r, head)

    def edit(key: Key, act: Tensor) -> Tensor:
        new = act.clone()
        here = new[:, lay.span, cols]
        here += alpha * (donor_act[:, lay.span, cols].to(act) - here)
        return new

    with site_hooks(r.lm, r.arch, [(site, layer)], edit):
        yield


@torch.inference_mode()
def exact_effects(
    receiver: Any,
    donor: Any,
    batch: AttributionBatch,
    metric: str | Metric,
    components: Sequence[Component],
    positions: str = "all",
    alpha: float = 1.0,
    measure: str = "value",
) -> Tensor:
    """Exact change of the metric when each component alone moves a fraction `alpha` of the
    way to the donor's activation (alpha=1: the CMAP patch): one receiver pass per component.

    `measure` is "value" (the metric) or "objective" (what attribution differentiates; the
    tests check that attribution is its directional derivative)."""
    if measure not in ("value", "objective"):
        raise PatchingError(f"measure must be 'value' or 'objective', got {measure!r}")
    receiver, donor = as_runner(receiver), as_runner(donor)
    check_pair(receiver.config, donor.config)
    check_components(receiver.config, components)
    lay = teacher_layout(batch, positions, receiver.device)
    acts, donor_lp = donor_pass(
        donor, lay, sorted({(site, layer) for site, layer, _ in components})
    )
    own = run(receiver, lay)
    s = scored_inputs(lay, batch, own, donor_lp)
    f = getattr(metric_named(metric), measure)
    base = f(own, s)
    out = [
        f(run(receiver, lay, _partial_patch(receiver, lay, c, acts[c[:2]], alpha)), s) - base
        for c in components
    ]
    return torch.stack(out) if out else own.new_zeros(0)
