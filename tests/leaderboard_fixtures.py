"""Helpers for the sweep and leaderboard tests: a tiny clean/corrupted model pair and configs.

Two random-init 2-layer Qwen3 dirs with different seeds and one shared tokenizer stand in for
the clean/corrupted pair: the tests check plumbing and bookkeeping, not the science.
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


def tiny_pair(root: Path) -> tuple[Path, Path]:
    """(clean dir, corrupted dir) sharing a tokenizer trained on the task questions."""
    texts = [json.loads(line)["question"] for path in sorted(TASK_DATA_DIR.glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    tokenizer = build_tokenizer(texts, TINY.vocab_size)
    clean = build_tiny_model_dir(root / "clean", seed=0, config=TINY, tokenizer=tokenizer)
    corrupted = build_tiny_model_dir(root / "over", seed=1, config=TINY, tokenizer=tokenizer)
    return clean, corrupted


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
