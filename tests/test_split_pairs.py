"""Pairs split over devices: accelerate's big-model dispatch (disk offload included) and
KV caches split by device give the tokens of the pair on one device, at every site and both
position modes; ``patched_hf`` takes ``parallelize=True`` for both models of a pair.

With no GPU here, the split is over the CPU and the disk (accelerate's ``AlignDevicesHook``s
load each offloaded block's weights for its forward), and a cache split over devices is forced
by naming the CPU twice (``cpu`` and ``cpu:0`` are different devices to torch, one memory)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from model_pairs import perturbed_copy
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_ext.patched_lm import PatchedLM
from patching import SITE_NAMES, PatchSpec, patched_generate, sweep_generate
from patching.cache import SlotCache
from patching.models import Runner

torch.set_num_threads(1)
HEADED = ("head", "q", "k", "v")


@pytest.fixture(scope="module")
def dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(clean dir, corrupted dir): the corrupted copy differs in every block."""
    return tiny_model_dir, perturbed_copy(tiny_model_dir, tmp_path_factory.mktemp("corrupted"),
                                          first_block=0, seed=2)


def half_on_disk(layers: int) -> dict[str, str]:
    """The blocks of the upper half offloaded to disk, the rest on the CPU."""
    return {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu",
            "lm_head": "cpu", **{f"model.layers.{i}": "cpu" if i < layers // 2 else "disk"
                                 for i in range(layers)}}


def prompts(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    texts = ["Solve 3x + 7 = 22 for x.", "Hi"]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    return batch["input_ids"], batch["attention_mask"]


def every_case(layers: int) -> list[PatchSpec]:
    middle = layers // 2  # the first offloaded block: a donor value meets an offloaded receiver
    return [PatchSpec(site, [middle - 1, middle], [0] if site in HEADED else None, positions)
            for site in SITE_NAMES for positions in ("newest", "all")]


def test_disk_offloaded_pair_gives_the_tokens_of_the_pair_in_memory(dirs, tmp_path) -> None:
    plain = [AutoModelForCausalLM.from_pretrained(d).eval() for d in dirs]
    layers = plain[0].config.num_hidden_layers
    split = [AutoModelForCausalLM.from_pretrained(d, device_map=half_on_disk(layers),
                                                  offload_folder=str(tmp_path / name)).eval()
             for d, name in zip(dirs, ("clean", "corrupted"), strict=True)]
    assert {"cpu", "disk"} == set(split[0].hf_device_map.values())
    assert str(next(split[0].model.layers[-1].parameters()).device) == "meta"  # really offloaded
    ids, mask = prompts(AutoTokenizer.from_pretrained(dirs[0]))
    cases = every_case(layers)
    for spec in cases:
        want = patched_generate(*plain, ids, spec, mask, max_new_tokens=5)
        got = patched_generate(*split, ids, spec, mask, max_new_tokens=5)
        assert torch.equal(want, got), spec
    # a sweep (rows split and copied in the caches) over the offloaded pair
    assert all(torch.equal(a, b) for a, b in zip(
        sweep_generate(*plain, ids, cases[:6], mask, max_new_tokens=4),
        sweep_generate(*split, ids, cases[:6], mask, max_new_tokens=4), strict=True))


def test_caches_split_over_devices_give_the_tokens_of_one_cache(dirs, monkeypatch) -> None:
    pair = [AutoModelForCausalLM.from_pretrained(d).eval() for d in dirs]
    layers = pair[0].config.num_hidden_layers
    ids, mask = prompts(AutoTokenizer.from_pretrained(dirs[0]))
    cases = every_case(layers)
    want = [patched_generate(*pair, ids, spec, mask, max_new_tokens=5) for spec in cases]
    sweep = sweep_generate(*pair, ids, cases, mask, max_new_tokens=5)
    # every other block "elsewhere": as many cache tensors as blocks
    devices = [torch.device("cpu") if i % 2 else torch.device("cpu", 0) for i in range(layers)]
    monkeypatch.setattr(Runner, "layer_devices", property(lambda self: devices))
    cache = SlotCache(pair[0].config, 16, layers, 2, 8, torch.float32, devices)
    assert len(cache.groups) == layers
    for spec, expected in zip(cases, want, strict=True):
        assert torch.equal(patched_generate(*pair, ids, spec, mask, max_new_tokens=5), expected)
    assert all(torch.equal(a, b) for a, b in zip(
        sweep, sweep_generate(*pair, ids, cases, mask, max_new_tokens=5), strict=True))


def generations(lm: PatchedLM) -> list[str]:
    questions = ["Solve 3x + 7 = 22 for x.", "What is 12 + 30?", "Hi"]
    reqs = [Instance("generate_until", {},
                     (lm.apply_chat_template([{"role": "user", "content": q}]),
                      {"until": ["<|im_end|>"], "do_sample": False, "max_gen_toks": 6}), i)
            for i, q in enumerate(questions)]
    return lm.generate_until(reqs)


def test_patched_hf_parallelize_splits_both_models_alike(dirs, tmp_path) -> None:
    clean, corrupted = (str(d) for d in dirs)
    args = {"pretrained": clean, "corrupted": corrupted, "site": "mlp", "layers": [1, 2],
            "batch_size": 2, "device": "cpu"}
    whole = PatchedLM(**args)
    # one block's worth of CPU memory: accelerate puts the rest on disk
    split = PatchedLM(**args, parallelize=True, max_cpu_memory="150KB",
                      offload_folder=str(tmp_path / "offload"))
    receiver, donor = split.receiver, split.donor
    assert "disk" in receiver.hf_device_map.values()
    assert donor.hf_device_map == receiver.hf_device_map  # block k of both in one place
    assert (tmp_path / "offload" / "corrupted").is_dir()  # its own weights, not the clean's
    assert generations(split) == generations(whole)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case of a machine without CUDA")
def test_patched_hf_parallelize_without_cuda_runs_on_the_cpu(dirs, tmp_path) -> None:
    """HFLM's default device (``cuda``) and the CLI's (``cuda:0``) would be where the inputs
    go."""
    clean, corrupted = (str(d) for d in dirs)
    args = {"pretrained": clean, "corrupted": corrupted, "site": "mlp", "layers": [1],
            "batch_size": 2}
    whole = generations(PatchedLM(**args, device="cpu"))
    for device in ({}, {"device": "cuda:0"}):
        split = PatchedLM(**args, **device, parallelize=True, max_cpu_memory="150KB",
                          offload_folder=str(tmp_path / "offload"))
        assert split.device == torch.device("cpu")
        assert generations(split) == whole
