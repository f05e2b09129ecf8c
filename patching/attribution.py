"""Attribution patching (AtP): every component's CMAP effect from one backward pass.

Exact cross-model patching costs one patched run per component (36 layers x 32 heads =
1,152 for Qwen3-4B). AtP (Nanda 2022; Kramar et al. 2024, "AtP*") linearises it:

    score(c) = sum over patched positions p of (a_donor(c,p) - a_receiver(c,p)) . dM/da(c,p)

the directional derivative of the metric M along the patch, for every component at once:
one donor forward (no grad), one receiver forward and one backward. Positions follow
`patched_logprobs` (see `attribution_passes`): "all" (the default, the validation's) sums
over every position of the teacher-forced sequence; "newest" gives each scored token the
derivative of patching only the position that predicts it.

Metrics (`attribution_metrics`): "logprob_diff" is first-order AtP as above. KL of the
next-token distribution has zero gradient at the unpatched point, so "kl" differentiates a
towards-the-donor proxy instead, and "kl_fisher" scores KL by its second-order term from
seeded samples (one backward pass each).

AtP* parts: GradDrop is implemented (`graddrop=True`, below; first-order metrics only). The
attention-softmax recompute is not needed: it fixes AtP for QUERY/KEY inputs of attention,
whose effect goes through a saturating softmax; our sites are outputs (block, attention, MLP,
per-head o_proj input), which the softmax only precedes.

GradDrop (AtP*, against cancelling paths): for each layer l, the backward pass runs again
with the gradient through layer l's residual contribution (its attention and MLP outputs)
set to zero, forward unchanged; a component's GradDrop score is the mean over the other
L-1 layers of |score with layer l dropped|. A component whose direct and indirect effects
cancel scores ~0 in plain AtP but not here. Cost: L more backward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .architectures import RESIDUAL_TERMS, site_named
from .attribution_metrics import AttributionBatch, KLFisher, Metric, Scored, metric_named
from .attribution_passes import (
    Component,
    Layout,
    all_keys,
    donor_pass,
    run,
    scored_inputs,
    teacher_layout,
)
from .hooks import Key, site_hooks
from .models import Runner, as_runner
from .spec import PatchingError, check_pair

GATED = RESIDUAL_TERMS  # a block's contributions to the residual stream, for GradDrop
# The sites attribution scores: outputs the attention softmax only precedes (see above); query
# and key inputs would need AtP*'s softmax recompute, which is not implemented.
ATTRIBUTED_SITES: tuple[str, ...] = ("resid", "attn", "mlp", "head")


@dataclass(frozen=True)
class AttributionScores:
    """Scores per site: [layers], or [layers, heads] for a site split into heads.

    `graddrop` holds the GradDrop scores (same shapes, >= 0) when requested; `base` is the
    unpatched metric value.
    """

    metric: str
    positions: str
    scores: dict[str, Tensor]
    graddrop: dict[str, Tensor] | None
    base: float

    def components(self, site: str) -> list[Component]:
        scores = self.scores[site]
        if scores.dim() == 2:
            return [
                (site, layer, h) for layer in range(scores.shape[0]) for h in range(scores.shape[1])
            ]
        return [(site, layer, None) for layer in range(scores.shape[0])]

    def values(self, site: str, graddrop: bool = False) -> Tensor:
        """Flat scores of a site, in `components(site)` order."""
        table = self.graddrop if graddrop else self.scores
        if table is None:
            raise PatchingError("these scores were computed without graddrop=True")
        return table[site].reshape(-1)

    def ranked(self, site: str, graddrop: bool = False) -> list[tuple[Component, float]]:
        """Components of a site by |score|, largest first; ties keep layer/head order."""
        pairs = list(zip(self.components(site), self.values(site, graddrop).tolist(), strict=True))
        return sorted(pairs, key=lambda cv: -abs(cv[1]))


class _GradGate(torch.autograd.Function):
    """Identity forward; backward zeroes the gradient while `state[0]` names this layer."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, layer: int, state: list[int | None]) -> Tensor:
        ctx.layer, ctx.state = layer, state
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return (torch.zeros_like(grad) if ctx.state[0] == ctx.layer else grad), None, None


@contextmanager
def _grad_from_embeddings(runner: Runner) -> Iterator[None]:
    """Every activation gets a graph even when the weights are frozen (a PEFT base)."""
    emb = runner.lm.get_input_embeddings()
    handle = emb.register_forward_hook(lambda m, a, out: out.detach().requires_grad_(True))
    try:
        yield
    finally:
        handle.remove()


def _receiver_graph(
    r: Runner, lay: Layout, keys: list[Key], gate: list[int | None] | None
) -> tuple[Tensor, dict[Key, Tensor]]:
    """Receiver log-probs with a graph, and its activations at `keys` (plus the GradDrop
    gates on every block's attention and MLP outputs when `gate` is given)."""
    store: dict[Key, Tensor] = {}
    hooked = keys + ([k for k in all_keys(r.config, GATED) if k not in keys] if gate else [])

    def edit(key: Key, act: Tensor) -> Tensor | None:
        store[key] = act
        return _GradGate.apply(act, key[1], gate) if gate and key[0] in GATED else None

    with torch.enable_grad():
        logprobs = run(r, lay, _grad_from_embeddings(r), site_hooks(r.lm, r.arch, hooked, edit))
    return logprobs, store


def _dot(
    runner: Runner,
    keys: list[Key],
    grads: Sequence[Tensor | None],
    deltas: dict[Key, Tensor],
    span: slice,
) -> dict[str, Tensor]:
    """Per-site tables [rows, layers(, heads)] of delta . grad summed over positions."""
    L = runner.config.num_hidden_layers
    out: dict[str, Tensor] = {}
    for key, grad in zip(keys, grads, strict=True):
        site, layer = key
        delta = deltas[key]
        B = delta.shape[0]
        count = site_named(site).head_count
        H = getattr(runner.config, count) if count else None
        table = out.setdefault(site, delta.new_zeros((B, L) if H is None else (B, L, H)))
        if grad is None:  # the metric does not depend on this activation
            continue
        per_row = (delta * grad[:, span].to(delta.dtype)).sum(dim=1)  # (B, width)
        if H is None:
            table[:, layer] = per_row.sum(dim=-1)
        else:
            table[:, layer] = per_row.view(B, H, runner.head_dim).sum(dim=-1)
    return out


def _fisher(
    m: KLFisher, logprobs: Tensor, s: Scored, grad_of: Callable[[Tensor, bool], dict[str, Tensor]]
) -> dict[str, Tensor]:
    """The second-order KL term of every component (KLFisher's docstring)."""
    probs = s.own.exp()
    B, C, V = probs.shape
    gen = torch.Generator(device=probs.device).manual_seed(m.seed)
    total: dict[str, Tensor] = {}
    for i in range(m.samples):
        y = torch.multinomial(probs.reshape(-1, V), 1, generator=gen).view(B, C)
        sampled = logprobs.gather(-1, y[..., None])[..., 0].masked_fill(~s.scored, 0.0).sum()
        for site, per_row in grad_of(sampled, i < m.samples - 1).items():
            total[site] = total.get(site, 0) + per_row.square()
    return {
        site: 0.5 * torch.einsum("b,b...->...", s.weights.to(t), t) / m.samples
        for site, t in total.items()
    }


def attribution_scores(
    receiver: Any,
    donor: Any,
    batch: AttributionBatch,
    metric: str | Metric,
    sites: Sequence[str] = ATTRIBUTED_SITES,
    positions: str = "all",
    graddrop: bool = False,
) -> AttributionScores:
    """AtP scores of every layer (and head) of `sites` for patching donor into receiver.

    `metric`: "logprob_diff", "kl", "kl_fisher" or a Metric (attribution_metrics). Gradients
    flow through the receiver only; the donor runs under no_grad and no parameter's .grad is
    touched.
    """
    m = metric_named(metric)
    if graddrop and isinstance(m, KLFisher):
        raise PatchingError("graddrop applies to first-order scores, not to kl_fisher")
    r, d = as_runner(receiver), as_runner(donor)
    check_pair(r.config, d.config)
    for site in sites:
        site_named(site)
        if site not in ATTRIBUTED_SITES:
            raise PatchingError(f"attribution scores sites {', '.join(ATTRIBUTED_SITES)}, not "
                                f"{site!r} (use patching.effects for exact effects there)")
    L = r.config.num_hidden_layers
    if graddrop and L < 2:
        raise PatchingError("graddrop needs a model with at least 2 layers")
    lay = teacher_layout(batch, positions, r.device)
    keys = all_keys(r.config, dict.fromkeys(sites))
    donor_acts, donor_lp = donor_pass(d, lay, keys)
    gate: list[int | None] | None = [None] if graddrop else None
    logprobs, store = _receiver_graph(r, lay, keys, gate)
    s = scored_inputs(lay, batch, logprobs, donor_lp)
    wide = torch.promote_types(logprobs.dtype, torch.float32)
    with torch.no_grad():
        deltas = {
            k: (
                donor_acts[k][:, lay.span].to(store[k].device, wide)
                - store[k][:, lay.span].to(wide)
            )
            for k in keys
        }
        base = float(m.value(logprobs.detach(), s))
    inputs = [store[k] for k in keys]

    def grad_of(output: Tensor, retain: bool) -> dict[str, Tensor]:
        grads = torch.autograd.grad(output, inputs, retain_graph=retain, allow_unused=True)
        return _dot(r, keys, grads, deltas, lay.span)

    if isinstance(m, KLFisher):
        fisher = _fisher(m, logprobs, s, grad_of)
        return AttributionScores(m.name, positions, fisher, None, base)
    objective = m.objective(logprobs, s)

    def backward(retain: bool) -> dict[str, Tensor]:
        return {site: t.sum(dim=0) for site, t in grad_of(objective, retain).items()}

    scores = backward(retain=graddrop)
    dropped = None
    if gate is not None:
        per_layer = []
        for layer in range(L):
            gate[0] = layer
            per_layer.append(backward(retain=layer < L - 1))
        dropped = {}
        for site in scores:
            stack = torch.stack([t[site].abs() for t in per_layer])  # [dropped layer, L, ...]
            own = torch.eye(L, dtype=torch.bool, device=stack.device)
            own = own.view(L, L, *([1] * (stack.dim() - 2)))
            dropped[site] = stack.masked_fill(own, 0.0).sum(dim=0) / (L - 1)
    return AttributionScores(m.name, positions, scores, dropped, base)


def top_heads(
    receiver: Any,
    donor: Any,
    batch: AttributionBatch,
    k: int,
    metric: str | Metric = "logprob_diff",
    among: Collection[tuple[int, int]] | None = None,
    graddrop: bool = False,
) -> list[tuple[int, int]]:
    """The k (layer, head) pairs (of `among`, default all) with the largest |AtP score|: the
    sweep's prefilter, so exact autoregressive CMAP runs only on those. `batch` holds the
    teacher-forced rows (`attribution_data.answer_pair_batch` for related math)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PatchingError(f"k must be an int >= 1, got {k!r}")
    scores = attribution_scores(receiver, donor, batch, metric, ("head",), graddrop=graddrop)
    pairs = [(layer, head) for (_, layer, head), _ in scores.ranked("head", graddrop)]
    return [p for p in pairs if among is None or p in among][:k]
