"""Metrics that attribution patching differentiates, and the batches they are read from.

A metric maps the receiver's log-probabilities at the scored positions to one number. It has
two faces: `value` is what exact patching measures, `objective` is what the gradient is taken
of. They are the same function for `LogProbDiff`. For `KLFromReceiver` they differ, because
KL(p_own || p_patched) has ZERO gradient at the unpatched point (it is minimal there): a
first-order attribution of it is identically 0. Its objective is therefore a first-order
proxy, the cross-entropy of the patched receiver under the DONOR's next-token distribution,
sum_v p_donor(v) log p_patched(v) = -KL(p_donor || p_patched) + const. Its derivative along
a patch is <p_donor - p_own, dz> (dz: the change of the logits): how far the patch moves the
receiver's distribution towards the donor's. A patch that moves it as far but sideways
scores 0 here while its exact KL is large; the validation report measures how much that
matters. `KLFisher` ("kl_fisher") scores the same KL by its second-order term instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .spec import PatchingError


@dataclass(frozen=True)
class AttributionBatch:
    """Left-padded prompt + continuation rows, teacher-forced.

    Row b scores its last `continuation_lengths[b]` tokens; `weights[b]` multiplies its
    term of the metric (+1 for the corrupted answer, -1 for the correct one in a
    log-prob difference). Default weights are all 1.
    """

    input_ids: Tensor  # [B, n] long
    continuation_lengths: Sequence[int]
    attention_mask: Tensor | None = None
    weights: Tensor | None = None  # [B]

    def __post_init__(self) -> None:
        B = self.input_ids.shape[0] if isinstance(self.input_ids, Tensor) else -1
        if len(self.continuation_lengths) != B:
            raise PatchingError(
                f"continuation_lengths has {len(self.continuation_lengths)} entries "
                f"for a batch of {B}"
            )
        if self.weights is not None and tuple(self.weights.shape) != (B,):
            raise PatchingError(f"weights must have shape ({B},), got {tuple(self.weights.shape)}")

    def row_weights(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        if self.weights is None:
            return torch.ones(len(self.continuation_lengths), dtype=dtype, device=device)
        return self.weights.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class Scored:
    """What a metric reads besides the patched log-probs; constants of the receiver and donor."""

    targets: Tensor  # [B, C] token scored at each column
    scored: Tensor  # [B, C] bool: the column belongs to the row's continuation
    weights: Tensor  # [B]
    own: Tensor  # [B, C, V] the UNPATCHED receiver's log-probs (detached)
    donor: Tensor  # [B, C, V] the donor's log-probs (detached)


class Metric(Protocol):
    """`value`: the exact metric of receiver log-probs [B, C, V] (a 0-d tensor). First-order
    metrics also define `objective(logprobs, s)`, the function attribution differentiates."""

    name: str

    def value(self, logprobs: Tensor, s: Scored) -> Tensor: ...


def _weighted(per_column: Tensor, s: Scored) -> Tensor:
    return (per_column.masked_fill(~s.scored, 0.0).sum(dim=1) * s.weights).sum()


@dataclass(frozen=True)
class LogProbDiff:
    """sum_b w_b log p(continuation_b): with rows (prompt + corrupted answer, w=+1) and
    (prompt + correct answer, w=-1), log p(corrupted answer) - log p(correct answer)."""

    name: str = "logprob_diff"

    def value(self, logprobs: Tensor, s: Scored) -> Tensor:
        return _weighted(logprobs.gather(-1, s.targets[..., None])[..., 0], s)

    def objective(self, logprobs: Tensor, s: Scored) -> Tensor:
        return self.value(logprobs, s)


@dataclass(frozen=True)
class KLFromReceiver:
    """KL(p_own || p_patched) of the next-token distribution, summed over scored positions;
    attributed through the towards-the-donor proxy (module docstring)."""

    name: str = "kl"

    def value(self, logprobs: Tensor, s: Scored) -> Tensor:
        return _weighted((s.own.exp() * (s.own - logprobs)).sum(dim=-1), s)

    def objective(self, logprobs: Tensor, s: Scored) -> Tensor:
        return _weighted((s.donor.exp() * logprobs).sum(dim=-1), s)


@dataclass(frozen=True)
class KLFisher:
    """KL(p_own || p_patched) attributed by its SECOND-order term instead of a proxy.

    Along a patch a_r + alpha (a_d - a_r), KL(alpha) = alpha^2/2 * sum_t E_{y ~ p_own,t}
    [(d/dalpha log p_t(y))^2] + O(alpha^3) (the Fisher information of p_own). One backward pass
    of sum_t log p_t(y_t), with y_t drawn from p_own at every scored position, gives
    d/dalpha log p(y) for every component at once; squared per row and averaged over
    `samples` draws, it is an unbiased estimate of that term (draws at different positions
    are independent with mean-zero scores, so cross terms vanish in expectation). Cost:
    `samples` backward passes; the draws are seeded, so scores are deterministic.
    """

    name: str = "kl_fisher"
    samples: int = 16
    seed: int = 0

    def value(self, logprobs: Tensor, s: Scored) -> Tensor:
        return KLFromReceiver().value(logprobs, s)


METRICS: dict[str, Metric] = {
    "logprob_diff": LogProbDiff(),
    "kl": KLFromReceiver(),
    "kl_fisher": KLFisher(),
}


def metric_named(metric: str | Metric) -> Metric:
    """A metric object from its name (or itself); an unknown name is a one-line error."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise PatchingError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
        return METRICS[metric]
    return metric
