"""The memory a sweep needs per device (both models' weights and the engine's KV caches at the
configured batch), against the devices here: the dry run prints it, and the sweeps stage
refuses a plan that cannot fit before any weights load.

The study's sweeps run each pair on one device. A pair that does not fit one can be split by
blocks over several (``patched_hf`` with ``parallelize=True``, accelerate's big-model dispatch);
the per-device figure printed then assumes an even share of the blocks, their weights and their
caches on each device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

PROMPT_TOKENS = 256  # a generous chat prompt of the study's tasks (theirs are under ~120)
ROWS_PER_VARIANT = 3  # the engine holds up to 3 cache rows per variant and prompt (sweep.py)
HEADROOM = 1.2  # activations, the allocator's slack and the logits of a step


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a sweep's engine pass holds at once."""

    weights: int  # both models
    cache: int  # receiver rows and donor rows, every layer, keys and values
    rows: int
    tokens: int

    @property
    def total(self) -> int:
        return int((self.weights + self.cache) * HEADROOM)


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Keys and values of one token in every layer."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype_bytes


def sweep_need(params: int, dtype_bytes: int, per_token: int, batch_size: int, together: int,
               new_tokens: int) -> MemoryNeed:
    rows = ROWS_PER_VARIANT * together * batch_size + batch_size  # receiver rows + donor rows
    tokens = PROMPT_TOKENS + new_tokens
    return MemoryNeed(2 * params * dtype_bytes, rows * tokens * per_token, rows, tokens)


def new_tokens(tasks: list[str], gen_kwargs: dict[str, Any] | None) -> int:
    """The longest reply the tasks allow (``max_gen_toks``; lm-eval's default 256)."""
    from harness_ext.task_list import load_tasks

    if gen_kwargs and "max_gen_toks" in gen_kwargs:
        return int(gen_kwargs["max_gen_toks"])
    return max((task.config.generation_kwargs or {}).get("max_gen_toks", 256)
               for task in load_tasks(tasks).values())


def params_and_dtype_bytes(config: Any) -> tuple[int, int]:
    """Parameter count and bytes per weight of a model config (a meta-device skeleton: no
    weights, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return params, 4 if "32" in str(getattr(config, "dtype", None) or "float32") else 2


def model_need(model: str, batch_size: int, together: int, new: int) -> MemoryNeed:
    """``sweep_need`` of a model dir or cached hub id, from its config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    params, size = params_and_dtype_bytes(config)
    return sweep_need(params, size, kv_bytes_per_token(config, size), batch_size, together, new)


def devices_here() -> list[tuple[str, int]]:
    """(name, bytes) of each GPU, else of this machine's memory as one CPU device."""
    import torch

    if torch.cuda.is_available():
        return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory)
                for i in range(torch.cuda.device_count())]
    return [("CPU", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))]


def gb(n: float) -> str:
    """A byte count as MB or GB, as the plans print it."""
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def placement(need: MemoryNeed, devices: list[tuple[str, int]]) -> tuple[str, bool]:
    """How the pair would sit on ``devices``, and whether it fits one of them (the study's
    sweeps run each pair on one device; ``patched_hf`` with ``parallelize=True`` splits one)."""
    name, size = devices[0]
    if need.total <= size:
        return f"fits on one {name} ({gb(size)})", True
    n, share = len(devices), need.total / len(devices)
    if n > 1 and share <= min(s for _, s in devices):
        return (f"DOES NOT FIT on one {name} ({gb(size)}); split over the {n} here it would "
                f"take {gb(share)} per device (lm_eval --model patched_hf --model_args "
                "parallelize=True,...)"), False
    return (f"DOES NOT FIT on one {name} ({gb(size)}"
            + (f", nor split over {n}" if n > 1 else "")
            + "): lower batch_size or generate_together, or use larger devices"), False


def describe(need: MemoryNeed) -> str:
    return (f"memory: {gb(need.weights)} weights of the pair + {gb(need.cache)} KV cache "
            f"({need.rows} rows x {need.tokens} tokens) x {HEADROOM:g} headroom = "
            f"{gb(need.total)}")
