"""Checks shared by the engine's test files: the left-padded test batch, and the guard that a
patch really writes the donor's values at its site (a patch that writes nothing is caught)."""

from __future__ import annotations

import torch

from patching import PatchSpec
from patching.hooks import capturing, patching
from patching.models import as_runner
from patching.plans import build_plans, patch_edit


def left_padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts of 5, 3 and 1 tokens, as (ids, attention mask)."""
    ids = torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23], [0, 0, 0, 0, 31]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    return ids, mask


def assert_patch_writes_donor(receiver, donor, ids: torch.Tensor, spec: PatchSpec) -> None:
    """After the patch hook, the site (of `spec`'s single layer, at every position) holds the
    donor's values, only in the patched heads for a head site, and the logits move."""
    assert spec.positions == "all" and len(spec.layers) == 1, spec
    r, d = as_runner(receiver), as_runner(donor)
    key = (spec.site, spec.layers[0])
    donor_acts, own, seen = {}, {}, {}
    with capturing(d.lm, d.arch, [key], donor_acts):
        donor(ids)
    with capturing(r.lm, r.arch, [key], own):
        clean = receiver(ids).logits
    rows = torch.arange(ids.shape[0])
    plans = build_plans([(spec, rows, rows)], r, [0, 0, 0])
    with (
        patching(r.lm, r.arch, plans, patch_edit(plans, donor_acts)),
        capturing(r.lm, r.arch, [key], seen),
    ):
        patched = receiver(ids).logits
    after, want, before = seen[key], donor_acts[key], own[key]  # (B, T, width)
    assert not torch.equal(want, before), spec
    cols = torch.ones(after.shape[-1], dtype=torch.bool)
    if spec.heads is not None:
        head = torch.arange(after.shape[-1]) // r.head_dim  # the head each column belongs to
        cols = head.unsqueeze(-1).eq(torch.tensor(spec.heads)).any(-1)
        assert torch.equal(after[..., ~cols], before[..., ~cols]), spec
    assert torch.equal(after[..., cols], want[..., cols]), spec
    assert not torch.allclose(patched, clean), spec
