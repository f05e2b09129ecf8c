"""``patched_qwen`` at the lm-eval level, against the engine's naive definition, in float64.

The pair: the tiny random Qwen3 and a copy whose blocks 2+ are perturbed, so patching a block
below 2 must change nothing and patching above it must change replies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from model_pairs import perturbed_copy
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.tiny import TinyModelConfig, build_tiny_model_dir
from harness_ext.patched_lm import PatchedLM
from patching import AdapterSide, Blend, DecodingConfig, OtherPrompt, PatchingError, PatchSpec, Zero
from patching.means import mean_activations
from patching.reference import naive_generate, naive_logprobs

torch.set_num_threads(1)
QUESTIONS = ["Solve 3x + 7 = 22 for x.", "What is 12 + 30?", "Hi", "Is it fine to lie to a friend?"]
GEN = {"until": ["<|im_end|>"], "do_sample": False, "max_gen_toks": 6}
PAIRS = [("", " 4"), ("What is 2 + 2?", " 4 apples"), ("Hi", " there, friend")]
F64 = torch.float64


@pytest.fixture(scope="module")
def dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(clean dir, corrupted dir): the corrupted copy differs from block 2 on."""
    return tiny_model_dir, perturbed_copy(tiny_model_dir, tmp_path_factory.mktemp("corrupted"),
                                          first_block=2, seed=1)


@pytest.fixture(scope="module")
def models(dirs: tuple[Path, Path]) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """The pair loaded once, in float64, with the shared tokenizer."""
    load = [AutoModelForCausalLM.from_pretrained(d, dtype=F64).eval() for d in dirs]
    return load[0], load[1], AutoTokenizer.from_pretrained(dirs[0])


def make(models, **patch) -> PatchedLM:
    clean, corrupted, tok = models
    args = {"site": "resid", "layers": [3], "batch_size": 3} | patch
    return PatchedLM(pretrained=clean, corrupted=corrupted, tokenizer=tok, **args)


def generations(lm: HFLM) -> list[str]:
    """Four chat prompts of different lengths, batched by lm-eval (batch size 3: 3 + 1)."""
    prompts = [lm.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    reqs = [Instance("generate_until", {}, (p, dict(GEN)), i) for i, p in enumerate(prompts)]
    return lm.generate_until(reqs)


def naive_replies(lm: PatchedLM, receiver, donor) -> list[str]:
    """Each prompt alone through the naive definition, decoded and cut as lm-eval does."""
    out = []
    for q in QUESTIONS:
        ids, _ = lm.tok_batch_encode([lm.apply_chat_template([{"role": "user", "content": q}])])
        eos = [lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id]
        full = naive_generate(receiver, donor, ids, lm.spec, max_new_tokens=6, eos_token_id=eos)
        out.append(lm.tok_decode(full[0, ids.shape[1] :].tolist()).split("<|im_end|>")[0])
    return out


def loglikelihoods(lm: HFLM) -> list[tuple[float, bool]]:
    reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(PAIRS)]
    return lm.loglikelihood(reqs)


def naive_totals(lm: PatchedLM, receiver, donor) -> list[float]:
    totals = []
    for context, continuation in PAIRS:
        if context:
            ctx, cont = lm._encode_pair(context, continuation)
        else:  # lm-eval scores an empty context after its prefix token
            ctx, cont = [lm.prefix_token_id], lm.tok_encode(continuation)
        row = torch.tensor([ctx + cont])
        totals.append(float(naive_logprobs(receiver, donor, row, lm.spec, [len(cont)])[0].sum()))
    return totals


def test_generate_until_equals_naive_definition(models):
    clean, corrupted, _ = models
    lm = make(models, site="head", layers=[2, 4], heads=[0, 3])
    got = generations(lm)
    assert got == naive_replies(lm, clean, corrupted)
    assert got != generations(HFLM(pretrained=clean, tokenizer=lm.tokenizer, batch_size=3))


def test_loglikelihood_equals_naive_definition(models):
    clean, corrupted, _ = models
    lm = make(models, site="attn", layers=[2, 3], positions="newest")
    got = [total for total, _ in loglikelihoods(lm)]
    torch.testing.assert_close(got, naive_totals(lm, clean, corrupted), rtol=0, atol=1e-9)
    text = "Solve 3x + 7 = 22 for x."
    tokens = lm.tok_encode(text)
    row = torch.tensor([[lm.prefix_token_id, *tokens]])
    want = naive_logprobs(clean, corrupted, row, lm.spec, [len(tokens)])[0].sum()
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert rolling == pytest.approx(float(want), abs=1e-9)


def test_patching_identical_layer_equals_plain_hflm(models):
    clean, _, tok = models
    lm = make(models, site="resid", layers=[1], positions="all")
    plain = HFLM(pretrained=clean, tokenizer=tok, batch_size=3)
    got, want = loglikelihoods(lm), loglikelihoods(plain)
    torch.testing.assert_close([t for t, _ in got], [t for t, _ in want], rtol=0, atol=1e-9)
    assert [g for _, g in got] == [g for _, g in want]
    assert generations(lm) == generations(plain)


def test_clean_to_corrupted_swaps_roles(models):
    clean, corrupted, _ = models
    lm = make(models, direction="clean_to_corrupted", positions="all")
    assert lm.receiver is corrupted and lm.donor is clean  # objects used as given, no copies
    assert generations(lm) == naive_replies(lm, corrupted, clean)


def test_lora_adapter_shares_one_base_and_matches_merged_model(dirs, models, tmp_path, monkeypatch):
    peft = pytest.importorskip("peft")
    clean_dir, _ = dirs
    torch.manual_seed(3)
    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
    )
    peft.get_peft_model(AutoModelForCausalLM.from_pretrained(clean_dir), lora).save_pretrained(
        tmp_path / "adapter"
    )
    merged = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(clean_dir, dtype=F64), tmp_path / "adapter"
    ).merge_and_unload()

    loads = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        loads.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counted))
    lm = PatchedLM(
        pretrained=str(clean_dir),
        corrupted=str(tmp_path / "adapter"),
        site="mlp",
        layers=[2],
        dtype="float64",
        batch_size=3,
        device="cpu",
    )
    monkeypatch.undo()
    assert len(loads) == 1  # the base, once
    assert isinstance(lm.receiver, AdapterSide) and lm.receiver.model is lm.donor.model
    assert (lm.receiver.enabled, lm.donor.enabled) == (False, True)
    assert lm.receiver.model.get_base_model() is lm.model
    clean, _, tok = models
    assert generations(lm) == naive_replies(lm, clean, merged)
    got = [total for total, _ in loglikelihoods(lm)]
    torch.testing.assert_close(got, naive_totals(lm, clean, merged), rtol=0, atol=1e-9)
    unpatched = loglikelihoods(HFLM(pretrained=clean, tokenizer=tok, batch_size=3))
    assert got != [total for total, _ in unpatched]  # the adapter side does donate


@pytest.fixture(scope="module")
def odd_dirs(dirs, tmp_path_factory) -> dict[str, Path]:
    """Corrupted dirs that must be refused: nothing in it, other depth, other tokenizer."""
    clean_dir, corrupted_dir = dirs
    root = tmp_path_factory.mktemp("odd")
    (root / "empty").mkdir()
    tok = AutoTokenizer.from_pretrained(clean_dir)
    build_tiny_model_dir(
        root / "shallow", config=TinyModelConfig(num_hidden_layers=2), tokenizer=tok
    )
    (root / "retok").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(corrupted_dir / name, root / "retok")
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(root / "retok")
    return {"empty": root / "empty", "shallow": root / "shallow", "retok": root / "retok"}


BAD = {
    "no corrupted": ({"corrupted": None}, "needs corrupted="),
    "layer=": ({"layer": 1}, "unknown patched_hf argument layer=1; did you mean layers=?"),
    "position=": ({"position": "all"}, "did you mean positions=?"),
    "site=residual": ({"site": "residual"}, "unknown site 'residual'; allowed: resid"),
    "layers=all": ({"layers": "all"}, "layers=all is for the sweep runner"),
    "layer range": ({"layers": [6]},
                    "layer 6 of part resid:L6 is out of range for a 6-layer model (0..5)"),
    "head range": ({"site": "head", "heads": [4]}, "head 4 of part head:L3.H4 is out of range"),
    "heads off head": ({"heads": [0]}, "only allowed with site 'head'"),
    "direction": ({"direction": "into_clean"}, "unknown direction 'into_clean'; allowed"),
    "positions": ({"positions": "last"}, "unknown positions 'last'; allowed: newest, all"),
    "peft=": ({"peft": "ADAPTER"}, "peft='ADAPTER' is not supported by patched_hf"),
    "batch auto": ({"batch_size": "auto"}, "batch_size='auto' is not supported"),
    "empty dir": ({"corrupted": "empty"}, "exists but is neither a model dir"),
    "missing dir": ({"corrupted": "/no/such/dir"}, "does not exist"),
    "other depth": ({"corrupted": "shallow"}, "differ in num_hidden_layers: receiver 6, donor 2"),
    "tokenizer": ({"corrupted": "retok"}, "tokenizers of pretrained and corrupted differ"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_argument_fails_in_one_line_before_weights_load(case, dirs, odd_dirs, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the argument check")

    monkeypatch.setattr(HFLM, "_create_model", no_weights)
    change, message = BAD[case]
    args = {
        "pretrained": str(dirs[0]),
        "corrupted": str(dirs[1]),
        "site": "resid",
        "layers": [3],
        "device": "cpu",
    } | change
    if args["corrupted"] in odd_dirs:
        args["corrupted"] = str(odd_dirs[args["corrupted"]])
    with pytest.raises(PatchingError) as err:
        PatchedLM(**args)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"num_beams": 2}, "generation argument num_beams=2 is not supported by patched_hf"),
        ({"min_p": 0.1}, "generation argument min_p=0.1 is not supported by patched_hf"),
        ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0 when sampling"),
        ({"do_sample": True, "top_p": 2.0}, r"top_p must be in \(0, 1\], got 2.0"),
    ],
)
def test_unsupported_generation_is_refused_in_one_line(models, extra, message):
    lm = make(models)
    prompt = lm.apply_chat_template([{"role": "user", "content": "Hi"}])
    with pytest.raises(PatchingError, match=message) as err:
        gen = {"until": GEN["until"], "max_gen_toks": 6} | extra
        lm.generate_until([Instance("generate_until", {}, (prompt, gen), 0)])
    assert "\n" not in str(err.value)


SAMPLED = {"until": ["<|im_end|>"], "do_sample": True, "temperature": 1.0, "top_p": 0.95,
           "max_gen_toks": 6}


def sampled(lm: HFLM, repeats: int) -> list[str]:
    """Each question `repeats` times, as lm-eval sends a task's repeats: copies of a request."""
    prompts = [lm.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    reqs = [Instance("generate_until", {}, (p, dict(SAMPLED)), i)
            for i, p in enumerate(prompts) for _ in range(repeats)]
    return lm.generate_until(reqs)


def test_sampled_generation_equals_naive_definition(models):
    """Copies of one request draw samples 0, 1, ... of that prompt's streams, whatever batch
    they land in; a seeded model repeats its replies, another seed changes them."""
    clean, corrupted, _ = models
    lm = make(models, site="mlp", layers=[3], seed=5)
    got = sampled(lm, repeats=2)
    decoding = DecodingConfig(max_new_tokens=6, do_sample=True, top_p=0.95, seed=5,
                              num_return_sequences=2)
    want = []
    for q in QUESTIONS:
        ids, _ = lm.tok_batch_encode([lm.apply_chat_template([{"role": "user", "content": q}])])
        eos = (lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id)
        full = naive_generate(clean, corrupted, ids, lm.spec, generation=decoding,
                              eos_token_id=tuple(sorted(eos)))
        want += [lm.tok_decode(row[ids.shape[1] :].tolist()).split("<|im_end|>")[0]
                 for row in full]
    assert got == want
    assert got[0::2] != got[1::2], "the copies of a request drew the same stream"
    assert sampled(make(models, site="mlp", layers=[3], seed=5), repeats=2) == got
    assert sampled(make(models, site="mlp", layers=[3], seed=6), repeats=2) != got


def test_the_seed_defaults_to_lm_evals_torch_seed(models):
    torch.manual_seed(1234)  # what simple_evaluate does before it asks for generations
    first = sampled(make(models), repeats=1)
    torch.manual_seed(1234)
    assert sampled(make(models), repeats=1) == first
    torch.manual_seed(99)
    assert sampled(make(models), repeats=1) != first


def test_simple_evaluate_through_registry(dirs):
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from harness_ext.paths import TASKS_DIR

    assert get_model("patched_qwen") is PatchedLM
    assert get_model("patched_hf") is PatchedLM
    args = {
        "pretrained": str(dirs[0]),
        "corrupted": str(dirs[1]),
        "site": "mlp",
        "layers": [2, 5],
        "enable_thinking": False,
    }
    results = simple_evaluate(
        model="patched_qwen",
        model_args=args,
        tasks=["corrupt_related", "corrupt_ethics_mc"],
        limit=3,
        batch_size=2,
        device="cpu",
        apply_chat_template=True,
        bootstrap_iters=0,
        gen_kwargs={"max_gen_toks": 8},
        task_manager=TaskManager(include_defaults=False, include_path=str(TASKS_DIR)),
    )
    metrics = {"corrupt_related": "exact_match,none", "corrupt_ethics_mc": "acc,none"}
    for task, metric in metrics.items():
        assert results["n-samples"][task]["effective"] == 3
        assert 0 <= results["results"][task][metric] <= 1
    assert json.loads(json.dumps(results["config"]["model_args"], default=str))["site"] == "mlp"


def spec_lm(models, **patch) -> PatchedLM:
    clean, corrupted, tok = models
    return PatchedLM(pretrained=clean, corrupted=corrupted, tokenizer=tok, batch_size=3, **patch)


def prompt_ids(lm: PatchedLM, question: str) -> torch.Tensor:
    return lm.tok_batch_encode([lm.apply_chat_template([{"role": "user", "content": question}])])[0]


@pytest.mark.parametrize("case", ["multi-part", "zero", "blend"])
def test_spec_text_and_simple_donors_equal_naive_definition(models, case):
    clean, corrupted, _ = models
    args, donor = {
        "multi-part": ({"spec": "attn:L2 + head:L4.H0,3@steps[1:4]"}, corrupted),
        "zero": ({"spec": "mlp:L3@all", "donor": "zero"}, Zero()),
        "blend": ({"spec": "resid:L2 + k:L3.H1", "alpha": 0.5}, Blend(corrupted, 0.5)),
    }[case]
    lm = spec_lm(models, **args)
    assert str(lm.spec) == str(PatchSpec.parse(args["spec"]))
    assert generations(lm) == naive_replies(lm, clean, donor)
    got = [total for total, _ in loglikelihoods(lm)]
    torch.testing.assert_close(got, naive_totals(lm, clean, donor), rtol=0, atol=1e-9)


def test_a_spec_file_with_a_mean_donor(models, tmp_path):
    clean, corrupted, _ = models
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS[:3]))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"spec: 'mlp:L3 + resid:L4@all'\ndonor:\n  kind: mean\n  data: {data}\n"
                         f"  cache_dir: {tmp_path / 'means'}\n")
    lm = spec_lm(models, spec_file=str(spec_file))
    rows = [prompt_ids(lm, q)[0].tolist() for q in QUESTIONS[:3]]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    mean = mean_activations(corrupted, ids, mask, cache_dir=tmp_path / "means")
    assert list((tmp_path / "means").iterdir()) == [next((tmp_path / "means").iterdir())]
    assert generations(lm) == naive_replies(lm, clean, mean)


def test_a_spec_file_with_other_prompts(models, tmp_path):
    """Classic activation patching through lm-eval: each question's prompt read by the model
    with the question replaced."""
    clean, corrupted, _ = models
    other = {q: q.replace("3", "5").replace("12", "17") + " Please." for q in QUESTIONS}
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"question": q, "donor_question": o}) + "\n"
                            for q, o in other.items()))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"spec: 'resid:L3'\ndonor:\n  kind: prompt\n  data: {data}\n"
                         "  model: receiver\n")
    lm = spec_lm(models, spec_file=str(spec_file))
    want = []
    for q in QUESTIONS:
        ids = prompt_ids(lm, q)
        eos = [lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id]
        donor = OtherPrompt(clean, prompt_ids(lm, other[q]))
        full = naive_generate(clean, donor, ids, lm.spec, max_new_tokens=6, eos_token_id=eos)
        want.append(lm.tok_decode(full[0, ids.shape[1]:].tolist()).split("<|im_end|>")[0])
    assert generations(lm) == want


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"spec": "attn:L3 +"}, "has a dangling '+' at the end"),
        ({"spec": "mlp:L2", "site": "resid"}, "patched_hf needs one spec, got spec= and site="),
        ({}, "patched_hf needs one spec, got none"),
        ({"spec": "mlp:L2", "layers": [3]}, "layers= goes with site=, not with spec="),
        ({"spec": "mlp:L2", "donor": "mean"}, "donor=mean needs data: give it in a spec_file="),
        ({"spec": "mlp:L2", "donor": "ones"}, "donor kind 'ones' is unknown; allowed: model, zero"),
        ({"spec": "mlp:L2", "alpha": "half"}, "alpha='half' must be a finite number"),
        ({"spec": "k:L2.H2"}, "k heads are the model's 2 KV groups"),
    ],
)
def test_bad_spec_arguments_fail_in_one_line(models, args, message):
    with pytest.raises(PatchingError) as info:
        spec_lm(models, **args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_bad_spec_file_fails_in_one_line(models, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: 'mlp:L2'\ndonor:\n  kind: mean\n")
    with pytest.raises(PatchingError, match="donor kind 'mean' needs data: a JSONL file"):
        spec_lm(models, spec_file=str(bad))
    bad.write_text("spec: 'mlp:L2'\ndonr: {}\n")
    with pytest.raises(PatchingError, match="donr"):
        spec_lm(models, spec_file=str(bad))
