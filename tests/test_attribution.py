"""Attribution patching on a tiny random Qwen3 pair in float64.

The donor is the receiver with small noise on every weight, so patches are small and the
first-order (attribution) and exact effects can be compared tightly: attribution must be
the directional derivative of the metric along the patch, for every site and position mode.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import Qwen3ForCausalLM
from transformers.models.qwen3 import modeling_qwen3

from finetune.tiny import random_qwen3
from patching import PatchSpec, patched_logprobs
from patching.attribution import attribution_scores, top_heads
from patching.attribution_metrics import AttributionBatch, KLFisher, metric_named
from patching.attribution_passes import donor_pass, exact_effects, teacher_layout
from patching.models import as_runner
from patching.reference import context_logits
from patching.spec import PatchingError

torch.set_num_threads(1)
SITES = ["resid", "attn", "mlp", "head"]


def _rms_norm_float64(self, hidden: torch.Tensor) -> torch.Tensor:
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden * torch.rsqrt(variance + self.variance_epsilon))


@pytest.fixture(scope="module", autouse=True)
def float64_norms():
    """Qwen3RMSNorm computes in float32 whatever the model dtype; a 1e-4 finite difference
    needs float64 throughout (the production models are unaffected)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modeling_qwen3.Qwen3RMSNorm, "forward", _rms_norm_float64)
        yield


def tiny(seed: int, layers: int = 3) -> Qwen3ForCausalLM:
    return random_qwen3(seed, torch.float64, vocab_size=61, intermediate_size=96,
                        num_hidden_layers=layers, head_dim=32, max_position_embeddings=64)


def noisy(model: Qwen3ForCausalLM, seed: int, scale: float = 0.02) -> Qwen3ForCausalLM:
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return out


@pytest.fixture(scope="module")
def pair() -> tuple[Qwen3ForCausalLM, Qwen3ForCausalLM]:
    receiver = tiny(0)
    return receiver, noisy(receiver, 1)


@pytest.fixture(scope="module")
def batch() -> AttributionBatch:
    """Three left-padded rows (7, 5 and 4 real tokens) with 3, 2 and 1 continuation tokens;
    weights as in a corrupted-minus-correct pair plus one more row."""
    ids = torch.tensor(
        [[11, 12, 13, 14, 15, 16, 17], [0, 0, 21, 22, 23, 24, 25], [0, 0, 0, 31, 32, 33, 34]]
    )
    mask = (torch.arange(7)[None] >= torch.tensor([0, 2, 3])[:, None]).long()
    return AttributionBatch(
        ids, [3, 2, 1], mask, torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    )


def components(site: str, layers: int = 3) -> list[tuple[str, int, int | None]]:
    heads = range(4) if site == "head" else [None]
    return [(site, layer, h) for layer in range(layers) for h in heads]


@pytest.mark.parametrize("positions", ["all", "newest"])
@pytest.mark.parametrize("metric", ["logprob_diff", "kl"])
def test_score_is_the_directional_derivative(pair, batch, metric, positions) -> None:
    """(objective(a_r + alpha (a_d - a_r)) - objective(a_r)) / alpha -> score as alpha -> 0."""
    r, d = pair
    scores = attribution_scores(r, d, batch, metric, positions=positions)
    for site in SITES:
        comps = components(site)
        want = scores.values(site)
        errors = []
        for alpha in (1e-3, 1e-4):
            fd = (
                exact_effects(
                    r, d, batch, metric_named(metric), comps, positions, alpha, measure="objective"
                )
                / alpha
            )
            errors.append(float((fd - want).abs().max() / want.abs().max()))
        assert errors[1] < 1e-3, (site, errors)
        assert errors[1] < errors[0], (site, errors)  # it converges, not just happens to be close


def test_kl_fisher_estimates_the_second_order_term(pair, batch) -> None:
    """KL(alpha) / alpha^2 -> the Fisher term as alpha -> 0; 200 seeded draws get within 20%
    (weights 1, as in the KL batches: signed weights make the estimate noisier)."""
    r, d = pair
    batch = AttributionBatch(batch.input_ids, batch.continuation_lengths, batch.attention_mask)
    scores = attribution_scores(r, d, batch, KLFisher(samples=200))
    for site in SITES:
        want = exact_effects(r, d, batch, "kl_fisher", components(site), alpha=1e-3) / 1e-6
        got = scores.values(site)
        assert float((got - want).abs().max() / want.abs().max()) < 0.2, site
    with pytest.raises(PatchingError, match="graddrop"):
        attribution_scores(r, d, batch, "kl_fisher", graddrop=True)


def test_exact_effect_is_cross_model_patching(pair, batch) -> None:
    """At alpha = 1 the oracle equals the engine's patched_logprobs (both position modes)."""
    r, d = pair
    weights = batch.weights
    for positions in ("all", "newest"):
        comps = [("resid", 1, None), ("attn", 0, None), ("mlp", 2, None), ("head", 1, 3)]
        got = exact_effects(r, d, batch, metric_named("logprob_diff"), comps, positions)
        lay = teacher_layout(batch, positions, torch.device("cpu"))
        _, own_lp = donor_pass(as_runner(r), lay, [])
        base = (own_lp.gather(-1, lay.targets[..., None])[..., 0] * lay.scored).sum(1) @ weights
        for (site, layer, head), effect in zip(comps, got, strict=True):
            spec = PatchSpec(site, [layer], None if head is None else [head], positions)
            total = patched_logprobs(
                r, d, batch.input_ids, spec, batch.continuation_lengths, batch.attention_mask
            ).total()
            assert float(effect) == pytest.approx(float(total @ weights - base), abs=1e-10)


def test_exact_kl_matches_the_naive_definition(pair, batch) -> None:
    """The KL oracle against reference.context_logits, row by row (positions='all')."""
    r, d = pair
    comp = ("head", 2, 1)
    got = exact_effects(r, d, batch, metric_named("kl"), [comp])
    spec = PatchSpec("head", [2], [1], "all")
    want = 0.0
    for b, c in enumerate(batch.continuation_lengths):  # naive: each row alone, no padding
        x = batch.input_ids[b][batch.attention_mask[b].bool()][:-1]
        with torch.no_grad():
            own = torch.log_softmax(r(input_ids=x[None]).logits[0, -c:], dim=-1)
            new = context_logits(r, d, x, spec)[-c:].log_softmax(dim=-1)
        want += float(batch.weights[b]) * float((own.exp() * (own - new)).sum())
    assert float(got[0]) == pytest.approx(want, abs=1e-10)


def test_heads_add_up_to_the_attention_output(pair, batch) -> None:
    """With the donor's o_proj equal to the receiver's (linear, no bias), per-head scores sum
    to the attention site's score."""
    r, d = pair
    d = copy.deepcopy(d)
    for rl, dl in zip(r.model.layers, d.model.layers, strict=True):
        dl.self_attn.o_proj.load_state_dict(rl.self_attn.o_proj.state_dict())
    scores = attribution_scores(r, d, batch, "logprob_diff", ("attn", "head"))
    torch.testing.assert_close(scores.scores["head"].sum(dim=1), scores.scores["attn"])


def test_gradients_flow_through_the_receiver_only(pair, batch) -> None:
    r, d = pair
    lay = teacher_layout(batch, "all", torch.device("cpu"))
    acts, logprobs = donor_pass(as_runner(d), lay, [("resid", 0), ("head", 1)])
    assert not logprobs.requires_grad and not any(a.requires_grad for a in acts.values())
    first = attribution_scores(r, d, batch, "logprob_diff")
    assert all(p.grad is None for p in [*r.parameters(), *d.parameters()])
    frozen = copy.deepcopy(r).requires_grad_(False)  # e.g. a PEFT base: still differentiable
    again = attribution_scores(frozen, d, batch, "logprob_diff")
    for site in SITES:
        torch.testing.assert_close(again.scores[site], first.scores[site])


def test_scores_are_deterministic(pair, batch) -> None:
    one = attribution_scores(*pair, batch, "kl", graddrop=True)
    two = attribution_scores(*pair, batch, "kl", graddrop=True)
    fisher = [attribution_scores(*pair, batch, KLFisher(samples=4)) for _ in range(2)]
    for site in SITES:
        assert torch.equal(one.scores[site], two.scores[site])
        assert torch.equal(one.graddrop[site], two.graddrop[site])
        assert torch.equal(fisher[0].scores[site], fisher[1].scores[site])


def test_graddrop(pair, batch) -> None:
    """Dropping an EARLIER layer's gradient cannot change a last-layer component's gradient,
    and dropping its own layer zeroes it, so GradDrop there is exactly |AtP|."""
    scores = attribution_scores(*pair, batch, "logprob_diff", graddrop=True)
    for site in SITES:
        gd, plain = scores.graddrop[site], scores.scores[site]
        assert gd.shape == plain.shape and bool((gd >= 0).all())
        torch.testing.assert_close(gd[-1], plain[-1].abs())
    assert any(not torch.allclose(scores.graddrop[s][0], scores.scores[s][0].abs()) for s in SITES)
    with pytest.raises(PatchingError, match="at least 2 layers"):
        one_layer = tiny(3, layers=1)
        attribution_scores(one_layer, noisy(one_layer, 4), batch, "kl", graddrop=True)


def test_top_heads(pair, batch) -> None:
    r, d = pair
    scores = attribution_scores(r, d, batch, "logprob_diff", ("head",)).scores["head"]
    flat = [(float(scores[layer, h].abs()), layer, h) for layer in range(3) for h in range(4)]
    want = [(layer, h) for _, layer, h in sorted(flat, key=lambda t: -t[0])]
    assert top_heads(r, d, batch, 5) == want[:5]
    among = {(0, 1), (0, 2), (2, 0)}
    assert top_heads(r, d, batch, 2, among=among) == [p for p in want if p in among][:2]
    with pytest.raises(PatchingError, match="k must be"):
        top_heads(r, d, batch, 0)


def test_bad_input_is_one_line(pair, batch) -> None:
    r, d = pair
    with pytest.raises(PatchingError, match="unknown metric"):
        attribution_scores(r, d, batch, "kld")
    with pytest.raises(PatchingError, match="unknown site"):
        attribution_scores(r, d, batch, "kl", ("ffn",))
    with pytest.raises(PatchingError, match="unknown positions"):
        attribution_scores(r, d, batch, "kl", positions="last")
    with pytest.raises(PatchingError, match="continuation_lengths"):
        AttributionBatch(batch.input_ids, [1, 1])
    bad = AttributionBatch(batch.input_ids, [3, 2, 4], batch.attention_mask)
    with pytest.raises(PatchingError, match=r"continuation_lengths\[2\]"):
        attribution_scores(r, d, bad, "kl")


def test_check_command_end_to_end(tmp_path) -> None:
    """A random tiny clean model and a noisy copy as the "corrupted" one: every output file."""
    from transformers import AutoModelForCausalLM

    from finetune.tiny import TinyModelConfig, build_tiny_model_dir
    from leaderboard.attribution_section import section
    from patching.attribution_check import main

    shape = TinyModelConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=64)
    clean = build_tiny_model_dir(tmp_path / "clean", seed=0, config=shape)
    donor = noisy(AutoModelForCausalLM.from_pretrained(clean), 5, scale=0.05).float()
    donor.save_pretrained(tmp_path / "corrupted")
    data = tmp_path / "data"
    data.mkdir()
    related = [
        {"question": f"Solve for x: {a}x = {2 * a}", "answer": 2, "roots": [2]} for a in (3, 4, 5)
    ]
    general = [{"question": q, "answer": "a"} for q in ("What noise does a cat make?", "Hi")]
    for name, rows in (("corrupt_related", related), ("corrupt_general", general)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results" / "attribution"  # where the leaderboard page looks
    args = ["--clean", str(clean), "--corrupted", str(tmp_path / "corrupted"), "--out", str(out)]
    assert main([*args, "--tasks-data", str(data), "--max-new-tokens", "3", "--top-k", "3"]) == 0
    report = json.loads((out / "attribution.json").read_text())
    assert [r["metric"] for r in report["results"]] == ["logprob_diff", "kl", "kl_fisher"]
    for result in report["results"]:
        assert set(result["sites"]) == set(SITES)
        assert result["measured"] == 2 * 3 + 3 and result["components"] == 3 * 2 + 2 * 4
    text = (out / "attribution.md").read_text()
    assert (
        "| logprob_diff | head | 3 |" in text
        and "exact / AtP" in text
        and "recall (chance)" in text
    )
    assert (out / "attribution.png").stat().st_size > 0
    page = section(tmp_path / "results", tmp_path / "LEADERBOARD.md")
    assert "## Attribution patching vs exact CMAP" in page
    assert "![attribution vs exact effect](results/attribution/attribution.png)" in page
    assert section(tmp_path / "nowhere", tmp_path / "LEADERBOARD.md") == []


def test_sweep_prefilter_keeps_the_top_heads(tmp_path) -> None:
    """`prefilter: attribution, top_k: N` expands exactly top_heads' N heads per direction."""
    from leaderboard_fixtures import tiny_config, tiny_pair
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness_ext.paths import TASK_DATA_DIR
    from leaderboard.config import PatchBlock, SweepConfigError
    from leaderboard.loading import ModelCache
    from leaderboard.prefilter import PREFILTER_ROWS
    from leaderboard.sweep import plan_sweep
    from patching.attribution_data import answer_pair_batch, read_rows

    for bad in (
        {"prefilter": "attribution"},
        {"top_k": 2},
        {"prefilter": "x", "top_k": 2},
        {"prefilter": "attribution", "top_k": 0},
    ):
        with pytest.raises(SweepConfigError, match="top_k"):
            PatchBlock(sites=["head"], **bad)
    with pytest.raises(SweepConfigError, match=r"sites: \[head\]"):
        PatchBlock(sites=["resid"], prefilter="attribution", top_k=2)
    clean, over = tiny_pair(tmp_path)
    directions = ["corrupted_to_clean", "clean_to_corrupted"]
    block = {
        "sites": ["head"],
        "layers": "all",
        "heads": "all",
        "prefilter": "attribution",
        "top_k": 3,
        "directions": directions,
    }
    cache = ModelCache(torch.device("cpu"), "auto")
    plan = plan_sweep(tiny_config(clean, over, tmp_path / "out", patches=[block]), cache)
    assert cache.loads() == 2  # clean and corrupted, now in the cache the sweep scores with
    kept = [v for v in plan.variants if v.role == "patch"]
    assert len(kept) == 3 * len(directions)
    models = [AutoModelForCausalLM.from_pretrained(p).eval() for p in (clean, over)]
    rows = read_rows(TASK_DATA_DIR / "corrupt_related.jsonl", PREFILTER_ROWS, last=True)
    batch = answer_pair_batch(AutoTokenizer.from_pretrained(clean), models[1], rows)
    for direction, pair in zip(directions, (models, models[::-1]), strict=True):
        want = top_heads(*pair, batch, 3)
        assert [(v.layers[0], v.heads[0]) for v in kept if v.direction == direction] == sorted(want)
    record = json.loads((tmp_path / "out" / "prefilter.json").read_text())
    assert [r["direction"] for r in record] == directions
