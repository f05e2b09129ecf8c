"""`patching_effects` against one `patched_logprobs` run per patch; writes
bench/results/effects.md.

    .venv/bin/python bench/effects.py [--threads 1]

The tiny pair: the embedded clean model (`models/tiny-qwen3-math`, 6 layers) and a copy with
its blocks 2+ perturbed; teacher-forced rows are related-math prompts of one length (chat
template, thinking off) followed by their one-token answer. For each site (`resid`, `head`)
and batch size (1 prompt, TransformerLens' usual pair, and 6), the loop runs
`patched_logprobs` once per (layer, position[, head]) patch and `patching_effects` runs them
all; the results must agree within 1e-4 (float32). The loop is timed on every 7th patch and
scaled to all of them (it is linear in the patch count); process CPU time.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from finetune.chat import prompt_text  # noqa: E402
from patching import patched_logprobs  # noqa: E402
from patching.attribution_metrics import AttributionBatch  # noqa: E402
from patching.effects import patching_effects  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "effects.md"
STRIDE = 7


def rows_of_one_length(tok: object, count: int) -> torch.Tensor:
    """The first `count` related-math prompt + answer rows with the most common length."""
    rows = [json.loads(line) for line in (REPO / "tasks/data/corrupt_related.jsonl").open()]
    encoded = [tok(prompt_text(tok, r["question"]) + str(r["answer"])).input_ids for r in rows]
    lengths = [len(e) for e in encoded]
    common = max(set(lengths), key=lengths.count)
    same = [e for e in encoded if len(e) == common][:count]
    return torch.tensor(same)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    path = REPO / "models" / "tiny-qwen3-math"
    tok = AutoTokenizer.from_pretrained(path)
    clean = AutoModelForCausalLM.from_pretrained(path).eval()
    corrupted = copy.deepcopy(clean)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in corrupted.model.layers[2:].parameters():
            weight.add_(0.05 * weight.std() * torch.randn(weight.shape, generator=noise))
    lines = []
    for prompts in (1, 6):
        ids = rows_of_one_length(tok, prompts)
        batch = AttributionBatch(ids, [1] * len(ids))
        for site in ("resid", "head"):
            start = time.process_time()
            effects = patching_effects(clean, corrupted, batch, site)
            batched = time.process_time() - start
            patches = [(i, j, k) for i in range(len(effects.layers))
                       for j in range(len(effects.positions))
                       for k in range(len(effects.heads or [None]))]
            worst, start = 0.0, time.process_time()
            for i, j, k in patches[::STRIDE]:
                head = None if effects.heads is None else effects.heads[k]
                spec = effects.spec(effects.layers[i], effects.positions[j], head)
                one = float(patched_logprobs(clean, corrupted, ids, spec, [1] * len(ids))
                            .total().sum())
                got = float(effects.values[(i, j, k) if effects.heads else (i, j)])
                worst = max(worst, abs(one - got))
            loop = (time.process_time() - start) / len(patches[::STRIDE]) * len(patches)
            assert worst < 1e-4, worst
            lines.append(f"| {prompts} x {ids.shape[1]} tokens | `{site}` | {len(patches)} | "
                         f"{loop:.2f} s | {batched:.2f} s | {loop / batched:.1f}x | "
                         f"{worst:.1e} |")
    text = "\n".join([
        "# patching_effects vs one patched run per patch",
        "",
        f"Written by `bench/effects.py` in one run: torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, "
        "float32. The pair: `models/tiny-qwen3-math` (6 layers, hidden 128, 4 heads) and a "
        "copy with blocks 2+ perturbed (0.05 std). Rows: related-math prompts of one length "
        "with their one-token answer; metric `logprob_diff`. Loop: `patched_logprobs` once per "
        f"patch (timed on every {STRIDE}th patch, scaled to all); batched: one "
        "`patching_effects` call. Process CPU time.",
        "",
        "| rows | site | patches | loop | batched | speed-up | max difference |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
        "Why the speed-up shrinks with more prompts: each loop run passes both models over "
        "every position (the donor up to the patched layer), about 9.5 block-passes of the whole "
        "sequence on 6 layers; a batched patch runs only the receiver's blocks from its layer on "
        "and only the positions from its own on (the rest equals the unpatched rows, run once), "
        "about 1.75 on average. With one prompt the loop is also dominated by fixed per-call "
        "costs that the batched passes share (over 10x); with six prompts both are "
        "compute-bound and that structural ratio, about 5x, is what remains.",
        "",
        f"Bench wall time: {time.perf_counter() - started:.0f} s.",
        "",
    ])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
