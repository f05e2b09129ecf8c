"""Every single patch's effect on a metric, as one tensor: TransformerLens' `get_act_patch_*`
for a model pair, and exact.

    effects = patching_effects(clean, corrupted, batch, "head")   # batch: AttributionBatch
    effects.values        # [layers, positions, heads]: the metric with that one patch
    effects.effect        # values - base

Patch (l, p[, h]) replaces the receiver's `site` of layer l (head h) at context position p
alone, teacher-forced, and scores the batch's continuations with the metric (`patching.
attribution_metrics`: `logprob_diff`, `kl`). It is the patch `site:Ll[.Hh]@prompt[p:p+1]`,
and `patched_logprobs` with that spec gives the same number. Here all patches run in batched
passes: each patch's rows join the batch at their layer (they equal the unpatched rows below
it) and read one donor pass, so the cost is a few forwards of patches x prompts rows instead of
two forwards per patch. Positions index the context (the tokens before the continuation), so
every row must have one context length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .architectures import site_named
from .attribution_metrics import AttributionBatch, Metric, Scored, metric_named
from .batch import causal_mask, check_continuations, prepare
from .cache import SlotCache
from .engine import pass_key
from .errors import PatchingError
from .forward import run_pass
from .passes import EditRows, layout_order, plain_pass, receiver_pass
from .positions import Positions
from .spec import Part
from .sweep import resolve
from .teacher_forced import donor_teacher_values, teacher_inputs


@dataclass(frozen=True)
class PatchingEffects:
    """The metric under each single patch (module docstring)."""

    site: str
    metric: str
    values: Tensor  # [layers, positions] or [layers, positions, heads]
    base: float  # the metric unpatched
    layers: tuple[int, ...]
    positions: tuple[int, ...]  # context positions, 0-based
    heads: tuple[int, ...] | None

    @property
    def effect(self) -> Tensor:
        """How far each patch moves the metric from the unpatched value."""
        return self.values - self.base

    def spec(self, layer: int, position: int, head: int | None = None) -> str:
        """The text form of one patch (what `patched_logprobs` would run for it)."""
        heads = "" if head is None else f".H{head}"
        return f"{self.site}:L{layer}{heads}@prompt[{position}:{position + 1}]"


def _indices(name: str, given: Sequence[int] | None, count: int) -> tuple[int, ...]:
    if given is None:
        return tuple(range(count))
    out = tuple(given)
    bad = [i for i in out if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count]
    if not out or bad or len(set(out)) != len(out):
        raise PatchingError(f"{name} must be distinct ints in 0..{count - 1}, got {list(out)!r}")
    return out


def position_groups(positions: Sequence[int], rows: int, queries: int, pass_cost: int
                    ) -> list[list[int]]:
    """Runs of consecutive positions that share one pass, minimising the total cost.

    A pass for positions p..q computes `rows` rows per position from position p on (slots
    before the earliest patch are the unpatched history's), so merging neighbours trades
    recomputed slots against the fixed cost of a pass; positions[i] needs queries - p slots.
    A dynamic program over the sorted positions (quadratic, positions are few)."""
    ordered = sorted(positions)
    best = [0.0] + [float("inf")] * len(ordered)
    cut = [0] * (len(ordered) + 1)
    for j in range(1, len(ordered) + 1):
        for i in range(j):
            work = rows * (j - i) * (queries - ordered[i])
            if best[i] + pass_cost + work < best[j]:
                best[j], cut[j] = best[i] + pass_cost + work, i
    groups, j = [], len(ordered)
    while j:
        groups.append(ordered[cut[j]:j])
        j = cut[j]
    return groups[::-1]


@torch.inference_mode()
def patching_effects(
    receiver: Any,
    donor: Any,
    batch: AttributionBatch,
    site: str,
    metric: str | Metric = "logprob_diff",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    rows_per_pass: int = 256,
    pass_cost: int = 128,
    progress: bool = False,
) -> PatchingEffects:
    """The metric with each single patch of `site` (module docstring). `layers`, `positions`,
    `heads` default to all; `rows_per_pass` bounds memory (rows of one receiver pass);
    `pass_cost`: what one more pass costs, in rows x positions of compute, which decides how
    many neighbouring positions share a pass (results do not depend on it)."""
    metric = metric_named(metric)
    count = site_named(site).head_count
    r, source, _ = resolve(receiver, donor, [f"{site}:L0" + (".H0" if count else "")])
    config = r.config
    prompts = prepare(batch.input_ids, batch.attention_mask, r.device)
    lengths = check_continuations(batch.continuation_lengths, prompts)
    real = prompts.mask.sum(dim=1).tolist()
    contexts = sorted({n - c for n, c in zip(real, lengths, strict=True)})
    if len(contexts) > 1:
        raise PatchingError(f"patching_effects needs one context length for every row (position "
                            f"p is then one token slot), got lengths {contexts}")
    layer_list = _indices("layers", layers, config.num_hidden_layers)
    position_list = _indices("positions", positions, contexts[0])
    head_list = None if count is None else _indices("heads", heads, getattr(config, count))
    if heads is not None and count is None:
        raise PatchingError(f"heads= is only for a site split into heads, not {site!r}")
    if isinstance(rows_per_pass, bool) or not isinstance(rows_per_pass, int) or rows_per_pass < 1:
        raise PatchingError(f"rows_per_pass must be an int >= 1, got {rows_per_pass!r}")
    B, W = prompts.ids.shape
    C = max(lengths)
    inputs = teacher_inputs(prompts, C, Positions("all"))
    keys = [pass_key(Part(site, layer, None if count is None else (0,))) for layer in layer_list]
    values, slots, have = donor_teacher_values(source, prompts, lengths, keys, inputs)
    L, dev = config.num_hidden_layers, r.device
    history = SlotCache(config, r.head_dim, L, B, W - 1, r.dtype, dev)
    own_hidden, _ = run_pass(r, plain_pass(B, L), inputs.ids, inputs.positions, inputs.mask_for,
                             history)
    own = _log_softmax(r, own_hidden[:, -C:])
    donor_lp = own
    if source.runs and source.prompts is None:
        d = source.runner
        donor_hidden, _ = run_pass(d, plain_pass(B, L), inputs.ids.to(d.device),
                                   inputs.positions.to(d.device),
                                   lambda w: inputs.mask_for(w).to(d.device))
        donor_lp = _log_softmax(d, donor_hidden[:, -C:]).to(dev)
    targets = prompts.ids[:, -C:]
    scored = torch.arange(C, device=dev)[None, :] >= (
        C - torch.tensor(lengths, device=dev)[:, None])
    s = Scored(targets, scored, batch.row_weights(own.dtype, dev), own, donor_lp)
    base = float(metric.value(own, s))
    first = W - torch.tensor(real, device=dev)  # (B,) slot of each row's first real token
    valid = prompts.mask[:, :-1]
    per_pass = max(1, rows_per_pass // B)
    found: dict[tuple[int, int, int | None], float] = {}
    per_position = [(layer, h) for layer in layer_list for h in (head_list or (None,))]
    chunks = []
    for group in position_groups(position_list, len(per_position) * B, W - 1 - int(first.min()),
                                 pass_cost):
        patches = [(layer, p, h) for p in group for layer, h in per_position]
        chunks += [(group[0], patches[i:i + per_pass]) for i in range(0, len(patches), per_pass)]
    for start, chunk in tqdm(chunks, disable=not progress, desc="patching effects"):
        # Slots before the earliest patch are the unpatched history's: run only those after.
        s0 = int(first.min()) + start
        queries = W - 1 - s0
        parts_of = [Part(site, layer, None if h is None else (h,)) for layer, _, h in chunk]
        entry = torch.tensor([pass_key(part)[1] for part in parts_of for _ in range(B)],
                             device=dev)
        order = layout_order(entry, torch.zeros_like(entry, dtype=torch.bool))
        cache_row = torch.empty_like(order)
        cache_row[order] = torch.arange(len(order), device=dev)
        parts = []
        for i, (part, (_, p, _)) in enumerate(zip(parts_of, chunk, strict=True)):
            where = torch.zeros(B, queries, dtype=torch.bool, device=dev)
            where[torch.arange(B, device=dev), first + p - s0] = True
            if have is not None:
                where &= have[:, s0:]
            parts.append(EditRows(pass_key(part), cache_row[i * B:(i + 1) * B],
                                  r.head_columns(site, part.heads), where,
                                  None if slots is None else slots[:, s0:]))
        prompt_of = torch.arange(B, device=dev).repeat(len(chunk))[order]
        plan = receiver_pass(entry[order], torch.zeros_like(order, dtype=torch.bool), prompt_of,
                             prompt_of, B, int(entry.max()), L, parts)
        cache = history.prefix(torch.cat([prompt_of, torch.arange(B, device=dev)]), s0)
        hidden, _ = run_pass(
            r, plan, inputs.ids[:, s0:], inputs.positions[:, s0:],
            lambda window, queries=queries: causal_mask(valid, queries, window), cache, values,
        )
        logprobs = _log_softmax(r, hidden[: len(order), -C:][cache_row])  # patch-major rows
        for i, (layer, p, h) in enumerate(chunk):
            found[(layer, p, h)] = float(metric.value(logprobs[i * B:(i + 1) * B], s))
    out = [found[(layer, p, h)] for layer in layer_list for p in position_list
           for h in (head_list or (None,))]
    shape = (len(layer_list), len(position_list)) + ((len(head_list),) if head_list else ())
    return PatchingEffects(site, metric.name, torch.tensor(out, dtype=torch.float64)
                           .reshape(shape), base, layer_list, position_list, head_list)


def _log_softmax(runner: Any, hidden: Tensor) -> Tensor:
    logits = runner.logits(hidden)
    return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
