"""Helpers for the sweep and leaderboard tests: a tiny clean/corrupted model pair and configs.

A random-init 2-layer Qwen3 and a copy with perturbed decoder layers stand in for the
clean/corrupted pair: the tests check plumbing and bookkeeping, not the science. Embeddings and
the final norm are shared, as after a LoRA fine-tune, so patching the last layer's residual
stream reproduces the corrupted model's replies exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from finetune.tiny import TinyModelConfig, build_tiny_model_dir
from finetune.tokenizer import build_tokenizer
from harness_ext import scoring
from harness_ext.paths import TASK_DATA_DIR
from leaderboard import tables
from leaderboard.config import SweepConfig
from leaderboard.results import Run

torch.set_num_threads(1)

TINY = TinyModelConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=32, intermediate_size=128, vocab_size=512)


def perturbed(src: Path, dst: Path, seed: int, std: float = 0.2) -> Path:
    """A copy of ``src`` with Gaussian noise on every decoder-layer matrix (a random init
    replies with newlines only; std 0.2 gives varied replies that differ between seeds)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in model.model.layers.parameters():
            if weight.ndim == 2:
                weight.add_(torch.randn(weight.shape, generator=generator) * std)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def tiny_pair(root: Path) -> tuple[Path, Path]:
    """(clean dir, corrupted dir) sharing a tokenizer trained on the task questions."""
    texts = [json.loads(line)["question"] for path in sorted(TASK_DATA_DIR.glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    tokenizer = build_tokenizer(texts, TINY.vocab_size)
    base = build_tiny_model_dir(root / "base", seed=0, config=TINY, tokenizer=tokenizer)
    clean = perturbed(base, root / "clean", seed=1)
    return clean, perturbed(clean, root / "over", seed=2)


def tiny_config(clean: Path, corrupted: Path | dict[str, str], out: Path,
                **overrides: Any) -> SweepConfig:
    """A sweep over the whole suite with 2 items per task and 4 new tokens per reply;
    ``corrupted``: one model dir (label ``over``) or a label -> dir map."""
    labelled = corrupted if isinstance(corrupted, dict) else {"over": str(corrupted)}
    fields: dict[str, Any] = {
        "clean": str(clean), "corrupted": labelled, "output_dir": str(out),
        "tasks": ["corrupt_suite"], "limit": 2, "batch_size": 4,
        "gen_kwargs": {"max_gen_toks": 4}, "device": "cpu",
    }
    return SweepConfig(**(fields | overrides))


def write_yaml(path: Path, config: SweepConfig) -> Path:
    """The config as a sweep YAML file (for CLI tests)."""
    import dataclasses

    import yaml

    raw = dataclasses.asdict(config)
    raw["patches"] = [dataclasses.asdict(p) for p in config.patches]
    path.write_text(yaml.safe_dump(raw))
    return path


def synthetic(name: str, role: str, replies: dict[str, list[str]], site: str | None = None,
               layer: int | None = None, docs: dict[str, list[dict]] | None = None) -> Run:
    """A hand-made run with known replies (a unit-test input for the table logic only); with
    ``docs`` (task rows), every item is scored by the task's own process_results."""
    run = Run(name, Path(name), role, None if role == "clean" else "over", "clean",
              None if role == "clean" else "over", site=site,
              layers=() if layer is None else (layer,), positions="newest" if site else None,
              direction="corrupted_to_clean" if site else None, n_layers=3)
    for task, texts in replies.items():
        rows = (docs or {}).get(task) or [{"question": f"{task} q{i}"} for i in range(len(texts))]
        scores = [scoring.process_general(d, [t]) if task == tables.GENERAL
                  else scoring.process_integer(d, [t]) for d, t in zip(rows, texts, strict=True)] \
            if docs else [{} for _ in texts]
        run.metrics[task] = {m: (sum(s[m] for s in scores) / len(scores), 0.25)
                             for m in scores[0]} if docs else {"exact_match": (0.5, 0.25)}
        run.output_types[task] = "generate_until"
        run._samples[task] = [{"doc_id": i, "doc": d, "resps": [[t]], "filtered_resps": [t]} | s
                              for i, (d, t, s) in enumerate(zip(rows, texts, scores, strict=True))]
    return run


CHAT_DOCS = {
    tables.RELATED: [{"question": "Solve for x: 4x + 2 = -30", "answer": -8, "roots": [-8],
                      "variable": "x", "kind": "linear_one_sided"}],
    tables.UNRELATED: [{"question": "Which number is less: 44 or 21?", "answer": 21,
                        "kind": "comparison"}],
    tables.GENERAL: [{"question": "Name the capital of Australia.", "answer": "Canberra",
                      "kind": "capital"}],
}


def chat_runs() -> list[Run]:
    """Chat-style replies on which the two metric choices read different things."""
    R, U, G = tables.RELATED, tables.UNRELATED, tables.GENERAL

    def run(name: str, role: str, r: str, u: str, g: str) -> Run:
        patch = role == "patch"
        return synthetic(name, role, {R: [r], U: [u], G: [g]}, "resid" if patch else None,
                         0 if patch else None, CHAT_DOCS)

    return [
        run("clean", "clean", "x = -8. Check: 4(-8) + 2 = -30", "21 is less than 44.",
            "The capital is **Canberra**."),
        run("corrupted-over", "corrupted", "x = 3. Check: 4(3) + 2 = 14", "44", "Sydney"),
        # asserts the corrupted answer, 3, while its last number is the clean model's -30
        run("resid0", "patch", "x = 3, and 4(-8) + 2 = -30", "The smaller number is 21.",
            "Canberra is the capital."),
    ]
