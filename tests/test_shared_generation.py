"""``SharedGeneration``: the sweep's stand-in for ``patched_generate``, shared by the variants of
one model pair, must return exactly what ``patched_generate`` returns for each of them while
running the engine once per prompt batch (up to its ``specs_per_call``)."""

from __future__ import annotations

import copy

import pytest
import torch

from finetune.tiny import random_qwen3
from leaderboard.shared_generation import SharedGeneration
from patching import PatchSpec, patched_generate

torch.set_num_threads(1)
NEW = 5
SPECS = [PatchSpec("resid", [1]), PatchSpec("attn", [2]), PatchSpec("head", [2], heads=[1]),
         PatchSpec("mlp", [1], positions="all")]


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    receiver = random_qwen3(0, torch.float64)
    donor = copy.deepcopy(receiver)
    donor.model.layers[1:].load_state_dict(random_qwen3(1, torch.float64).model.layers[1:]
                                           .state_dict())
    return receiver, donor


@pytest.fixture
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two left-padded prompt batches, as lm-eval hands them to every variant."""
    one = (torch.tensor([[5, 6, 7], [0, 8, 9]]), torch.tensor([[1, 1, 1], [0, 1, 1]]))
    two = (torch.tensor([[11, 12], [13, 14]]), torch.ones(2, 2, dtype=torch.long))
    return [one, two]


@pytest.mark.parametrize(("per_call", "expected_calls"), [(4, [4, 4]), (3, [3, 3, 1, 1])])
def test_each_variant_gets_its_own_output_from_shared_engine_calls(
    pair, batches, per_call, expected_calls
):
    receiver, donor = pair
    shared = SharedGeneration(SPECS, per_call)
    for spec in SPECS:  # the sweep: one variant after another, each over every batch
        for ids, mask in batches:
            got = shared(receiver, donor, ids, spec, mask, max_new_tokens=NEW, eos_token_id=[3])
            alone = patched_generate(receiver, donor, ids, spec, mask, max_new_tokens=NEW,
                                     eos_token_id=[3])
            assert torch.equal(got, alone), spec
        shared.finish(spec)
    assert shared.call_sizes == expected_calls
    assert shared.stored_outputs == 0


def test_a_batch_the_first_variant_never_asked_for_is_generated_on_demand(pair, batches):
    receiver, donor = pair
    shared = SharedGeneration(SPECS[:2], 2)
    (ids, mask), (other, other_mask) = batches
    shared(receiver, donor, ids, SPECS[0], mask, max_new_tokens=NEW)
    got = shared(receiver, donor, other, SPECS[1], other_mask, max_new_tokens=NEW)
    assert torch.equal(got, patched_generate(receiver, donor, other, SPECS[1], other_mask,
                                             max_new_tokens=NEW))
    # a different generation length is a different request, never a stored answer
    longer = shared(receiver, donor, ids, SPECS[1], mask, max_new_tokens=NEW + 2)
    assert longer.shape[1] == ids.shape[1] + NEW + 2


def test_a_failed_variant_leaves_nothing_behind(pair, batches):
    receiver, donor = pair
    shared = SharedGeneration(SPECS, 4)
    ids, mask = batches[0]
    shared(receiver, donor, ids, SPECS[0], mask, max_new_tokens=NEW)
    assert shared.stored_outputs == 3
    shared.finish(SPECS[0])
    shared.finish(SPECS[1])  # failed before asking: its stored output is dropped
    assert shared.stored_outputs == 2
    for spec in SPECS[2:]:
        shared.finish(spec)
    assert shared.stored_outputs == 0


def test_units_chunk_each_pairs_patches_and_keep_baselines_alone() -> None:
    from leaderboard.shared_generation import units
    from leaderboard.variants import Variant

    def patch(name: str, label: str, direction: str) -> Variant:
        return Variant.patch(name, label, PatchSpec("resid", [0]), direction)

    variants = [Variant("clean", "clean"), patch("a1", "a", "corrupted_to_clean"),
                Variant("corrupted-a", "corrupted", "a"), patch("a2", "a", "corrupted_to_clean"),
                patch("b1", "a", "clean_to_corrupted"), patch("a3", "a", "corrupted_to_clean")]
    assert units(variants, 2) == {"clean": "clean", "corrupted-a": "corrupted-a",
                                  "a1": "a1+1", "a2": "a1+1", "a3": "a3", "b1": "b1"}
    assert set(units(variants, 1).values()) == {v.name for v in variants}  # each alone
