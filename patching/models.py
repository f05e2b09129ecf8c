"""What the engine needs to know about a model argument, and the one-base adapter pair.

A receiver or donor can be a transformers causal LM, a PEFT model, or one side of
`adapter_pair(peft_model)`: two views over ONE copy of the base weights, the
adapter switched off for one of them, so a 4B clean/corrupted pair fits in the
memory of one model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .architectures import Architecture, architecture_for, cache_argument, site_width
from .errors import PatchingError


@dataclass(frozen=True)
class AdapterSide:
    """A PEFT model run with its adapter enabled (the fine-tune) or disabled (the base)."""

    model: Any  # peft.PeftModel; typed loosely so patching does not import peft
    enabled: bool


def adapter_pair(peft_model: Any) -> tuple[AdapterSide, AdapterSide]:
    """(base, adapted) views sharing one copy of the weights.

    `patched_generate(base, adapted, ...)` patches the fine-tune into the base model;
    swap the two for the other direction.
    """
    if not hasattr(peft_model, "disable_adapter"):
        raise PatchingError(
            f"adapter_pair needs a peft.PeftModel, got a {type(peft_model).__name__}"
        )
    return AdapterSide(peft_model, enabled=False), AdapterSide(peft_model, enabled=True)


@dataclass(frozen=True)
class Runner:
    """A model argument resolved to the transformers module tree the hooks attach to."""

    lm: nn.Module  # the causal LM (for PEFT: the base model with LoRA layers injected)
    arch: Architecture
    context: Callable[[], AbstractContextManager[Any]]  # entered around every forward
    windows: dict[str, int | None]  # {layer type: sliding window or None}, in layer order
    cache_argument: str  # the decoder's KV-cache keyword (architectures.cache_argument)

    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def decoder(self) -> nn.Module:
        return self.lm.get_submodule(self.arch.decoder)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the pass starts: the input embedding's device (its execution device under
        accelerate's big-model dispatch, where offloaded weights sit on ``meta``)."""
        return execution_device(self.lm.get_input_embeddings())

    @property
    def layer_devices(self) -> list[torch.device]:
        """Where each block runs: its KV cache and the donor values it reads live there."""
        return [execution_device(block) for block in self.lm.get_submodule(self.arch.layers)]

    @property
    def head_dim(self) -> int:
        return self.arch.head_dim(self.config)

    def head_columns(self, site: str, heads: Sequence[int] | None) -> torch.Tensor | None:
        """(width,) bool: the columns of `heads` in `site`'s activation; None: no heads."""
        if heads is None:
            return None
        size = self.head_dim
        cols = torch.zeros(site_width(self.config, self.arch, site), dtype=torch.bool,
                           device=self.device)
        for h in heads:
            cols[h * size : (h + 1) * size] = True
        return cols

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The unembedding of final hidden states, soft-capped where the family does it."""
        logits = self.lm.get_output_embeddings()(hidden)
        cap = self.arch.softcap(self.config)
        return logits if cap is None else torch.tanh(logits / cap) * cap


def execution_device(module: nn.Module) -> torch.device:
    """The device a module computes on: accelerate's hook says so for a dispatched module
    (its weights may be offloaded), else its first parameter's device."""
    hook = getattr(module, "_hf_hook", None)
    hooks = getattr(hook, "hooks", (hook,))  # accelerate's SequentialHook holds several
    device = next((h.execution_device for h in hooks
                   if getattr(h, "execution_device", None) is not None), None)
    if device is not None:
        return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    return next(module.parameters()).device


def as_runner(model: Any) -> Runner:
    """Resolve a causal LM, a PeftModel or an AdapterSide."""
    context: Callable[[], AbstractContextManager[Any]] = nullcontext
    if isinstance(model, AdapterSide):
        if not model.enabled:
            context = model.model.disable_adapter
        model = model.model
    if hasattr(model, "get_base_model") and hasattr(model, "disable_adapter"):
        model = model.get_base_model()
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise PatchingError(
            "expected a transformers causal LM, a PeftModel or an AdapterSide, "
            f"got a {type(model).__name__}"
        )
    arch = architecture_for(model.config)
    decoder = model.get_submodule(arch.decoder)
    return Runner(model, arch, context, arch.windows(model.config), cache_argument(decoder))
