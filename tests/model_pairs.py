"""A corrupted stand-in for tests: a saved copy of a model dir with some blocks perturbed."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def perturbed_copy(source: Path, out: Path, first_block: int, seed: int) -> Path:
    """``source`` saved to ``out`` with Gaussian noise (0.2) on every matrix of blocks
    ``first_block`` and above, and the same tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in model.model.layers[first_block:].parameters():
            if weight.ndim == 2:
                weight.add_(torch.randn(weight.shape, generator=generator) * 0.2)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out
