"""Every decoder family in `patching.architectures`, on tiny random float64 pairs.

For each family: the table entry checks out against the model (`check_architecture`); the
engine equals the naive reference token for token at every site x position mode x direction,
and its teacher-forced log-probs within 1e-10; a patch of an identical block changes nothing
(against the model's own `generate`, an independent check of the engine's masks); every site's
patch writes the donor's values; a LoRA adapter pair over one base works. Sliding windows (3
tokens) are shorter than the 5-token prompt, and a test shows the window changes tokens.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from families import FAMILIES, random_model, random_pair
from patch_checks import assert_patch_writes_donor, left_padded_batch
from peft import LoraConfig, get_peft_model

from patching import (
    PatchingError,
    PatchSpec,
    adapter_pair,
    architecture_for,
    check_architecture,
    patched_generate,
    patched_logprobs,
    sweep_generate,
)
from patching.architectures import SITES, check_weight_paths
from patching.reference import naive_generate, naive_logprobs

torch.set_num_threads(1)
NEW = 6
HEADS = [1, 3]
POSITIONS = ["newest", "all"]
SLIDING = [name for name, family in FAMILIES.items() if family.slides]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pair(family):
    return random_pair(family)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_batch()


def every_spec(layers=(1, 2)) -> list[PatchSpec]:
    return [
        PatchSpec(site, list(layers), HEADS if SITES[site].head_count else None, positions)
        for site in SITES
        for positions in POSITIONS
    ]


def own_generation(model, ids, mask) -> torch.Tensor:
    return model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)


def test_table_entry_checks_out(pair):
    check_architecture(pair[0], atol=1e-10)


def test_weight_check_catches_wrong_entries():
    """The weight facts are checked, not trusted: OLMo 2 without its note that heads share a
    query norm, and a family whose attention path misses its input norm, both fail."""
    olmo = random_model("olmo2")
    entry = architecture_for(olmo.config)
    with pytest.raises(PatchingError, match=r"changed heads \[0, 1, 2, 3\]"):
        check_weight_paths(olmo, dataclasses.replace(entry, head_weights_unsupported=None),
                           atol=1e-10)
    llama = random_model("llama")
    entry = architecture_for(llama.config)
    with pytest.raises(PatchingError, match="input_layernorm.weight of layer 0 lies on 0"):
        check_weight_paths(llama, dataclasses.replace(entry, attention=("self_attn",)))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_engine_equals_naive_definition_everywhere(pair, batch, direction):
    receiver, donor = pair if direction == "forward" else pair[::-1]
    specs = every_spec()
    got = sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW)
    own = own_generation(receiver, *batch)
    for spec, out in zip(specs, got, strict=True):
        want = naive_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
        assert torch.equal(out, want), spec
        assert not torch.equal(out, own), f"{spec} changed nothing"


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_teacher_forced_equals_naive_definition(pair, batch, direction):
    """Within 1e-10, except under eager attention (Gemma 2 has no other): transformers' eager
    kernel takes its softmax in float32, whose rounding depends on where the masked keys sit,
    and the "newest" copies sit elsewhere than in the naive run (measured: ~3e-7)."""
    receiver, donor = pair if direction == "forward" else pair[::-1]
    atol = 1e-10 if receiver.config._attn_implementation == "sdpa" else 1e-6
    ids = torch.cat([batch[0], batch[0][:, :3] + 40], dim=1)
    mask = torch.cat([batch[1], torch.ones_like(batch[1][:, :3])], dim=1)
    lengths = [3, 2, 3]
    for spec in every_spec():
        got = patched_logprobs(receiver, donor, ids, spec, lengths, mask).logprobs
        want = naive_logprobs(receiver, donor, ids, spec, lengths, mask)
        for row, (scores, c) in enumerate(zip(want, lengths, strict=True)):
            torch.testing.assert_close(got[row, -c:], scores, rtol=0, atol=atol)


def test_patching_an_identical_block_changes_nothing(pair, batch):
    """Against the model's own `generate` on each prompt alone (transformers' batched Gemma 2
    generate returns token 0 for left-padded rows, so padding is left out of the reference)."""
    receiver, donor = pair
    ids, mask = batch
    alone = [
        own_generation(receiver, row[m][None], torch.ones(1, int(m.sum())))[0, int(m.sum()):]
        for row, m in zip(ids, mask.bool(), strict=True)
    ]
    specs = every_spec(layers=[0])
    for out in sweep_generate(receiver, donor, ids, specs, mask, max_new_tokens=NEW):
        for new, want in zip(out[:, ids.shape[1]:], alone, strict=True):
            assert torch.equal(new, want)


def test_every_site_patch_writes_the_donor_values(pair, batch):
    for spec in every_spec(layers=[1])[1::2]:  # positions "all": every position is written
        assert_patch_writes_donor(*pair, batch[0][:1], spec)


def test_lora_adapter_pair_over_one_base(family, batch):
    base = random_model(family, 0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    torch.manual_seed(2)
    peft_model = get_peft_model(base, config)
    clean, corrupted = adapter_pair(peft_model)
    spec = PatchSpec("mlp", [2], positions="newest")
    got = patched_generate(clean, corrupted, batch[0], spec, batch[1], max_new_tokens=NEW)
    want = naive_generate(clean, corrupted, batch[0], spec, batch[1], max_new_tokens=NEW)
    assert torch.equal(got, want)
    with peft_model.disable_adapter():
        assert not torch.equal(got, own_generation(peft_model, *batch)), "the adapter did nothing"


@pytest.mark.parametrize("family_name", SLIDING)
def test_the_sliding_window_changes_tokens(family_name, batch):
    """Without this, a wrong window mask could pass the tests above unnoticed."""
    windowed = random_model(family_name, 0)
    unbounded = random_model(family_name, 0, sliding_window=64)
    assert not torch.equal(own_generation(windowed, *batch), own_generation(unbounded, *batch))


def test_families_differ_is_a_one_line_error(batch):
    llama, mistral = random_model("llama", 0), random_model("mistral", 0)
    with pytest.raises(PatchingError, match="different families") as err:
        patched_generate(llama, mistral, batch[0], PatchSpec("resid", [1]), batch[1])
    assert "\n" not in str(err.value)


def test_unknown_family_is_a_one_line_error():
    config = random_model("llama", 0).config
    config.model_type = "gpt2"
    with pytest.raises(PatchingError, match="model type 'gpt2' has no architecture entry"):
        architecture_for(config)
