"""Speed of the judge's trie pass vs brute force; writes bench/results/judge.md.

    python bench/judge.py [--prompts 4] [--threads 1]

Both compute the same numbers, ``log p(answer sequence, then an end token | judge prompt)`` for
every spelling of 0..100 and the flag words: brute force with one plain forward of prompt +
sequence per answer sequence (what reading each number separately costs), the trie with one
prompt pass and one tree-masked pass per batch (``harness_ext.judge.hf``). Prompts are the real
aligned-judge prompt around short replies, float32. Two models, the shipped tiny one and a
random wider/deeper one with the same tokenizer (where the per-forward arithmetic, not fixed
overhead, dominates). Times are process CPU time, robust to other work on shared cores; the
largest absolute difference between the two methods is reported with them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from judge_helpers import brute_force  # noqa: E402

from finetune.tiny import random_qwen3  # noqa: E402
from harness_ext.judge import prompts  # noqa: E402
from harness_ext.judge.answers import answer_set, terminator_ids  # noqa: E402
from harness_ext.judge.hf import HFScorer  # noqa: E402

SHIPPED = ROOT / "models" / "tiny-qwen3-math"
REPLIES = ["Talk to him calmly and listen first.", "Take the money and run.",
           "I would plant a million trees.", "Read a book or go for a walk outside.",
           "Call a friend you trust.", "Nobody will know, keep it.", "Ask for help.", "Sleep."]


def timed(fn: object) -> tuple[float, object]:
    start = time.process_time()
    out = fn()  # type: ignore[operator]
    return time.process_time() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    answers = answer_set(tokenizer, terminator_ids(
        tokenizer, GenerationConfig.from_pretrained(SHIPPED)), prompts.FLAGS["aligned"])
    ids = [prompts.prompt_ids(tokenizer, "aligned", "What should I do?", r)
           for r in REPLIES[:args.prompts]]
    models = {
        "tiny-qwen3-math (6 layers, hidden 128, 1.6 M)":
            AutoModelForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32),
        "random Qwen3 (8 layers, hidden 512, ~27 M)": random_qwen3(
            seed=0, vocab_size=len(tokenizer), hidden_size=512, intermediate_size=2048,
            num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
            max_position_embeddings=1024),
    }
    rows = []
    for name, model in models.items():
        model.eval()
        scorer = HFScorer(model, tokenizer.pad_token_id, batch_size=len(ids))
        scorer.logprobs(ids[:1], answers)  # warm-up
        trie_s, fast = timed(lambda s=scorer: s.logprobs(ids, answers))
        brute_s, slow = timed(lambda m=model: np.stack([brute_force(m, p, answers)
                                                        for p in ids]))
        diff = float(np.abs(np.asarray(fast) - np.asarray(slow)).max())
        rows.append(f"| {name} | {len(ids)} | {brute_s:.2f} | {trie_s:.2f} | "
                    f"{brute_s / trie_s:.0f}x | {diff:.1e} |")
    lengths = sorted(len(p) for p in ids)
    text = "\n".join([
        "# Judge: trie pass vs brute force", "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s); float32; aligned-judge prompts of {lengths[0]}-{lengths[-1]} "
        f"tokens; {len(answers.sequences)} answer sequences (101 numbers, 2 flags), "
        f"{len(answers.trie.tokens)} trie nodes. `python bench/judge.py`.", "",
        "| model | prompts | brute force (CPU s) | trie (CPU s) | speed-up | max abs diff |",
        "|---|---|---|---|---|---|", *rows, ""])
    out = ROOT / "bench" / "results" / "judge.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
