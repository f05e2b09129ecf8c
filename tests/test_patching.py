"""The patching engine against the naive definition, on tiny random Qwen3 pairs in float64.

The pair shares embeddings, final norm and block 0; blocks 1-2 of the donor are
re-drawn, so patching block 0 must change nothing and patching the last block's
residual stream everywhere must turn the receiver into the donor.
"""

from __future__ import annotations

import copy

import pytest
import torch
from patch_checks import assert_patch_writes_donor, left_padded_batch
from transformers import Qwen3ForCausalLM

from finetune.tiny import random_qwen3
from patching import (
    PatchSpec,
    adapter_pair,
    every_layer,
    patched_generate,
    patched_logprobs,
    sweep_generate,
)
from patching.forward import Values
from patching.models import as_runner
from patching.reference import naive_generate, naive_logprobs, naive_token_logprobs

torch.set_num_threads(1)
SITES = ["resid", "attn", "mlp", "head"]
NEW = 6


def tiny(seed: int) -> Qwen3ForCausalLM:
    return random_qwen3(seed, torch.float64)


@pytest.fixture(scope="module")
def pair() -> tuple[Qwen3ForCausalLM, Qwen3ForCausalLM]:
    receiver = tiny(0)
    donor = copy.deepcopy(receiver)
    other = tiny(1)
    for i in (1, 2):
        donor.model.layers[i].load_state_dict(other.model.layers[i].state_dict())
    return receiver, donor


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_batch()


def scored(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts followed by three more tokens each (continuations to score)."""
    ids, mask = batch
    return torch.cat([ids, ids[:, :3] + 40], dim=1), torch.cat(
        [mask, torch.ones_like(mask[:, :3])], dim=1
    )


def spec_for(site: str, positions: str, layers=(1, 2)) -> PatchSpec:
    return PatchSpec(site, list(layers), [1, 3] if site == "head" else None, positions)


def own_generation(model, ids, mask, new=NEW, **kw) -> torch.Tensor:
    return model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, **kw)


@pytest.mark.parametrize("positions", ["newest", "all"])
@pytest.mark.parametrize("site", SITES)
def test_matches_naive_definition(pair, batch, site, positions):
    receiver, donor = pair
    spec = spec_for(site, positions)
    got = patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
    assert torch.equal(
        got, naive_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
    )
    assert not torch.equal(got, own_generation(receiver, *batch)), "the patch changed nothing"


@pytest.mark.parametrize("positions", ["newest", "all"])
def test_left_padded_batch_equals_each_prompt_alone(pair, batch, positions):
    receiver, donor = pair
    ids, mask = batch
    spec = spec_for("attn", positions, layers=[2])
    together = patched_generate(receiver, donor, ids, spec, mask, max_new_tokens=NEW)
    for row, m, out in zip(ids, mask.bool(), together, strict=True):
        alone = patched_generate(receiver, donor, row[m][None], spec, max_new_tokens=NEW)
        assert torch.equal(alone[0], out[len(m) - int(m.sum()) :])


@pytest.mark.parametrize("positions", ["newest", "all"])
@pytest.mark.parametrize("site", SITES)
def test_patching_identical_layer_changes_nothing(pair, batch, site, positions):
    receiver, donor = pair
    spec = spec_for(site, positions, layers=[0])
    got = patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
    assert torch.equal(got, own_generation(receiver, *batch))


def test_last_layer_resid_at_all_positions_is_the_donor(pair, batch):
    receiver, donor = pair
    spec = PatchSpec("resid", [2], positions="all")
    got = patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
    assert torch.equal(got, own_generation(donor, *batch))
    assert not torch.equal(got, own_generation(receiver, *batch))


@pytest.mark.parametrize("site", SITES)
def test_every_site_patch_writes_the_donor_activation(pair, batch, site):
    """Guard against a patch that silently does nothing."""
    assert_patch_writes_donor(*pair, batch[0][:1], spec_for(site, "all", layers=[1]))


class Boom(RuntimeError):
    pass


def hook_counts(*models) -> list[int]:
    """Hooks per module, and whether any module's forward is overridden on the instance."""
    return [
        len(m._forward_hooks) + len(m._forward_pre_hooks) + 100 * ("forward" in m.__dict__)
        for model in models
        for m in model.modules()
    ]


@pytest.mark.parametrize("who", ["receiver", "donor"])
@pytest.mark.parametrize(
    "specs",
    [every_layer("head", 3, heads=[0]), [PatchSpec("resid", [1], positions="all")]],
    ids=["head-sweep", "resid-all-skips-blocks"],
)
def test_hooks_removed_when_generation_raises(pair, batch, who, specs):
    receiver, donor = pair
    before = hook_counts(receiver, donor)
    calls = []

    def explode(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            raise Boom

    target = receiver.model.norm if who == "receiver" else donor.model.layers[0].mlp
    handle = target.register_forward_hook(explode)
    try:
        with pytest.raises(Boom):
            sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW)
    finally:
        handle.remove()
    assert hook_counts(receiver, donor) == before


def test_eos_stops_a_row_and_pads_it(pair, batch):
    receiver, donor = pair
    spec = spec_for("mlp", "newest")
    free = patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
    eos = int(free[0, 5 + 1])  # row 0's second new token
    got = patched_generate(
        receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW, eos_token_id=eos
    )
    assert torch.equal(
        got,
        naive_generate(
            receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW, eos_token_id=eos
        ),
    )
    row = got[0, 5:].tolist()
    first = row.index(eos)
    assert first <= 1 and set(row[first:]) == {eos}  # padded with the eos id by default
    padded = patched_generate(
        receiver,
        donor,
        batch[0],
        spec,
        batch[1],
        max_new_tokens=NEW,
        eos_token_id=eos,
        pad_token_id=0,
    )
    assert padded[0, 5 + first] == eos and set(padded[0, 6 + first :].tolist()) <= {0}
    # When every row has ended the batch is cut, as `generate` does.
    ends = sorted({int(free[b, 5]) for b in range(3)})
    short = patched_generate(
        receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW, eos_token_id=ends
    )
    assert short.shape == (3, 6)
    assert torch.equal(
        patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=0), batch[0]
    )


def test_sweep_equals_one_call_per_spec(pair, batch):
    receiver, donor = pair
    specs = (
        every_layer("resid", 3)
        + every_layer("head", 3, "all", heads=[2])
        + [
            PatchSpec("attn", [0, 2], positions="all"),
            PatchSpec("mlp", [1, 2]),
            PatchSpec("head", [1], [0, 1, 2, 3]),
        ]
    )
    free = sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW)
    eos = int(free[0][1, 5 + 2])
    outs = sweep_generate(
        receiver,
        donor,
        batch[0],
        specs,
        batch[1],
        max_new_tokens=NEW,
        eos_token_id=eos,
        progress=True,
    )
    chunked = sweep_generate(
        receiver,
        donor,
        batch[0],
        specs,
        batch[1],
        max_new_tokens=NEW,
        eos_token_id=eos,
        specs_per_batch=4,
    )
    assert all(torch.equal(a, b) for a, b in zip(outs, chunked, strict=True))
    for spec, out in zip(specs, outs, strict=True):
        assert torch.equal(
            out,
            patched_generate(
                receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW, eos_token_id=eos
            ),
        ), spec
    assert len({tuple(o[:, 5:].flatten().tolist()) for o in free}) > 5, "specs should disagree"


def test_sweep_of_multi_part_specs_equals_one_call_per_spec(pair, batch):
    receiver, donor = pair
    specs = ["attn:L1 + mlp:L2", "head:L1.H0,2 + resid:L2@all", "q:L2.H3 + v:L1.H1@steps[1:4]",
             "resid_pre:L1 + resid_mid:L2@prompt[-3:]", "k:L2.H0 + mlp:L1@steps[2:]",
             "resid:L1@steps[0:1]", "attn:L2@prompt[:1]"]
    free = sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW)
    eos = int(free[1][0, 5 + 2])
    outs = sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW,
                          eos_token_id=eos)
    chunked = sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW,
                             eos_token_id=eos, specs_per_batch=3)
    for spec, out, other in zip(specs, outs, chunked, strict=True):
        one = patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW,
                               eos_token_id=eos)
        assert torch.equal(out, one) and torch.equal(other, one), spec
        assert torch.equal(out, naive_generate(receiver, donor, batch[0], spec, batch[1],
                                               max_new_tokens=NEW, eos_token_id=eos)), spec
    assert len({tuple(o[:, 5:].flatten().tolist()) for o in free}) > 3, "specs should disagree"


def test_scored_tokens_equal_the_naive_definition(pair, batch):
    """Per-step log-probs of chosen tokens during patched generation; NaN after a row ended."""
    receiver, donor = pair
    tokens = [3, 17, 40]
    specs = ["mlp:L2", "head:L1.H1@all", "resid:L1@steps[1:3]"]
    outs = sweep_generate(receiver, donor, batch[0], specs, batch[1], max_new_tokens=NEW,
                          score_tokens=tokens)
    for spec, out in zip(specs, outs, strict=True):
        assert torch.equal(out.sequences, patched_generate(receiver, donor, batch[0], spec,
                                                           batch[1], max_new_tokens=NEW))
        want = naive_token_logprobs(receiver, donor, batch[0], spec, tokens, batch[1],
                                    max_new_tokens=NEW)
        assert out.token_logprobs.shape == (3, NEW, 3)
        for row, scores in enumerate(want):
            torch.testing.assert_close(out.token_logprobs[row].double(), scores, rtol=0,
                                       atol=1e-10)
    free = outs[0].sequences
    eos = int(free[0, 5 + 1])
    ended = patched_generate(receiver, donor, batch[0], specs[0], batch[1], max_new_tokens=NEW,
                             eos_token_id=eos, score_tokens=tokens)
    stop = ended.sequences[0, 5:].tolist().index(eos)
    assert torch.isnan(ended.token_logprobs[0, stop + 1:]).all()
    assert not torch.isnan(ended.token_logprobs[0, : stop + 1]).any()


def test_the_guard_catches_a_patch_that_writes_nothing(pair, batch, monkeypatch):
    monkeypatch.setattr(Values, "apply", lambda self, key, edit, act: act)
    with pytest.raises(AssertionError):
        assert_patch_writes_donor(*pair, batch[0][:1], "mlp:L1@all")


@pytest.mark.parametrize("site", ["attn", "mlp"])
def test_edits_are_out_of_place(pair, batch, site):
    """The tensor a module computed keeps its values: the patch is a new tensor (a block's
    `residual` local may alias what a hook is handed)."""
    receiver, donor = pair
    made = receiver.model.layers[1].self_attn.o_proj if site == "attn" else \
        receiver.model.layers[1].mlp.down_proj
    kept = []
    handle = made.register_forward_hook(lambda m, a, out: kept.append((out, out.clone())))
    try:
        patched_generate(receiver, donor, batch[0], f"{site}:L1@all", batch[1], max_new_tokens=2)
    finally:
        handle.remove()
    assert kept and all(torch.equal(tensor, values) for tensor, values in kept)


@pytest.mark.parametrize("positions", ["newest", "all"])
@pytest.mark.parametrize("site", SITES)
def test_teacher_forced_scores_match_naive_definition(pair, batch, site, positions):
    receiver, donor = pair
    ids, mask = scored(batch)
    lengths = [4, 3, 2]
    spec = spec_for(site, positions)
    got = patched_logprobs(receiver, donor, ids, spec, lengths, mask)
    want = naive_logprobs(receiver, donor, ids, spec, lengths, mask)
    plain = naive_logprobs(receiver, receiver, ids, spec, lengths, mask)
    for row, (w, p, c) in enumerate(zip(want, plain, lengths, strict=True)):
        torch.testing.assert_close(got.logprobs[row, -c:], w, rtol=0, atol=1e-10)
        assert torch.all(got.logprobs[row, :-c] == 0) and not torch.allclose(w, p)
    assert got.total().shape == (3,) and got.all_greedy().dtype == torch.bool


def test_adapter_pair_runs_both_sides_from_one_base(pair, batch):
    peft = pytest.importorskip("peft")
    receiver, _ = pair
    torch.manual_seed(2)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    )
    model = peft.get_peft_model(copy.deepcopy(receiver), config)
    merged = copy.deepcopy(model).merge_and_unload()
    base, adapted = adapter_pair(model)
    assert as_runner(base).lm is as_runner(adapted).lm  # one copy of the weights
    before = hook_counts(model)
    for positions in ("newest", "all"):
        spec = spec_for("head", positions)
        got = patched_generate(base, adapted, batch[0], spec, batch[1], max_new_tokens=NEW)
        assert torch.equal(
            got, patched_generate(receiver, merged, batch[0], spec, batch[1], max_new_tokens=NEW)
        )
        back = patched_generate(adapted, base, batch[0], spec, batch[1], max_new_tokens=NEW)
        assert torch.equal(
            back, naive_generate(merged, receiver, batch[0], spec, batch[1], max_new_tokens=NEW)
        )
        scores = patched_logprobs(
            base, adapted, *scored(batch)[:1], spec, [3, 2, 1], scored(batch)[1]
        )
        ref = naive_logprobs(
            receiver, merged, *scored(batch)[:1], spec, [3, 2, 1], scored(batch)[1]
        )
        torch.testing.assert_close(scores.logprobs[0], ref[0], rtol=0, atol=1e-10)
    # A PeftModel passed as is runs with its adapter on.
    spec = spec_for("mlp", "newest")
    plain = patched_generate(receiver, model, batch[0], spec, batch[1], max_new_tokens=NEW)
    assert torch.equal(
        plain, patched_generate(receiver, merged, batch[0], spec, batch[1], max_new_tokens=NEW)
    )
    sweep = sweep_generate(
        base, adapted, batch[0], every_layer("mlp", 3), batch[1], max_new_tokens=NEW
    )
    one = patched_generate(
        receiver, merged, batch[0], PatchSpec("mlp", [2]), batch[1], max_new_tokens=NEW
    )
    assert torch.equal(sweep[2], one)
    assert hook_counts(model) == before
    assert not torch.equal(
        own_generation(model, *batch), own_generation(receiver, *batch)
    )  # adapter back on


@pytest.mark.parametrize("positions", ["newest", "all"])
def test_eager_attention_matches_naive_definition(pair, batch, positions):
    """Eager attention takes an additive float mask, not sdpa's booleans. Log-probs agree to
    1e-6, not 1e-10: transformers' eager kernel (5.24) takes its softmax in float32, whose
    rounding depends on where the masked keys sit, and the "newest" copies sit elsewhere than
    in the naive run."""
    receiver, donor = (copy.deepcopy(m) for m in pair)
    for model in (receiver, donor):
        model.config._attn_implementation = "eager"
    spec = spec_for("head", positions)
    got = patched_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
    assert torch.equal(
        got, naive_generate(receiver, donor, batch[0], spec, batch[1], max_new_tokens=NEW)
    )
    lengths = [3, 2, 1]
    scores = patched_logprobs(receiver, donor, *scored(batch)[:1], spec, lengths, scored(batch)[1])
    ref = naive_logprobs(receiver, donor, *scored(batch)[:1], spec, lengths, scored(batch)[1])
    for row, c in enumerate(lengths):
        torch.testing.assert_close(scores.logprobs[row, -c:], ref[row], rtol=0, atol=1e-6)


def test_donor_in_another_dtype(pair, batch):
    """Donor activations are cast to the receiver's dtype where they are written."""
    receiver, donor = pair
    donor32 = copy.deepcopy(donor).float()
    for spec in (spec_for("resid", "newest"), spec_for("head", "all")):
        got = patched_generate(receiver, donor32, batch[0], spec, batch[1], max_new_tokens=NEW)
        want = naive_generate(receiver, donor32, batch[0], spec, batch[1], max_new_tokens=NEW)
        assert torch.equal(got, want)


def test_engine_state_is_born_in_init():
    """Every attribute a Lockstep method sets exists from __init__ on (no state appears later,
    and no other module sets the engine's attributes)."""
    import ast
    import inspect

    from patching import engine

    tree = ast.parse(inspect.getsource(engine.Lockstep))

    def assigned(node) -> set[str]:
        return {t.attr for n in ast.walk(node)
                if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                and t.value.id == "self"}

    methods = {f.name: f for f in tree.body[0].body if isinstance(f, ast.FunctionDef)}
    born = assigned(methods["__init__"])
    later = set().union(*(assigned(f) for name, f in methods.items() if name != "__init__"))
    assert later <= born, later - born
