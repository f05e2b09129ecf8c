"""Sampled patched generation: the four properties the engine promises, in float64.

1. `sweep_generate(specs)` equals one `patched_generate` per spec with the same seed (and the
   naive reference, whose next token comes from the same sampler and streams), at every site
   and every positions rule;
2. the same seed gives the same replies on any batch size and padding;
3. the greedy limit: `do_sample=False`, and sampling with `top_k=1`, give the greedy tokens;
4. a patch where donor and receiver agree samples the receiver's own distribution: exactly
   (the receiver alone, sampled with the same streams) and statistically (first-token
   frequencies over many samples against the receiver's softmax, a chi-square test at a fixed
   significance; the streams are seeded, so the test is deterministic).
Also: repeats share the donor's prefill; bad decoding input fails in one line before any
forward pass.
"""

from __future__ import annotations

import pytest
import torch
from families import random_pair
from patch_checks import RULES, every_spec, left_padded_batch
from scipy import stats

from patching import (
    DecodingConfig,
    PatchingError,
    PatchSpec,
    patched_generate,
    sweep_generate,
)
from patching.reference import naive_generate
from patching.sampling import choose_tokens, sample_streams

torch.set_num_threads(1)
NEW = 5
SAMPLED = DecodingConfig(
    max_new_tokens=NEW,
    do_sample=True,
    temperature=1.3,
    top_p=0.9,
    top_k=40,
    seed=7,
    num_return_sequences=3,
)


@pytest.fixture(scope="module")
def pair():
    return random_pair("qwen3")


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_batch()


def test_sweep_equals_each_spec_alone_and_the_naive_definition(pair, batch):
    receiver, donor = pair
    specs = every_spec()
    swept = sweep_generate(receiver, donor, batch[0], specs, batch[1], SAMPLED)
    for spec, out in zip(specs, swept, strict=True):
        assert out.shape[0] == 3 * 3  # prompts x samples
        alone = patched_generate(receiver, donor, batch[0], spec, batch[1], SAMPLED)
        assert torch.equal(out, alone), spec
        assert torch.equal(
            out, naive_generate(receiver, donor, batch[0], spec, batch[1], SAMPLED)
        ), spec
    assert len({tuple(row) for row in swept[0][:3, 5:].tolist()}) > 1, "samples all alike"


def test_same_seed_same_replies_on_any_batch_and_padding(pair, batch):
    receiver, donor = pair
    spec = PatchSpec("attn", [1, 2], positions="newest")
    together = patched_generate(receiver, donor, batch[0], spec, batch[1], SAMPLED)
    ids, mask = batch
    for b in range(3):
        real = ids[b][mask[b].bool()][None]
        alone = patched_generate(receiver, donor, real, spec, generation=SAMPLED)
        rows = together[3 * b : 3 * b + 3, ids.shape[1] - real.shape[1] :]
        assert torch.equal(alone, rows)
    swapped = patched_generate(receiver, donor, ids.flip(0), spec, mask.flip(0), SAMPLED)
    assert torch.equal(swapped.view(3, 3, -1).flip(0).reshape(9, -1), together)
    again = patched_generate(receiver, donor, batch[0], spec, batch[1], SAMPLED)
    assert torch.equal(again, together)
    other_seed = patched_generate(receiver, donor, batch[0], spec, batch[1], SAMPLED, seed=8)
    assert not torch.equal(other_seed, together)


def test_sample_n_is_the_stream_with_offset_n(pair, batch):
    receiver, donor = pair
    spec = PatchSpec("mlp", [2], positions="all")
    three = patched_generate(receiver, donor, batch[0], spec, batch[1], SAMPLED)
    for n in range(3):
        one = patched_generate(
            receiver,
            donor,
            batch[0],
            spec,
            batch[1],
            SAMPLED,
            num_return_sequences=1,
            sample_offsets=[n] * 3,
        )
        assert torch.equal(one[:, : three.shape[1]], three[n::3, : one.shape[1]])


@pytest.mark.parametrize("rule", RULES)
def test_greedy_limit(pair, batch, rule):
    receiver, donor = pair
    for spec in every_spec(rules=[rule]):
        greedy = patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
        top1 = patched_generate(
            receiver,
            donor,
            batch[0],
            spec,
            batch[1],
            max_new_tokens=NEW,
            do_sample=True,
            top_k=1,
            seed=3,
        )
        assert torch.equal(top1, greedy), spec
        assert torch.equal(
            greedy, naive_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
        ), spec


def own_samples(model, ids: torch.Tensor, decoding: DecodingConfig) -> torch.Tensor:
    """The receiver alone, no patch and no engine: full forwards, the same sampler and streams."""
    streams = sample_streams(
        [ids.tolist()], [0], decoding.num_return_sequences, decoding.seed, decoding.max_new_tokens
    )
    rows = []
    for stream in streams:
        x = ids.clone()
        for k in range(decoding.max_new_tokens):
            logits = model(x[None]).logits[0, -1:]
            x = torch.cat([x, choose_tokens(logits, decoding, stream[k : k + 1])])
        rows.append(x)
    return torch.stack(rows)


def test_agreeing_patch_samples_the_receiver_exactly(pair):
    receiver, donor = pair
    ids = torch.tensor([11, 12, 13, 14, 15])
    decoding = DecodingConfig(max_new_tokens=NEW, do_sample=True, seed=5, num_return_sequences=4)
    want = own_samples(receiver, ids, decoding)
    for spec in every_spec(layer=0):  # block 0 is shared: the patch writes what is there
        assert torch.equal(
            patched_generate(receiver, donor, ids[None], spec, generation=decoding), want
        )


def test_agreeing_patch_samples_the_receiver_distribution(pair):
    """Chi-square goodness of fit of 4,000 first tokens (bins of expected count < 5 pooled),
    at significance 0.001: a sampler off by a token, a temperature applied twice or a
    misplaced filter fails it; a right one fails 1 time in 1,000 seeds, never for this one."""
    receiver, donor = pair
    ids = torch.tensor([[11, 12, 13]])
    n = 4000
    decoding = DecodingConfig(
        max_new_tokens=1, do_sample=True, temperature=1.5, seed=11, num_return_sequences=n
    )
    spec = PatchSpec("resid", [0], positions="newest")
    first = patched_generate(receiver, donor, ids, spec, generation=decoding)[:, -1]
    probs = (receiver(ids).logits[0, -1].double() / 1.5).softmax(-1)
    expected = probs * n
    observed = torch.bincount(first, minlength=len(probs)).double()
    small = expected < 5
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    obs = torch.cat([observed[~small], observed[small].sum()[None]])
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    assert chi2 < stats.chi2.ppf(0.999, len(exp) - 1), chi2
    # the same test has power: sampling at temperature 1 instead of 1.5 is rejected
    wrong = (receiver(ids).logits[0, -1].double()).softmax(-1) * n
    exp_wrong = torch.cat([wrong[~small], wrong[small].sum()[None]])
    assert float(((obs - exp_wrong) ** 2 / exp_wrong).sum()) > stats.chi2.ppf(0.999, len(exp) - 1)


def test_repeats_share_the_donor_prefill(pair, batch):
    receiver, donor = pair
    seen: list[int] = []
    handle = donor.model.embed_tokens.register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[0])
    )
    try:
        patched_generate(
            receiver,
            donor,
            batch[0],
            PatchSpec("mlp", [1]),
            batch[1],
            SAMPLED,
            num_return_sequences=8,
        )
    finally:
        handle.remove()
    assert seen[0] == 3  # the prompt prefill ran once per prompt, not once per sample


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0 when sampling, got 0.0"),
        ({"do_sample": True, "temperature": -1}, "temperature must be > 0 when sampling"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"top_k": 0}, "top_k must be an int >= 1, got 0"),
        ({"seed": 1.5}, "seed must be an int, got 1.5"),
        ({"seed": "1"}, "seed must be an int, got '1'"),
        ({"do_sample": "yes"}, "do_sample='yes' is not a boolean; use true or false"),
        ({"num_return_sequences": 0}, "num_return_sequences must be an int >= 1, got 0"),
        ({"temprature": 1.0}, r"unknown decoding option\(s\) \['temprature'\]"),
        ({"sample_offsets": [0]}, r"sample_offsets must be 3 non-negative ints"),
    ],
)
def test_bad_decoding_input_is_one_line_before_any_forward(pair, batch, options, message):
    receiver, donor = pair
    calls: list[int] = []
    handles = [
        m.model.embed_tokens.register_forward_hook(lambda *a: calls.append(1))
        for m in (receiver, donor)
    ]
    try:
        with pytest.raises(PatchingError, match=message) as err:
            patched_generate(receiver, donor, batch[0], PatchSpec("mlp", [1]), batch[1], **options)
    finally:
        for handle in handles:
            handle.remove()
    assert "\n" not in str(err.value) and not calls


def test_do_sample_text_is_read_as_a_boolean():
    assert DecodingConfig(do_sample="True").do_sample is True
    assert DecodingConfig(do_sample="false").do_sample is False
