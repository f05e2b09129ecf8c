"""Donor forms: a mean over a dataset (against a hand computation, cached on disk by
fingerprint), and the one-line errors of other prompts and blends."""

from __future__ import annotations

import copy

import pytest
import torch
from families import random_pair
from patch_checks import left_padded_batch

from patching import Blend, OtherPrompt, PatchingError, patched_generate, patched_logprobs
from patching.architectures import locate
from patching.means import mean_activations
from patching.models import as_runner

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair():
    return random_pair("llama")


def hand_mean(model, ids, mask, site: str, layer: int) -> torch.Tensor:
    """Each row alone through the model, its site read by a plain hook, averaged over tokens."""
    runner = as_runner(model)
    at = locate(model, runner.arch, site, layer)
    seen = []
    hook = (at.module.register_forward_pre_hook(lambda m, a: seen.append(a[0][0]))
            if at.read == "input[0]" else
            at.module.register_forward_hook(lambda m, a, out: seen.append(
                (out[0] if at.read == "output[0]" else out)[0])))
    try:
        with torch.no_grad():
            for row, keep in zip(ids, mask.bool(), strict=True):
                model(row[keep][None])
    finally:
        hook.remove()
    return torch.cat(seen).mean(dim=0)


def test_the_mean_is_over_every_real_token(pair):
    _, donor = pair
    ids, mask = left_padded_batch()
    mean = mean_activations(donor, ids, mask, sites=["mlp", "k", "resid_mid"], batch_size=2)
    for site in ("mlp", "k", "resid_mid"):
        for layer in range(3):
            torch.testing.assert_close(mean.values[(site, layer)],
                                       hand_mean(donor, ids, mask, site, layer), rtol=0,
                                       atol=1e-12)
    assert set(mean.values) == {(s, layer) for s in ("mlp", "k", "resid_mid") for layer in range(3)}


def test_the_mean_is_cached_by_fingerprint(pair, tmp_path):
    receiver, donor = pair
    ids, mask = left_padded_batch()
    first = mean_activations(donor, ids, mask, sites=["mlp"], cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    calls = []
    handle = donor.model.embed_tokens.register_forward_hook(lambda *a: calls.append(1))
    try:
        again = mean_activations(donor, ids, mask, sites=["mlp"], cache_dir=tmp_path)
    finally:
        handle.remove()
    assert calls == [] and again.fingerprint == first.fingerprint
    assert all(torch.equal(again.values[k], first.values[k]) for k in first.values)
    # another dataset, another model (one weight moved), or other sites: computed anew
    other_ids = ids.clone()
    other_ids[0, 0] = 99 % donor.config.vocab_size
    moved = copy.deepcopy(donor)
    with torch.no_grad():
        moved.model.layers[2].mlp.down_proj.weight[0, 0] += 1.0
    prints = {mean_activations(donor, other_ids, mask, sites=["mlp"], cache_dir=tmp_path)
              .fingerprint, mean_activations(moved, ids, mask, sites=["mlp"],
                                             cache_dir=tmp_path).fingerprint,
              mean_activations(donor, ids, mask, sites=["attn"], cache_dir=tmp_path)
              .fingerprint, first.fingerprint}
    assert len(prints) == 4 and len(list(tmp_path.iterdir())) == 4
    assert not any(p.suffix == ".tmp" or p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_mean_without_the_site_is_one_line(pair):
    receiver, donor = pair
    ids, mask = left_padded_batch()
    mean = mean_activations(donor, ids, mask, sites=["mlp"])
    with pytest.raises(PatchingError, match=r"the mean donor has no values for attn:L1; it holds "
                                            r"sites \['mlp'\]"):
        patched_generate(receiver, mean, ids, "attn:L1", mask, max_new_tokens=2)


@pytest.mark.parametrize(
    ("donor_ids", "donor_mask", "position_map", "spec", "match"),
    [
        (torch.tensor([[1, 2, 3]] * 3), None, None, "resid:L1@all",
         r"row 0's receiver prompt has 5 tokens and its donor prompt 3: these positions patch "
         r"prompt positions, so give OtherPrompt\(position_map=\.\.\.\)"),
        (torch.tensor([[1, 2, 3]] * 2), None, None, "resid:L1",
         r"the donor has 2 prompts for 3 receiver prompts"),
        (torch.tensor([[1, 2, 3]] * 3), None, [[0, 1, 2, 0, 1]] * 3, "resid:L1@all",
         r"position_map row 1 has 5 entries for a 3-token receiver prompt"),
        (torch.tensor([[1, 2, 3]] * 3), None, [[0, 1, 2, 3, 1], [0, 1, 2], [0]], "resid:L1@all",
         r"position_map\[0\]\[3\] = 3 is not a position of the 3-token donor prompt"),
    ],
)
def test_other_prompts_that_cannot_align_are_one_line(pair, donor_ids, donor_mask, position_map,
                                                      spec, match):
    receiver, donor = pair
    ids, mask = left_padded_batch()
    source = OtherPrompt(donor, donor_ids, donor_mask, position_map)
    with pytest.raises(PatchingError, match=match) as info:
        patched_generate(receiver, source, ids, spec, mask, max_new_tokens=2)
    assert "\n" not in str(info.value)


def test_newest_positions_align_prompts_of_any_length(pair):
    """Only prompt positions need a map: `newest` reads the donor's newest position."""
    receiver, donor = pair
    ids, mask = left_padded_batch()
    source = OtherPrompt(donor, torch.tensor([[1, 2, 3]] * 3))
    patched_generate(receiver, source, ids, "resid:L1", mask, max_new_tokens=2)
    scores = patched_logprobs(receiver, source, torch.cat([ids, ids[:, :1] + 5], 1), "mlp:L1",
                              [1, 1, 1], torch.cat([mask, torch.ones_like(mask[:, :1])], 1))
    assert scores.logprobs.shape == (3, 1)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "0.5", True])
def test_a_blend_needs_a_finite_number(pair, alpha):
    with pytest.raises(PatchingError, match="alpha must be a finite number"):
        Blend(pair[1], alpha)
