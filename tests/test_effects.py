"""`patching_effects`: every single patch's metric in batched passes equals one run per patch."""

from __future__ import annotations

import pytest
import torch
from families import random_pair

from patching import OtherPrompt, PatchingError, Zero, patched_logprobs
from patching.attribution_metrics import AttributionBatch
from patching.effects import patching_effects

torch.set_num_threads(1)
IDS = torch.tensor([[11, 12, 13, 14, 15, 40, 41], [0, 21, 22, 23, 24, 25, 50],
                    [31, 32, 33, 34, 35, 60, 61]])
MASK = (IDS > 0).long()
LENGTHS = [2, 1, 2]  # contexts of 5 tokens each
WEIGHTS = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)


@pytest.fixture(scope="module")
def pair():
    return random_pair("qwen3")


def one_run(receiver, donor, spec: str) -> float:
    """The logprob_diff metric of one patched run, computed by hand from its scores."""
    scores = patched_logprobs(receiver, donor, IDS, spec, LENGTHS, MASK).total()
    return float((scores.double() * WEIGHTS).sum())


@pytest.mark.parametrize("site", ["resid", "head", "k", "resid_mid", "resid_pre", "mlp"])
def test_every_patch_equals_one_run_per_patch(pair, site):
    receiver, donor = pair
    batch = AttributionBatch(IDS, LENGTHS, MASK, WEIGHTS)
    for source in (donor, Zero()):
        effects = patching_effects(receiver, source, batch, site, rows_per_pass=16)
        heads = effects.heads or (None,)
        shape = (3, 5) + ((len(heads),) if effects.heads else ())
        assert effects.values.shape == shape
        for i, layer in enumerate(effects.layers):
            for j, p in enumerate(effects.positions):
                for k, h in enumerate(heads):
                    got = effects.values[(i, j, k) if effects.heads else (i, j)]
                    want = one_run(receiver, source, effects.spec(layer, p, h))
                    assert abs(float(got) - want) < 1e-10, effects.spec(layer, p, h)
        assert abs(effects.base - one_run(receiver, receiver, f"{site}:L0"
                                          + (".H0" if effects.heads else "@all"))) < 1e-10
        assert (effects.effect.abs() > 1e-9).any(), "no patch moved the metric"


def test_another_prompt_as_the_donor(pair):
    """Classic activation patching: the receiver itself, reading other contexts of the same
    length (the continuation follows them)."""
    receiver, _ = pair
    contexts = torch.tensor([[51, 52, 53, 54, 55], [61, 62, 63, 64, 65], [71, 72, 73, 74, 75]])
    donor = OtherPrompt(receiver, contexts)
    batch = AttributionBatch(IDS, LENGTHS, MASK, WEIGHTS)
    effects = patching_effects(receiver, donor, batch, "resid", layers=[0, 2], positions=[1, 4])
    assert effects.values.shape == (2, 2)
    for i, layer in enumerate(effects.layers):
        for j, p in enumerate(effects.positions):
            want = one_run(receiver, donor, effects.spec(layer, p))
            assert abs(float(effects.values[i, j]) - want) < 1e-10


def test_bad_input_is_one_line(pair):
    receiver, donor = pair
    ragged = AttributionBatch(IDS, [2, 2, 2], MASK)
    with pytest.raises(PatchingError, match="one context length for every row"):
        patching_effects(receiver, donor, ragged, "resid")
    batch = AttributionBatch(IDS, LENGTHS, MASK)
    with pytest.raises(PatchingError, match=r"positions must be distinct ints in 0\.\.4"):
        patching_effects(receiver, donor, batch, "resid", positions=[5])
    with pytest.raises(PatchingError, match=r"heads= is only for a site split into heads"):
        patching_effects(receiver, donor, batch, "mlp", heads=[0])
    with pytest.raises(PatchingError, match="unknown site 'resdi'"):
        patching_effects(receiver, donor, batch, "resdi")
