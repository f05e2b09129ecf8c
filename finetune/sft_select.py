"""Training only chosen components (``SFTConfig.layers`` / ``components``).

Whole tensors (a block, an attention or MLP path, ``outside``) are chosen by ``requires_grad``.
A head's weights are slices of tensors it shares with the other heads (its rows of the query
projection, its columns of the output projection), so for those tensors the gradient is
masked to the slice: the optimiser's moments and gradient clipping then see the head alone.
AdamW's decoupled weight decay still shrinks every entry of a trainable tensor, gradient or
not, so after each optimiser step ``FrozenSlices`` writes the rest of those tensors back from a
copy: outside the selection, nothing changes by a single bit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

from finetune.sft_config import SFTError
from patching.components import Selection, named_weights, selection_masks
from patching.errors import PatchingError


def _masks(model: nn.Module, selection: Selection) -> dict[str, Tensor | None]:
    try:
        return selection_masks(model, selection)
    except PatchingError as err:
        raise SFTError(f"components: {err}") from None


def make_trainable(model: nn.Module, selection: Selection) -> None:
    """Freeze everything but the tensors the selection touches (wholly or in part)."""
    masks = _masks(model, selection)
    model.requires_grad_(False)
    for name, tensor in named_weights(model).items():
        if name in masks:
            tensor.requires_grad_(True)


class FrozenSlices(TrainerCallback):
    """Restricts partly selected tensors to their selected entries: gradient masks, and the
    unselected entries written back after every optimiser step (see the module docstring)."""

    def __init__(self, model: nn.Module, selection: Selection) -> None:
        weights = named_weights(model)
        self.kept: list[tuple[Tensor, Tensor, Tensor]] = []
        for name, mask in _masks(model, selection).items():
            if mask is None:
                continue
            tensor = weights[name]
            mask = mask.to(tensor.device)
            tensor.register_hook(lambda grad, keep=mask: grad * keep)
            frozen = ~mask
            self.kept.append((tensor, frozen, tensor.detach()[frozen].clone()))

    def on_optimizer_step(self, args, state, control, **kwargs):
        with torch.no_grad():
            for tensor, frozen, values in self.kept:
                tensor[frozen] = values
