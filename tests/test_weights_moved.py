"""Where the weights moved (``repair.weights_moved``) against hand computations on a tiny
random Qwen3 pair: a full fine-tune's known edits, and a LoRA adapter's known factors."""

from __future__ import annotations

import copy
import math

import torch
from peft import LoraConfig, get_peft_model

from finetune.tiny import random_qwen3
from repair.weights_moved import relative_change

HEAD_DIM = 16  # random_qwen3: hidden 64, 4 query heads of 16


def norm2(tensors: list[torch.Tensor]) -> float:
    return float(sum(t.double().square().sum() for t in tensors))


def layer_params(model: torch.nn.Module, layer: int, *prefixes: str) -> list[torch.Tensor]:
    """Every parameter of ``model.layers.<layer>`` whose name starts with one of ``prefixes``
    (Qwen3's attention path: input_layernorm + self_attn; its MLP path:
    post_attention_layernorm + mlp), found by name, independently of the code under test."""
    stem = f"model.layers.{layer}."
    return [p for n, p in model.named_parameters()
            if n.startswith(stem) and n[len(stem):].startswith(prefixes)]


ATTN, MLP = ("input_layernorm", "self_attn."), ("post_attention_layernorm", "mlp.")


def head_params(model: torch.nn.Module, layer: int, head: int) -> list[torch.Tensor]:
    """A head's own weights: its query rows and its output-projection columns."""
    rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    attn = model.model.layers[layer].self_attn
    return [attn.q_proj.weight[rows], attn.o_proj.weight[:, rows]]


def test_full_fine_tune_change_is_the_hand_computed_norm_ratio() -> None:
    clean = random_qwen3(seed=0, dtype=torch.float64)
    bad = copy.deepcopy(clean)
    with torch.no_grad():
        bad.model.layers[1].mlp.down_proj.weight.add_(0.1)             # (64, 128): every entry
        bad.model.layers[0].self_attn.q_proj.weight[32:48].add_(0.2)   # head 2's query rows
    names = ["mlp:L1", "attn:L1", "block:L1", "head:L0.H2", "head:L0.H1", "attn:L0",
             "block:L2"]
    got = relative_change(clean, bad, names)
    mlp_moved = 0.1 * math.sqrt(64 * 128)
    head_moved = 0.2 * math.sqrt(HEAD_DIM * 64)
    expected = {
        "mlp:L1": mlp_moved / math.sqrt(norm2(layer_params(clean, 1, *MLP))),
        "attn:L1": 0.0,
        "block:L1": mlp_moved / math.sqrt(norm2(layer_params(clean, 1, *ATTN, *MLP))),
        "head:L0.H2": head_moved / math.sqrt(norm2(head_params(clean, 0, 2))),
        "head:L0.H1": 0.0,
        "attn:L0": head_moved / math.sqrt(norm2(layer_params(clean, 0, *ATTN))),
        "block:L2": 0.0,
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-15), name
    assert set(relative_change(clean, copy.deepcopy(clean), names).values()) == {0.0}


def test_lora_change_is_scaling_times_b_a_over_the_frozen_weight() -> None:
    clean = random_qwen3(seed=0, dtype=torch.float64)
    lora = get_peft_model(copy.deepcopy(clean), LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"], lora_dropout=0.0))
    q = lora.base_model.model.model.layers[0].self_attn.q_proj
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B starts at zero: only layer 0's q_proj update is non-zero
        q.lora_A["default"].weight.copy_(torch.randn(2, 64, generator=generator))
        q.lora_B["default"].weight.copy_(torch.randn(64, 2, generator=generator))
    delta = 4 / 2 * q.lora_B["default"].weight @ q.lora_A["default"].weight  # (64, 64)
    got = relative_change(None, lora, ["attn:L0", "head:L0.H3", "mlp:L0", "attn:L1"])
    rows = slice(3 * HEAD_DIM, 4 * HEAD_DIM)
    assert math.isclose(got["attn:L0"], math.sqrt(norm2([delta]) / norm2(
        layer_params(clean, 0, *ATTN))), rel_tol=1e-12)
    assert math.isclose(got["head:L0.H3"], math.sqrt(norm2([delta[rows]]) / norm2(
        head_params(clean, 0, 3))), rel_tol=1e-12)
    assert got["mlp:L0"] == got["attn:L1"] == 0.0
