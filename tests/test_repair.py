"""Weight restoration (`patching.components`) on tiny random float64 models of several families.

The corrupted model is the clean one with noise on EVERY parameter (norms included), so a
restored entry is told from an unrestored one by value; each family's facts (paths, query
rows, output columns) come from `patching.architectures`, nothing here names a module.
"""

from __future__ import annotations

import copy

import pytest
import torch
from families import random_model
from peft import LoraConfig, get_peft_model

from patching import PatchingError
from patching.architectures import architecture_for
from patching.components import (
    KINDS,
    OUTSIDE,
    Component,
    Selection,
    components_of,
    parameters_touched,
    restore,
    restored,
)
from patching.hooks import capturing

torch.set_num_threads(1)
FAMILIES = ["llama", "qwen3", "phi3", "qwen3_moe", "gemma2", "olmo2"]
IDS = torch.tensor([[5, 17, 3, 44, 9, 21, 60]])


def corrupt(clean: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """The clean model with seeded noise on every parameter."""
    bad = copy.deepcopy(clean)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bad.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return bad


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    clean = random_model(request.param)
    return clean, corrupt(clean)


def every(config, kinds: tuple[str, ...]) -> Selection:
    return Selection(tuple(c for kind in kinds for c in components_of(kind, config)))


def test_restoring_everything_gives_the_clean_model_bit_for_bit(pair) -> None:
    clean, bad = pair
    for kinds in (("block", OUTSIDE), ("attn", "mlp", OUTSIDE)):
        with restored(bad, clean, every(bad.config, kinds)) as model:
            assert same(state(model), clean.state_dict())
            assert torch.equal(logits(model), logits(clean))


def test_restoring_nothing_gives_the_corrupted_model(pair) -> None:
    clean, bad = pair
    before, out = state(bad), logits(bad)
    with restored(bad, clean, Selection()) as model:
        assert same(state(model), before) and torch.equal(logits(model), out)


def test_components_partition_the_parameters(pair) -> None:
    """Blocks = attn + mlp, heads lie inside attn, and every scalar lies in some block or
    outside: the counts add up, as a brute-force count of restored entries says."""
    clean, bad = pair
    config = bad.config
    total = parameters_touched(bad, every(config, ("block", OUTSIDE)))
    assert total[0] == total[1] == sum(p.numel() for p in bad.parameters())
    for layer in range(config.num_hidden_layers):
        block = parameters_touched(bad, Selection([f"block:L{layer}"]))[0]
        parts = [parameters_touched(bad, Selection([f"{k}:L{layer}"]))[0] for k in ("attn", "mlp")]
        assert block == sum(parts)
    picked = Selection(["attn:L1", "mlp:L2", OUTSIDE])
    before = state(bad)
    with restored(bad, clean, picked) as model:
        changed = sum(int((before[k] != v).sum()) for k, v in model.state_dict().items()
                      if k in before)
    tied = int(bad.config.tie_word_embeddings) * bad.get_input_embeddings().weight.numel()
    assert changed == parameters_touched(bad, picked)[0] + tied  # state_dict lists a tie twice


def test_a_restored_head_changes_only_its_own_output_columns(pair) -> None:
    clean, bad = pair
    arch = architecture_for(bad.config)
    if arch.head_weights_unsupported:
        with pytest.raises(PatchingError, match="cannot change one head's weights alone"):
            restore(bad, clean, ["head:L1.H2"])
        return
    heads, size = bad.config.num_attention_heads, arch.head_dim(bad.config)
    acts: dict = {}
    with capturing(bad, arch, [("head", 1)], acts):
        logits(bad)
    before = acts[("head", 1)].unflatten(-1, (heads, size))
    weights = state(bad)
    with restored(bad, clean, ["head:L1.H2"]) as model:
        with capturing(model, arch, [("head", 1)], acts):
            logits(model)
        after = acts[("head", 1)].unflatten(-1, (heads, size))
        moved = {k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])}
        query = model.get_submodule(f"model.layers.1.{arch.query}").weight
        rows = [r for r in range(query.shape[0]) if not torch.equal(query[r], weights[
            f"model.layers.1.{arch.query}.weight"][r])]
    assert torch.equal(after[..., [0, 1, 3], :], before[..., [0, 1, 3], :])
    assert not torch.equal(after[..., 2, :], before[..., 2, :])
    # the head's query rows and output columns only: K/V of its group and shared norms stay
    assert moved == {f"model.layers.1.{arch.query}.weight",
                     f"model.layers.1.{arch.output_projection}.weight"}
    assert rows == list(range(2 * size, 3 * size))


def test_the_context_manager_puts_the_weights_back_also_on_error(pair) -> None:
    clean, bad = pair
    before = state(bad)
    with pytest.raises(RuntimeError, match="mid-way"):
        with restored(bad, clean, ["block:L0", "attn:L0", "mlp:L2", OUTSIDE]):
            assert not same(state(bad), before)
            raise RuntimeError("mid-way")
    assert same(state(bad), before)


def test_restore_is_in_place_and_returns_the_model() -> None:
    clean = random_model("qwen3")
    bad = corrupt(clean)
    assert restore(bad, clean, ["mlp:L2"]) is bad
    layers, fixed = bad.model.layers, clean.model.layers
    assert torch.equal(layers[2].mlp.up_proj.weight, fixed[2].mlp.up_proj.weight)
    assert not torch.equal(layers[1].mlp.up_proj.weight, fixed[1].mlp.up_proj.weight)


@pytest.mark.parametrize("family", ["qwen3", "phi3"])
def test_lora_switch_off_equals_merging_the_adapter_only_elsewhere(family: str) -> None:
    base = random_model(family)
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"] if family == "phi3" else [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    torch.manual_seed(3)
    peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                          init_lora_weights=False)).double()
    selection = Selection(["head:L1.H2", "mlp:L2", "attn:L0"])
    expected = copy.deepcopy(base)
    plain, lm = dict(expected.named_parameters()), peft.get_base_model()
    size = 16  # head_dim of these tiny models
    head = slice(2 * size, 3 * size)
    query = "qkv_proj" if family == "phi3" else "q_proj"

    def switched_off(name: str, delta: torch.Tensor) -> None:
        """By hand: the selection's entries of one adapted weight keep the base's values."""
        if ".layers.0.self_attn." in name or ".layers.2.mlp." in name:
            delta.zero_()
        elif f".layers.1.self_attn.{query}" in name:
            delta[head] = 0  # head 2's query rows (Phi-3: the first rows of qkv_proj)
        elif ".layers.1.self_attn.o_proj" in name:
            delta[:, head] = 0  # its input columns of the output projection

    with torch.no_grad():
        for name, module in lm.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                delta = module.get_delta_weight("default").clone()
                switched_off(name, delta)
                plain[f"{name}.weight"].add_(delta)
    before = state(peft)
    with restored(peft, None, selection) as model:
        assert torch.allclose(logits(model), logits(expected), atol=1e-10, rtol=0)
    assert same(state(peft), before)
    assert not torch.allclose(logits(peft), logits(expected), atol=1e-6)


def test_bad_input_is_one_line() -> None:
    clean = random_model("qwen3")
    bad = corrupt(clean)
    wider = random_model("qwen3", intermediate_size=96)
    peft = get_peft_model(copy.deepcopy(clean), LoraConfig(r=2, target_modules=["q_proj"]))
    cases = [
        (lambda: Selection(["mlp:L9"]).check(clean.config),
         "component mlp:L9: layer 9 is out of range for a 3-layer model (0..2)"),
        (lambda: restore(bad, clean, ["head:L0.H4"]),
         "component head:L0.H4: head 4 is out of range for a model with 4 attention heads"),
        (lambda: Component.parse("neuron:L3"), "unknown component kind 'neuron'; allowed: block"),
        (lambda: Component.parse("mlp 3"), "component 'mlp 3': expected KIND:L<layer>"),
        (lambda: Component.parse("head:L3"), "expected KIND:L<layer>"),
        (lambda: Selection(["mlp:L1", "mlp:L1"]), "has duplicates"),
        (lambda: Component("outside", 3), "component outside: layer=3, expected none"),
        (lambda: restore(bad, wider, ["mlp:L0"]),
         "parameter model.layers.0.mlp.gate_proj.weight is (128, 64) in the corrupted model, "
         "(96, 64) in the clean one"),
        (lambda: restore(bad, random_model("llama"), ["mlp:L0"]),
         "the corrupted model is Qwen3 and the clean one Llama (3.x)"),
        (lambda: restore(peft, clean, ["mlp:L0"]), "pass clean=None"),
        (lambda: restore(bad, None, ["mlp:L0"]), "needs the clean model"),
    ]
    for call, message in cases:
        with pytest.raises(PatchingError) as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert same(state(bad), corrupt(clean).state_dict())  # nothing was written on the way
    assert {str(Component.parse(n)) for n in ("block:L2", "head:L0.H3", OUTSIDE)} == {
        "block:L2", "head:L0.H3", OUTSIDE}
    assert set(KINDS) == {"block", "attn", "mlp", "head", OUTSIDE}
