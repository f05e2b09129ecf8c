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
from harness_ext.paths import TASK_DATA_DIR
from leaderboard.config import SweepConfig

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
