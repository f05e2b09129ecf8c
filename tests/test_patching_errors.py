"""Bad patching input fails fast: one line naming the value and what is allowed, before any work."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from finetune.tiny import random_qwen3
from patching import (
    PatchingError,
    PatchSpec,
    adapter_pair,
    patched_generate,
    patched_logprobs,
    sweep_generate,
)

torch.set_num_threads(1)


def tiny(**overrides) -> Qwen3ForCausalLM:
    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1)
    return random_qwen3(0, **(shape | overrides))


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    return tiny()


def raises(match: str, fn, *args, **kwargs) -> None:
    with pytest.raises(PatchingError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_the_issue_s_layer_message():
    spec = PatchSpec("resid", [40])
    raises(
        r"^layer 40 of part resid:L40 is out of range for a 36-layer model \(0\.\.35\)$",
        spec.check,
        Qwen3Config(num_hidden_layers=36),
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(site="residual", layers=[1]),
            r"unknown site 'residual'; allowed: resid, attn, mlp, head, resid_pre, resid_mid, "
            r"q, k, v",
        ),
        (
            dict(site="resid", layers=[1], positions="last"),
            r"unknown positions 'last'; allowed: newest, all, prompt\[i:j\] or steps\[a:b\]",
        ),
        (dict(site="resid", layers=[]), r"layers must not be empty"),
        (dict(site="resid", layers=[-1]), r"layers must hold non-negative ints, got -1"),
        (dict(site="resid", layers=[1, 1]), r"layers has duplicates"),
        (dict(site="resid", layers="3"), r"layers must hold non-negative ints, got '3'"),
        (dict(site="mlp", layers=[1], heads=[0]),
         r"heads=\[0\] is only allowed with site 'head' or 'q' or 'k' or 'v', not 'mlp'"),
        (dict(site="head", layers=[1]), r"site 'head' needs heads"),
    ],
)
def test_bad_spec(kwargs, match):
    raises(match, PatchSpec, **kwargs)


def test_out_of_range_layer_and_head_raise_before_any_work(model):
    calls = []
    handle = model.model.embed_tokens.register_forward_hook(lambda *a: calls.append(1))
    ids = torch.tensor([[1, 2, 3]])
    try:
        raises(
            r"layer 2 of part resid:L2 is out of range for a 2-layer model \(0\.\.1\)",
            patched_generate,
            model,
            model,
            ids,
            PatchSpec("resid", [2]),
        )
        raises(
            r"head 2 of part head:L1.H2 is out of range for a model with 2 attention heads "
            r"\(0\.\.1\)",
            sweep_generate,
            model,
            model,
            ids,
            [PatchSpec("head", [0], [0]), PatchSpec("head", [1], [2])],
        )
        raises(
            r"eos_token_id 64 is not a token id of a 64-token vocabulary \(0\.\.63\)",
            patched_generate,
            model,
            model,
            ids,
            PatchSpec("mlp", [0]),
            eos_token_id=64,
        )
        raises(
            r"attention_mask row 0 is not left-padded",
            patched_generate,
            model,
            model,
            ids,
            PatchSpec("mlp", [0]),
            torch.tensor([[1, 1, 0]]),
        )
        raises(
            r"max_new_tokens must be an int >= 0, got -1",
            patched_generate,
            model,
            model,
            ids,
            PatchSpec("mlp", [0]),
            max_new_tokens=-1,
        )
        raises(
            r"specs_per_batch must be an int >= 1, got 0",
            sweep_generate,
            model,
            model,
            ids,
            [PatchSpec("mlp", [0])],
            specs_per_batch=0,
        )
        raises(
            r"specs must hold PatchSpec objects or spec texts, got a dict",
            sweep_generate,
            model,
            model,
            ids,
            [{"site": "resid"}],
        )
        raises(
            r"continuation_lengths\[0\] = 3 must be an int in 1\.\.2 \(row 0 has 3 tokens\)",
            patched_logprobs,
            model,
            model,
            ids,
            PatchSpec("mlp", [0]),
            [3],
        )
    finally:
        handle.remove()
    assert not calls


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            dict(num_hidden_layers=3),
            r"donor and receiver differ in num_hidden_layers: receiver 2, donor 3",
        ),
        (dict(hidden_size=64), r"differ in hidden_size: receiver 32, donor 64"),
        (dict(head_dim=32), r"differ in head_dim: receiver 16, donor 32"),
        (dict(vocab_size=65), r"differ in vocab_size: receiver 64, donor 65"),
    ],
)
def test_mismatched_pair(model, overrides, match):
    raises(
        match,
        patched_generate,
        model,
        tiny(**overrides),
        torch.tensor([[1, 2]]),
        PatchSpec("resid", [0]),
    )


def test_unsupported_models(model):
    other = tiny()
    other.config._attn_implementation = "flash_attention_2"
    raises(
        r"donor uses attn_implementation='flash_attention_2'; load it with 'sdpa' or 'eager'",
        patched_generate,
        model,
        other,
        torch.tensor([[1, 2]]),
        PatchSpec("resid", [0]),
    )
    other.config.model_type = "gpt2"
    raises(
        r"model type 'gpt2' has no architecture entry; supported: gemma2, gemma3_text, llama, "
        r"mistral, olmo2, phi3, qwen2, qwen3, qwen3_moe$",
        patched_generate,
        model,
        other,
        torch.tensor([[1, 2]]),
        PatchSpec("resid", [0]),
    )


def test_not_a_model(model):
    raises(
        r"expected a transformers causal LM, a PeftModel or an AdapterSide, got a str",
        patched_generate,
        "Qwen/Qwen3-4B",
        model,
        torch.tensor([[1]]),
        PatchSpec("mlp", [0]),
    )
    raises(r"adapter_pair needs a peft.PeftModel, got a Qwen3ForCausalLM", adapter_pair, model)
