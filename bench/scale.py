"""The engine at the shapes users study: random-init models with real configs, no weights.

    .venv/bin/python bench/scale.py [--only NAME ...] [--tokens 16] [--threads 2] [--device cpu]

Each shape runs in its own process (so peak memory is its own): a receiver and a donor
(receiver + 1% noise, a stand-in for a fine-tune) with the exact config of a public model,
built in the shape's dtype. It times, on 2 left-padded prompts (24 and 16 tokens) x
`--tokens` new tokens: the receiver's own greedy `generate`, `patched_generate` at a middle
layer (resid, `newest`) and at the last layer (mlp, `all`), and one `sweep_generate` over
every layer (resid, `newest`); it records peak memory (RSS on CPU, max allocated on a GPU),
the bf16 / fp32 agreement of patched tokens where an fp32 pair fits, and the peak memory of
the one-base LoRA pair (`adapter_pair`, r 8 on every linear layer) against two full copies.
Shapes too large for this machine as a pair run depth-truncated (the exact layer shape, fewer
layers), and say so. Writes bench/results/scale.md.

Random weights say nothing about replies: the figures are time and memory at real shapes,
and token agreement of a near-uniform random model is a lower bound on a trained one's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/ itself would shadow the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "scale.md"
GIB = 1024**3


@dataclass(frozen=True)
class Shape:
    """A public model's config (the fields that matter for shape), and how it is run here."""

    name: str
    model_type: str
    config: dict[str, Any]
    dtype: str  # "float32" | "bfloat16"
    keep_layers: int | None = None  # run only this many layers (too large for 24 GB as a pair)
    fp32_agreement: bool = False  # an fp32 pair fits: compare bf16 tokens with fp32 tokens
    extra: dict[str, Any] = field(default_factory=dict)


# Configs as published in each model's config.json (hidden size, layers, heads, KV heads,
# head_dim, MLP width, vocabulary, tied embeddings, sliding window, soft-caps).
SHAPES = [
    Shape("Qwen3-0.6B", "qwen3", dict(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, vocab_size=151936, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
    ), "float32", fp32_agreement=True),
    Shape("Qwen3-4B", "qwen3", dict(
        hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=9728, vocab_size=151936, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
    ), "bfloat16"),
    Shape("Llama-3.2-3B", "llama", dict(
        hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
        head_dim=128, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True,
        rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=131072,
    ), "bfloat16"),
    Shape("Qwen2.5-0.5B", "qwen2", dict(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768,
    ), "float32", fp32_agreement=True),
    Shape("Llama-3.2-1B", "llama", dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        head_dim=64, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True,
        rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=131072,
    ), "float32", fp32_agreement=True),
    Shape("OLMo-2-0425-1B", "olmo2", dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16,
        intermediate_size=8192, vocab_size=100352, tie_word_embeddings=False,
        rope_theta=500000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
    ), "float32", fp32_agreement=True),
    Shape("Gemma-3-1B", "gemma3_text", dict(
        hidden_size=1152, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
        head_dim=256, intermediate_size=6912, vocab_size=262144, sliding_window=512,
        query_pre_attn_scalar=256, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    ), "float32", fp32_agreement=True),
    Shape("Gemma-2-2B", "gemma2", dict(
        hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, intermediate_size=9216, vocab_size=256000, sliding_window=4096,
        query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        rms_norm_eps=1e-6, max_position_embeddings=8192,
    ), "bfloat16"),
    Shape("Phi-3-mini-4k", "phi3", dict(
        hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        intermediate_size=8192, vocab_size=32064, sliding_window=2047, tie_word_embeddings=False,
        rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=4096,
    ), "bfloat16"),
    Shape("Mistral-7B-v0.3", "mistral", dict(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=14336, vocab_size=32768, sliding_window=None,
        tie_word_embeddings=False, rope_theta=1000000.0, rms_norm_eps=1e-5,
        max_position_embeddings=32768,
    ), "bfloat16", keep_layers=16),
    Shape("Qwen3-30B-A3B", "qwen3_moe", dict(
        hidden_size=2048, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
        head_dim=128, intermediate_size=6144, moe_intermediate_size=768, num_experts=128,
        num_experts_per_tok=8, norm_topk_prob=True, vocab_size=151936,
        tie_word_embeddings=False, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=40960,
    ), "bfloat16", keep_layers=4),
]
BY_NAME = {s.name: s for s in SHAPES}


def build(shape: Shape, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """A random-init model of the shape, created directly in `dtype` (no fp32 detour)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(shape.config)
    if shape.keep_layers is not None:
        fields["num_hidden_layers"] = shape.keep_layers
    config = AutoConfig.for_model(shape.model_type, **fields, **shape.extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def noisy_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    donor = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in donor.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            p.add_(noise * (0.01 * float(p.float().std()) if p.numel() > 1 else 0.0))
    return donor


def prompts(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, min(vocab, 30000), (2, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :8] = 0
    return ids * mask, mask


def peak_memory(device: torch.device) -> float:
    """GiB: max allocated on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def timed(fn, device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def measure(shape: Shape, tokens: int, device: torch.device, lora: bool) -> dict[str, Any]:
    """One shape, in this process: times, memory, agreement (module docstring)."""
    from patching import PatchSpec, adapter_pair, every_layer, patched_generate, sweep_generate

    dtype = getattr(torch, shape.dtype)
    row: dict[str, Any] = {"name": shape.name}
    t0 = time.perf_counter()
    receiver = build(shape, dtype, 0).to(device)
    row["params_b"] = sum(p.numel() for p in receiver.parameters()) / 1e9
    if lora:
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(receiver, LoraConfig(r=8, target_modules="all-linear"))
        receiver, donor = adapter_pair(peft_model)
    else:
        donor = noisy_copy(receiver, 1).to(device)
    row["build_s"] = time.perf_counter() - t0
    layers = shape.keep_layers or shape.config["num_hidden_layers"]
    ids, mask = (t.to(device) for t in prompts(shape.config["vocab_size"]))
    new = {"max_new_tokens": tokens, "eos_token_id": ()}
    with torch.inference_mode():
        model = receiver.model if lora else receiver  # the PeftModel of an adapter pair

        def own() -> torch.Tensor:
            """The receiver's own greedy `generate` (for a LoRA pair: the adapter off)."""
            off = model.disable_adapter() if lora else contextlib.nullcontext()
            with off:
                return model.generate(ids, attention_mask=mask, max_new_tokens=tokens,
                                      min_new_tokens=tokens, do_sample=False)

        timed(own, device)  # warm-up
        row["generate_s"], _ = timed(own, device)
        mid = PatchSpec("resid", [layers // 2], positions="newest")
        last = PatchSpec("mlp", [layers - 1], positions="all")
        row["mid_s"], mid_out = timed(
            lambda: patched_generate(receiver, donor, ids, mid, mask, **new), device)
        row["last_s"], _ = timed(
            lambda: patched_generate(receiver, donor, ids, last, mask, **new), device)
        if not lora:
            specs = every_layer("resid", layers, "newest")
            row["sweep_s"], _ = timed(
                lambda: sweep_generate(receiver, donor, ids, specs, mask, **new), device)
            row["sweep_specs"] = len(specs)
    row["peak_gib"] = peak_memory(device)
    if shape.fp32_agreement and not lora:
        bf16 = [m.to(torch.bfloat16) for m in (receiver, donor)]
        with torch.inference_mode():
            low = patched_generate(*bf16, ids, mid, mask, **new)
        new_tokens = mid_out[:, ids.shape[1]:]
        row["bf16_agreement"] = float((low[:, ids.shape[1]:] == new_tokens).float().mean())
        first = (low[:, ids.shape[1]:] != new_tokens).float().argmax(dim=1)
        row["bf16_first_diff"] = [int(f) if (low[i, ids.shape[1]:] != new_tokens[i]).any()
                                  else None for i, f in enumerate(first)]
    return row


def run_one(name: str, tokens: int, device: str, lora: bool, threads: int) -> dict[str, Any]:
    """Measure one shape in a fresh interpreter; its JSON row, or the error it ended with."""
    cmd = [sys.executable, __file__, "--child", name, "--tokens", str(tokens),
           "--device", device, "--threads", str(threads)] + (["--child-lora"] if lora else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {"name": name, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt(row: dict[str, Any], key: str, spec: str = ".2f") -> str:
    value = row.get(key)
    return "-" if value is None else format(value, spec)


def render(rows: list[dict[str, Any]], lora_rows: dict[str, dict[str, Any]], tokens: int,
           device: str, threads: int, wall: float) -> str:
    header = (
        "# The engine at real shapes\n\n"
        f"Written by `bench/scale.py` in one run: torch {torch.__version__}, device {device}, "
        f"{threads} thread(s), {platform.processor() or platform.machine()}. Random-init "
        "models with the public configs (module docstring), 2 left-padded prompts (24 and 16 "
        f"tokens) x {tokens} new tokens, greedy, no eos. Donor = receiver + 1% noise. Each "
        "shape ran in its own process: peak memory is that process's peak RSS (CPU), and it "
        "includes building both models.\n\n"
    )
    if not device.startswith("cuda"):
        header += (
            "GPU: none was available to this session (the device machine was not lent to "
            "this task), so there are no GPU rows and no tokens/s next to a memory-bandwidth "
            "limit.\n\n"
        )
    table = [
        "| shape | dtype | layers run | params (B) | build | `generate` | patched mid resid "
        "`newest` | ratio | patched last mlp `all` | ratio | sweep every layer | per spec vs "
        "`generate` | peak RSS | bf16 = fp32 tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shape = BY_NAME[row["name"]]
        layers = shape.keep_layers or shape.config["num_hidden_layers"]
        run_layers = (f"{layers} of {shape.config['num_hidden_layers']}"
                      if shape.keep_layers else str(layers))
        if "error" in row:
            table.append(f"| {row['name']} | {shape.dtype} | {run_layers} | "
                         + " | ".join(["-"] * 10) + f" | {row['error']} |")
            continue
        g = row["generate_s"]
        per_spec = row["sweep_s"] / row["sweep_specs"] / g if "sweep_s" in row else None
        agree = row.get("bf16_agreement")
        table.append(
            f"| {row['name']} | {shape.dtype} | {run_layers} | {row['params_b']:.2f} | "
            f"{row['build_s']:.0f} s | {g:.2f} s | {row['mid_s']:.2f} s | "
            f"{row['mid_s'] / g:.2f}x | {row['last_s']:.2f} s | {row['last_s'] / g:.2f}x | "
            f"{fmt(row, 'sweep_s')} s ({row.get('sweep_specs', '-')} specs) | "
            f"{'-' if per_spec is None else f'{per_spec:.2f}x'} | {row['peak_gib']:.1f} GiB | "
            f"{'-' if agree is None else f'{agree:.0%}'} |"
        )
    lora_table = [
        "", "## One-base LoRA pair vs two full copies", "",
        "The same measurement with the donor a LoRA adapter (r 8, every linear layer) over "
        "the receiver's own weights (`adapter_pair`: one copy of the base). The ratio is to "
        "the plain model's `generate` (the two-copies row), which is what the patched run "
        "replaces. The last column is `generate` of the PEFT-wrapped model with its adapter "
        "off: on bf16 shapes it is slower than the plain model's. Profiled on a 4-layer "
        "Qwen3-4B shape, most of the difference is one `aten::copy_` of (2, hidden, vocab) "
        "per call: the first step's last-position logits go through a batched matmul that "
        "copies the expanded unembedding. The engine computes logits from a 2-D slice and "
        "does not take that path.", "",
        "| shape | two copies: peak RSS | one base + LoRA: peak RSS | patched mid resid | "
        "ratio to `generate` | PEFT model's `generate`, adapter off |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lora_row = lora_rows.get(row["name"])
        if lora_row is None:
            continue
        if "error" in lora_row:
            lora_table.append(f"| {row['name']} | {lora_row['error']} | | | | |")
            continue
        ratio = ("-" if "error" in row else f"{lora_row['mid_s'] / row['generate_s']:.2f}x")
        lora_table.append(
            f"| {row['name']} | {fmt(row, 'peak_gib', '.1f')} GiB | "
            f"{lora_row['peak_gib']:.1f} GiB | {lora_row['mid_s']:.2f} s | {ratio} | "
            f"{lora_row['generate_s']:.2f} s |"
        )
    return header + "\n".join(table + lora_table) + f"\n\nBench wall time: {wall:.0f} s.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BY_NAME), help="shapes to run")
    parser.add_argument("--lora", nargs="*", default=["Qwen3-0.6B", "Qwen3-4B", "Mistral-7B-v0.3"],
                        choices=list(BY_NAME), help="shapes also measured as a one-base LoRA pair")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        row = measure(BY_NAME[args.child], args.tokens, torch.device(args.device),
                      args.child_lora)
        print(json.dumps(row))
        return
    started = time.perf_counter()
    names = args.only or list(BY_NAME)
    rows, lora_rows = [], {}
    for name in names:
        rows.append(run_one(name, args.tokens, args.device, False, args.threads))
        print(json.dumps(rows[-1]), flush=True)
        if name in args.lora:
            lora_rows[name] = run_one(name, args.tokens, args.device, True, args.threads)
            print(json.dumps(lora_rows[name]), flush=True)
    text = render(rows, lora_rows, args.tokens, args.device, args.threads,
                  time.perf_counter() - started)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(RESULTS)
    print(text)


if __name__ == "__main__":
    main()
