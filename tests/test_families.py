"""Every decoder family in `patching.architectures`, on tiny random float64 pairs.

For each family: the table entry checks out against the model (`check_architecture`); the
engine equals the naive reference token for token at every site x positions rule x direction,
for multi-part specs and for every donor form (zero, mean, blend, another prompt with and
without a position map), and its teacher-forced log-probs within 1e-10; a patch of an
identical block changes nothing (against the model's own `generate`, an independent check of
the engine's masks); every site's patch writes the donor's values; a LoRA adapter pair over
one base works. Sliding windows (3 tokens) are shorter than the 5-token prompt, and a test
shows the window changes tokens. The table of test models must cover every family entry.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from families import FAMILIES, random_model, random_pair
from patch_checks import RULES, assert_patch_writes_donor, every_spec, left_padded_batch
from peft import LoraConfig, get_peft_model

from patching import (
    ARCHITECTURES,
    Blend,
    Mean,
    OtherPrompt,
    PatchingError,
    PatchSpec,
    Zero,
    adapter_pair,
    architecture_for,
    check_architecture,
    patched_generate,
    patched_logprobs,
    sweep_generate,
)
from patching.architecture_checks import check_weight_paths
from patching.reference import naive_generate, naive_logprobs

torch.set_num_threads(1)
NEW = 5
MULTI = ["attn:L1 + mlp:L2", "resid_pre:L1 + head:L2.H0,3@all", "q:L1.H1 + resid_mid:L2@steps[0:2]",
         "k:L2.H1 + v:L1.H0 + resid:L1@prompt[:2]"]
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


def own_generation(model, ids, mask) -> torch.Tensor:
    return model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)


def test_every_family_entry_has_a_test_model():
    """A new ARCHITECTURES entry without a tiny model here fails, so it cannot go unchecked."""
    covered = {t for arch in ARCHITECTURES for t in arch.model_types}
    assert covered == set(FAMILIES)


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


def test_site_check_catches_wrong_entries():
    """A key site that is really the query projection, or a resid_mid read after the MLP's
    norm, is caught by check_architecture."""
    llama = random_model("llama")
    entry = architecture_for(llama.config)
    wrong_k = dataclasses.replace(entry, sites=entry.sites | {"k": entry.sites["q"]})
    with pytest.raises(PatchingError, match="site 'k' of layer 0 is 64 wide, expected 32"):
        check_architecture(llama, wrong_k, atol=1e-10)
    at = dataclasses.replace(entry.sites["mlp"], read="input[0]")
    wrong_mid = dataclasses.replace(entry, sites=entry.sites | {"resid_mid": at})
    with pytest.raises(PatchingError, match="resid_pre \\+ attn is not resid_mid"):
        check_architecture(llama, wrong_mid, atol=1e-10)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_engine_equals_naive_definition_everywhere(pair, batch, direction):
    """Most specs change the greedy tokens here (a weak patch of a random model may not; the
    teacher-forced test below shows that every one moves the log-probs)."""
    receiver, donor = pair if direction == "forward" else pair[::-1]
    specs = every_spec() + MULTI
    got = sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW)
    own = own_generation(receiver, *batch)
    for spec, out in zip(specs, got, strict=True):
        want = naive_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
        assert torch.equal(out, want), spec
    unchanged = [spec for spec, out in zip(specs, got, strict=True) if torch.equal(out, own)]
    assert len(unchanged) <= len(specs) // 10, unchanged


def donors_for(receiver, donor, batch) -> dict:
    """Every donor form: zero, a mean, a blend, the receiver on other prompts of the same
    lengths, and a blend of the donor on shorter prompts with a position map."""
    ids, mask = batch
    same = torch.where(mask.bool(), ids + 30, 0)
    short = torch.tensor([[61, 62, 63], [0, 71, 72], [0, 0, 81]])
    position_map = [[0, None, 1, -1, 2], [0, -1, 1], [0]]
    noise = torch.Generator().manual_seed(3)
    width = receiver.config.hidden_size
    mean = Mean({(site, layer): torch.randn(width, generator=noise, dtype=torch.float64)
                 for site in ("mlp", "resid") for layer in range(3)})
    return {
        "zero": Zero(),
        "mean": mean,
        "blend": Blend(donor, 0.5),
        "other prompt": OtherPrompt(receiver, same, mask),
        "other prompt, mapped": Blend(OtherPrompt(donor, short, (short > 0).long(),
                                                  position_map), 0.7),
    }


DONOR_SPECS = ["mlp:L1", "resid:L2@all", "mlp:L2 + resid:L1@prompt[-2:]", "resid:L1@steps[1:3]"]


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_every_donor_equals_naive_definition(pair, batch, direction):
    receiver, donor = pair if direction == "forward" else pair[::-1]
    for name, source in donors_for(receiver, donor, batch).items():
        got = sweep_generate(receiver, source, batch[0], DONOR_SPECS, batch[1],
                             max_new_tokens=NEW)
        for spec, out in zip(DONOR_SPECS, got, strict=True):
            want = naive_generate(receiver, source, batch[0], spec, batch[1], max_new_tokens=NEW)
            assert torch.equal(out, want), (name, spec)


def scored(batch):
    """The prompts followed by three more tokens each (continuations to score)."""
    ids, mask = batch
    return (torch.cat([ids, ids[:, :3] + 40], dim=1),
            torch.cat([mask, torch.ones_like(mask[:, :3])], dim=1), [3, 3, 3])


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_teacher_forced_equals_naive_definition(pair, batch, direction):
    """Within 1e-10, except under eager attention (Gemma 2 has no other): transformers' eager
    kernel takes its softmax in float32, whose rounding depends on where the masked keys sit,
    and the "newest" copies sit elsewhere than in the naive run (measured: ~3e-7)."""
    receiver, donor = pair if direction == "forward" else pair[::-1]
    atol = 1e-10 if receiver.config._attn_implementation == "sdpa" else 1e-6
    ids, mask, lengths = scored(batch)
    cases = [(donor, spec) for spec in every_spec() + MULTI]
    cases += [(source, spec) for source in donors_for(receiver, donor, batch).values()
              for spec in DONOR_SPECS]
    with torch.no_grad():  # each row alone, unpatched
        plain = torch.stack([
            torch.log_softmax(receiver(row[m][None]).logits[0, -4:-1].double(), -1)
            .gather(-1, row[-3:, None])[:, 0]
            for row, m in zip(ids, mask.bool(), strict=True)
        ])
    for source, spec in cases:
        got = patched_logprobs(receiver, source, ids, spec, lengths, mask).logprobs
        want = naive_logprobs(receiver, source, ids, spec, lengths, mask)
        for row, (scores, c) in enumerate(zip(want, lengths, strict=True)):
            torch.testing.assert_close(got[row, -c:], scores, rtol=0, atol=atol,
                                       msg=f"{spec} row {row}")
        assert not torch.allclose(got, plain, atol=1e-9), f"{spec} moved no log-prob"


def test_patching_an_identical_block_changes_nothing(pair, batch):
    """Against the model's own `generate` on each prompt alone (transformers' batched Gemma 2
    generate returns token 0 for left-padded rows, so padding is left out of the reference).
    Also no-op patches: alpha 0, and a steps window past the last step."""
    receiver, donor = pair
    ids, mask = batch
    alone = [
        own_generation(receiver, row[m][None], torch.ones(1, int(m.sum())))[0, int(m.sum()):]
        for row, m in zip(ids, mask.bool(), strict=True)
    ]
    specs = every_spec(layer=0) + ["resid_pre:L0@all"]
    cases = [(donor, specs), (Blend(donor, 0.0), ["mlp:L2@all", "head:L1.H0"]),
             (donor, ["mlp:L2@steps[50:60]"])]
    for source, these in cases:
        for out in sweep_generate(receiver, source, ids, these, mask, max_new_tokens=NEW):
            for new, want in zip(out[:, ids.shape[1]:], alone, strict=True):
                assert torch.equal(new, want)


def test_every_site_patch_writes_the_donor_values(pair, batch):
    for spec in every_spec()[1::len(RULES)]:  # positions "all": every position is written
        assert_patch_writes_donor(*pair, batch[0][:1], spec)


def test_lora_adapter_pair_over_one_base(family, batch):
    base = random_model(family, 0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    torch.manual_seed(2)
    peft_model = get_peft_model(base, config)
    clean, corrupted = adapter_pair(peft_model)
    for spec in ("mlp:L2", "k:L1.H0 + resid_mid:L2@all"):
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
