"""Load each model of a sweep once, full model dirs and LoRA adapter dirs alike.

A LoRA adapter is merged into a fresh copy of its base: every variant then sees a plain
``Qwen3ForCausalLM`` (the patching engine locates sites by module path, which a PEFT wrapper
would change), and merging never touches the clean model object even when it is the base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from formats.errors import InputError
from patching import heads_of


class ModelLoadError(InputError):
    """A model path that cannot be used; one line naming it."""


def adapter_base(path: str) -> str | None:
    """The base model of a PEFT adapter dir, or None for a full model dir."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{cfg}: no base_model_name_or_path")
    return base


def model_shape(path: str) -> tuple[int, int]:
    """(decoder layers, heads of the per-head site) from the config alone, no weights loaded."""
    try:
        cfg = AutoConfig.from_pretrained(adapter_base(path) or path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: not a model dir ({str(err).splitlines()[0]})") from None
    return cfg.num_hidden_layers, heads_of(cfg)


def model_kv_heads(path: str) -> int:
    """Key/value heads (KV groups) from the config alone: the heads of the k and v sites."""
    return AutoConfig.from_pretrained(adapter_base(path) or path).num_key_value_heads


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_unmerged(path: str, device: torch.device, dtype: str = "auto") -> Any:
    """A full model, or for an adapter dir the PEFT model over a fresh copy of its base, left
    unmerged: restoring switches the adapter off per component, and the weight change of a
    LoRA fine-tune is its own update, B A."""
    base = adapter_base(path)
    if not base:
        return load_model(path, device, dtype)
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(load_model(base, device, dtype), path).eval()
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: cannot load ({str(err).splitlines()[0]})") from None


def load_model(path: str, device: torch.device, dtype: str = "auto") -> PreTrainedModel:
    """A full model dir, or an adapter dir merged into a fresh copy of its base, loaded as
    ``lm_eval --model hf`` would load it (so a variant scores as its CLI twin)."""
    base = adapter_base(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(base or path, dtype=dtype)
        if base:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path).merge_and_unload()
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: cannot load ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()


class ModelCache:
    """Loads each path at most once per sweep, and only when a pending variant needs it."""

    def __init__(self, device: torch.device, dtype: str) -> None:
        self.device, self.dtype = device, dtype
        self._models: dict[str, PreTrainedModel] = {}

    def get(self, path: str) -> PreTrainedModel:
        if path not in self._models:
            self._models[path] = load_model(path, self.device, self.dtype)
        return self._models[path]

    def loads(self) -> int:
        """How many models were loaded (tests check "once per sweep")."""
        return len(self._models)


def load_tokenizer(path: str) -> Any:
    """The clean model's tokenizer: the pair shares it, and it carries the chat template."""
    return AutoTokenizer.from_pretrained(path)
