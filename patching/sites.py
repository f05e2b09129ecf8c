"""Where each patch site lives in a model, one small table per architecture.

The table is the *definition* of a site: the engine, the naive reference and the
tests all locate modules through it, so adding an architecture is adding a table
(and running the site tests on a tiny random model of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

SITES: tuple[str, ...] = ("resid", "attn", "mlp", "head")

# How a site's activation is read from its module:
#   "output"    the module's output tensor
#   "output[0]" the first element of the module's tuple output
#   "input[0]"  the module's first positional input (read with a forward PRE-hook)
Read = Literal["output", "output[0]", "input[0]"]


@dataclass(frozen=True)
class SiteTable:
    """Module paths of one architecture, relative to the causal-LM object."""

    decoder: str  # the decoder stack: embeddings, blocks and final norm, no lm_head
    layers: str  # the ModuleList of decoder blocks
    sites: dict[str, tuple[str, Read]]  # site -> (path inside a block, how to read it)
    row_kwargs: tuple[str, ...]  # block keyword arguments with one entry per batch row


# transformers 5.x Qwen3: a block returns the residual stream as a plain tensor, the
# attention module returns (output, weights), and o_proj's input is the concatenation
# of per-head outputs (head h = columns h*head_dim:(h+1)*head_dim).
QWEN3 = SiteTable(
    decoder="model",
    layers="model.layers",
    sites={
        "resid": ("", "output"),
        "attn": ("self_attn", "output[0]"),
        "mlp": ("mlp", "output"),
        "head": ("self_attn.o_proj", "input[0]"),
    },
    row_kwargs=("attention_mask", "position_embeddings", "position_ids"),
)

TABLES: dict[str, SiteTable] = {"qwen3": QWEN3}


def table_for(model_type: str) -> SiteTable:
    """The site table for a `config.model_type`; unknown types are an error, not a guess."""
    from .spec import PatchingError

    if model_type not in TABLES:
        raise PatchingError(
            f"model type {model_type!r} has no site table; supported: {', '.join(sorted(TABLES))}"
        )
    return TABLES[model_type]


def locate(lm: nn.Module, table: SiteTable, site: str, layer: int) -> tuple[nn.Module, Read]:
    """The module holding `site` of block `layer`, and how to read it."""
    path, read = table.sites[site]
    block = lm.get_submodule(table.layers)[layer]
    return (block.get_submodule(path) if path else block), read
