"""Speed of the patching engine on tiny random Qwen3 pairs; writes bench/results/patching.md.

    .venv/bin/python bench/patching.py [--threads 1] [--quick]

Ratios, all on the same 8 left-padded prompts x 64 new tokens (no eos, so every run
does the full 64 steps), float32:
- patched_generate / the receiver's own cached greedy `generate`, per positions mode;
- the original scheme (patching/reference.py: uncached full-sequence passes, batch 1,
  one layer at a time) / one `sweep_generate` over every layer of one site.
Times are medians of repeats; each measurement is preceded by a warm-up run.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ itself would shadow the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402

from patching import PatchSpec, every_layer, patched_generate, sweep_generate  # noqa: E402
from patching.reference import naive_generate  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "patching.md"
PROMPTS, NEW_TOKENS = 8, 64


def tiny_pair(layers: int, seed: int = 0) -> tuple[Qwen3ForCausalLM, Qwen3ForCausalLM]:
    """A random receiver and a donor = receiver + noise (a stand-in for a fine-tune)."""
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
        max_position_embeddings=512,
        initializer_range=0.1,
        eos_token_id=None,
        pad_token_id=None,
        bos_token_id=None,
    )
    receiver = Qwen3ForCausalLM(config).eval()
    donor = copy.deepcopy(receiver)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    return receiver, donor


def prompts(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """8 left-padded random prompts of 16..48 tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 49, (PROMPTS,), generator=g)
    width = int(lengths.max())
    ids = torch.randint(1, 1024, (PROMPTS, width), generator=g)
    mask = (torch.arange(width)[None] >= (width - lengths)[:, None]).long()
    return ids * mask, mask


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generate_ratios(layers: int, repeats: int) -> list[str]:
    receiver, donor = tiny_pair(layers)
    ids, mask = prompts()
    base = timed(
        lambda: receiver.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        ),
        repeats,
    )
    rows = [f"| {layers} | receiver `generate` (reference point) | {base * 1e3:.0f} ms | 1.00x |"]
    for site, layer in (("resid", layers // 2), ("resid", layers - 1), ("head", layers - 1)):
        for positions in ("all", "newest"):
            heads = [0, 2] if site == "head" else None
            spec = PatchSpec(site, [layer], heads, positions)
            t = timed(
                lambda s=spec: patched_generate(receiver, donor, ids, s, mask, NEW_TOKENS), repeats
            )
            label = f"`{positions}`, {site} layer {layer}" + (" heads 0,2" if heads else "")
            rows.append(f"| {layers} | {label} | {t * 1e3:.0f} ms | {t / base:.2f}x |")
    return rows


def sweep_ratio(layers: int, site: str, positions: str) -> str:
    receiver, donor = tiny_pair(layers)
    ids, mask = prompts()
    specs = every_layer(site, layers, positions)
    sweep = timed(lambda: sweep_generate(receiver, donor, ids, specs, mask, NEW_TOKENS), 3)
    start = time.perf_counter()
    outs = [naive_generate(receiver, donor, ids, s, mask, NEW_TOKENS) for s in specs]
    original = time.perf_counter() - start
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            outs, sweep_generate(receiver, donor, ids, specs, mask, NEW_TOKENS), strict=True
        )
    )
    return (
        f"| {layers} | {site} | `{positions}` | {original:.1f} s | {sweep:.2f} s | "
        f"{original / sweep:.1f}x | {'yes' if same else 'NO'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="skip the slow original-scheme baseline"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    lines = [
        "# Patching engine speed",
        "",
        f"Written by `bench/patching.py` in one run: torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, "
        f"{PROMPTS} left-padded prompts (16-48 tokens) x {NEW_TOKENS} new tokens, float32, "
        "tiny random Qwen3 (hidden 128, 4 heads / 2 KV heads, head_dim 32, intermediate 512, "
        "vocab 1024, tied embeddings); donor = receiver + noise. Medians of "
        f"{args.repeats} runs after a warm-up. CPU shared with other work: expect noise.",
        "",
        "## patched_generate vs the receiver's own cached greedy `generate`",
        "",
        "Targets: `all` <= 2.0x, `newest` <= 2.5x.",
        "",
        "| layers | run | time | ratio |",
        "|---|---|---|---|",
    ]
    for layers in (6, 4):
        lines += generate_ratios(layers, args.repeats)
    if not args.quick:
        lines += [
            "",
            "## One sweep_generate over every layer vs the original scheme",
            "",
            "Original scheme: `patching.reference.naive_generate` per layer (uncached",
            "full-sequence passes of both models per token, batch 1, one layer at a time),",
            "timed once.",
            "Targets: >= 30x on 6 layers, >= 25x on 4 layers. `same tokens`: the sweep's output",
            "equals the original scheme's, spec by spec.",
            "",
            "| layers | site | positions | original | sweep | speed-up | same tokens |",
            "|---|---|---|---|---|---|---|",
            sweep_ratio(6, "resid", "newest"),
            sweep_ratio(4, "resid", "newest"),
        ]
    lines += ["", f"Bench wall time: {time.perf_counter() - started:.0f} s.", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
