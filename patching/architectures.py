"""The one definition of patch sites and of the decoder families the engine runs.

Two tables, in the manner of TransformerLens' hook names and nnterp's per-architecture
renames:

- `SITES`: what each site IS, the same in every family: a point of the residual stream
  between blocks (`stream`), a term a block adds to the residual stream, or an activation split
  into heads (and which config count gives their number), and which weights compute it (what
  `patching.components` restores or retrains for a component found there).
- `ARCHITECTURES`: where each family keeps the in-block sites (module path inside a block, how
  the activation is read, and for a fused projection which columns), its decoder/layer/norm
  paths, how its blocks take attention masks, which layers attend through a sliding window,
  where `head_dim` comes from, what scales its logits, and which modules make up a block's
  attention and MLP paths and how a head slices the query and output projections.

The engine, the naive reference, attribution and the sweep runner read these facts; none of
them compares site or family names. A new family is one `Architecture` entry, checked on a
tiny random model by `architecture_checks.check_architecture` (the tests run it for every
entry, and fail for an entry without a test model).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from torch import nn

from .errors import PatchingError

# How a site's activation is read from its module:
#   "output"    the module's output tensor
#   "output[0]" the first element of the module's tuple output
#   "input[0]"  the module's first positional input (read with a forward PRE-hook)
Read = Literal["output", "output[0]", "input[0]"]
FULL, SLIDING = "full_attention", "sliding_attention"
HEAD_SITE = "head"  # the per-head site of the attention output (what repair's heads are)


@dataclass(frozen=True)
class Site:
    """What a site means, whatever the family."""

    meaning: str  # one line, for errors and the README
    # A point of the residual stream between blocks: the stream entering block L + `stream`
    # (resid_pre: 0, resid: 1; block `num_layers` is the final norm). None: inside a block.
    stream: int | None = None
    residual_term: bool = False  # one of the terms a block adds to the residual stream
    head_count: str | None = None  # config field counting the heads its last axis is split in
    # The weights that compute it, as `patching.components` names a component: "block", "attn",
    # "mlp" (Architecture.attention / .mlp paths) or "head" (one head's projection slices).
    weights: str = "block"
    order: int = 0  # where it is computed within a layer (forward order), for sorting parts


SITES: Mapping[str, Site] = MappingProxyType(
    {
        "resid": Site("the residual stream after the block (the block's output)", stream=1,
                      order=8),
        "attn": Site("the attention output as it enters the residual add", residual_term=True,
                     weights="attn", order=5),
        "mlp": Site("the MLP output as it enters the residual add", residual_term=True,
                    weights="mlp", order=7),
        HEAD_SITE: Site("one head's slice of the attention output projection's input",
                        head_count="num_attention_heads", weights="head", order=4),
        "resid_pre": Site("the residual stream entering the block (the block's input)",
                          stream=0, order=0),
        "resid_mid": Site("the residual stream between the block's attention and its MLP",
                          order=6),
        "q": Site("one head's query projection (before rotary embedding)",
                  head_count="num_attention_heads", weights="head", order=1),
        "k": Site("one KV group's key projection (before rotary embedding); under grouped-query "
                  "attention every query head of the group reads it",
                  head_count="num_key_value_heads", weights="attn", order=2),
        "v": Site("one KV group's value projection; under grouped-query attention every query "
                  "head of the group reads it", head_count="num_key_value_heads",
                  weights="attn", order=3),
    }
)
SITE_NAMES: tuple[str, ...] = tuple(SITES)
STREAM_SITES: tuple[str, ...] = tuple(name for name, s in SITES.items() if s.stream is not None)
RESIDUAL_TERMS: tuple[str, ...] = tuple(name for name, site in SITES.items() if site.residual_term)
PER_HEAD_SITES: tuple[str, ...] = tuple(name for name, site in SITES.items() if site.head_count)
MID_SITE = "resid_mid"


def heads_of(config: Any, site: str = HEAD_SITE) -> int:
    """How many heads `site` splits into in a model with this config (KV groups for k, v)."""
    count = site_named(site).head_count
    if count is None:
        raise PatchingError(f"site {site!r} is not split into heads")
    return getattr(config, count)


def site_named(name: str) -> Site:
    """The site called `name`; an unknown name is a one-line error listing the known ones."""
    if name not in SITES:
        raise PatchingError(f"unknown site {name!r}; allowed: {', '.join(SITES)}")
    return SITES[name]


def head_dim_from_config(config: Any) -> int:
    """`config.head_dim` where the family sets it (Qwen3, Gemma: not hidden_size / heads)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def layer_types_from_config(config: Any) -> list[str]:
    """Families that list a type per layer (`config.layer_types`: Qwen2/3, Gemma 2/3)."""
    return list(config.layer_types)


def uniform_layer_types(config: Any) -> list[str]:
    """Families whose every layer slides when `config.sliding_window` is set (Mistral, Phi-3,
    Qwen3-MoE), and those that never slide (Llama, OLMo 2: no such field)."""
    kind = SLIDING if getattr(config, "sliding_window", None) else FULL
    return [kind] * config.num_hidden_layers


# Which columns of a fused projection's output a site is: (config, head_dim) -> (start, stop).
Columns = Callable[[Any, int], tuple[int, int]]


@dataclass(frozen=True)
class At:
    """Where an in-block site lives: a module path inside the block ("" = the block), how the
    activation is read, and for a fused module the columns that are this site."""

    path: str
    read: Read
    columns: Columns | None = None


PRE_NORM_SITES: Mapping[str, At] = MappingProxyType(
    {
        "attn": At("self_attn", "output[0]"),
        "mlp": At("mlp", "output"),
        HEAD_SITE: At("self_attn.o_proj", "input[0]"),
        # The residual stream where the MLP path reads it: the pre-MLP norm's input (Llama's
        # `post_attention_layernorm` is that norm).
        MID_SITE: At("post_attention_layernorm", "input[0]"),
        "q": At("self_attn.q_proj", "output"),
        "k": At("self_attn.k_proj", "output"),
        "v": At("self_attn.v_proj", "output"),
    }
)
# Gemma 2/3 normalise the attention and MLP outputs before the residual add: those sites are
# the norms' outputs, the tensors that are actually added; the MLP path starts at its own norm.
GEMMA_SITES: Mapping[str, At] = MappingProxyType(
    PRE_NORM_SITES
    | {
        "attn": At("post_attention_layernorm", "output"),
        "mlp": At("post_feedforward_layernorm", "output"),
        MID_SITE: At("pre_feedforward_layernorm", "input[0]"),
    }
)
# OLMo 2 normalises after each path only (the MLP reads the stream itself), and its q_norm and
# k_norm normalise all heads together, so a head's query and key are the norms' outputs.
OLMO2_SITES: Mapping[str, At] = MappingProxyType(
    GEMMA_SITES
    | {
        MID_SITE: At("mlp", "input[0]"),
        "q": At("self_attn.q_norm", "output"),
        "k": At("self_attn.k_norm", "output"),
    }
)


def _fused(start: Callable[[Any], int], width: Callable[[Any], int]) -> Columns:
    def columns(config: Any, head_dim: int) -> tuple[int, int]:
        lo = start(config) * head_dim
        return lo, lo + width(config) * head_dim

    return columns


# Phi-3 computes queries, keys and values in one projection, in that order along its output.
PHI3_SITES: Mapping[str, At] = MappingProxyType(
    PRE_NORM_SITES
    | {
        "q": At("self_attn.qkv_proj", "output",
                _fused(lambda c: 0, lambda c: c.num_attention_heads)),
        "k": At("self_attn.qkv_proj", "output",
                _fused(lambda c: c.num_attention_heads, lambda c: c.num_key_value_heads)),
        "v": At("self_attn.qkv_proj", "output",
                _fused(lambda c: c.num_attention_heads + c.num_key_value_heads,
                       lambda c: c.num_key_value_heads)),
    }
)
IN_BLOCK_SITES: tuple[str, ...] = tuple(name for name in SITES if SITES[name].stream is None)

# Modules (paths inside a block) whose parameters make up its attention and its MLP path, norms
# included, in the order they run: together they hold every parameter of the block, each
# exactly once, and composing the MLP path's modules maps the residual stream at `resid_mid`
# to the `mlp` term.
PRE_NORM_ATTENTION = ("input_layernorm", "self_attn")
PRE_NORM_MLP = ("post_attention_layernorm", "mlp")  # Llama's pre-MLP norm has this name


def _always_supported(config: Any) -> str | None:
    return None


@dataclass(frozen=True, eq=False)
class Architecture:
    """Where one decoder family keeps what the engine reads and writes.

    Paths are relative to the causal-LM object (`…ForCausalLM`).
    """

    name: str  # the family, as the README lists it
    model_types: tuple[str, ...]  # `config.model_type` values it covers
    sites: Mapping[str, At] = field(default_factory=lambda: PRE_NORM_SITES)
    decoder: str = "model"  # embeddings, blocks and final norm; no unembedding
    layers: str = "model.layers"  # the ModuleList of blocks
    final_norm: str = "model.norm"
    # Block keyword arguments with one entry per batch row (windowed when rows join or leave).
    row_kwargs: tuple[str, ...] = ("attention_mask", "position_embeddings", "position_ids")
    # How the decoder takes the engine's masks: "tensor" (one 4-D mask, so every layer must
    # have the same type) or "by_layer_type" (a dict keyed by layer type, one per type).
    mask_form: Literal["tensor", "by_layer_type"] = "tensor"
    layer_types: Callable[[Any], list[str]] = uniform_layer_types
    head_dim: Callable[[Any], int] = head_dim_from_config
    logit_softcap: str | None = None  # config field c: logits = c * tanh(logits / c)
    # A config this entry cannot run, as the reason (None: supported).
    unsupported: Callable[[Any], str | None] = _always_supported
    # Weights (`patching.components`): the block modules of each path, and the projection whose
    # first heads * head_dim output rows are the queries, head h at rows h*head_dim.. (Phi-3:
    # the fused `qkv_proj`); the output projection is the per-head site's module, head h at its
    # input columns h*head_dim... `head_weights_unsupported`: why one head's weights cannot be
    # changed alone in this family (None: they can).
    attention: tuple[str, ...] = PRE_NORM_ATTENTION
    mlp: tuple[str, ...] = PRE_NORM_MLP
    query: str = "self_attn.q_proj"
    head_weights_unsupported: str | None = None

    def __post_init__(self) -> None:
        missing = sorted(set(IN_BLOCK_SITES) - set(self.sites))
        if missing:
            raise ValueError(f"architecture {self.name}: no module for sites {missing}")
        if set(self.attention) & set(self.mlp):
            raise ValueError(f"architecture {self.name}: a module in both attention and mlp")

    @property
    def output_projection(self) -> str:
        """The block module whose input columns are the heads (the per-head site's module)."""
        return self.sites[HEAD_SITE].path

    def window(self, config: Any, layer_type: str) -> int | None:
        """Keys a query may see in a layer of this type (itself included); None: all."""
        return config.sliding_window if layer_type == SLIDING else None

    def windows(self, config: Any) -> dict[str, int | None]:
        """{layer type: window} for the types this config's layers use, in layer order."""
        return {kind: self.window(config, kind) for kind in dict.fromkeys(self.layer_types(config))}

    def softcap(self, config: Any) -> float | None:
        return getattr(config, self.logit_softcap, None) if self.logit_softcap else None


def _gemma3_unsupported(config: Any) -> str | None:
    if getattr(config, "use_bidirectional_attention", False):
        return "use_bidirectional_attention=True (not a causal decoder)"
    return None


# Gemma normalises before and after each path.
GEMMA_ATTENTION = ("input_layernorm", "self_attn", "post_attention_layernorm")
GEMMA_MLP = ("pre_feedforward_layernorm", "mlp", "post_feedforward_layernorm")

ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("Llama (3.x)", ("llama",)),
    Architecture("Mistral", ("mistral",)),
    Architecture(
        "Qwen2 / Qwen2.5", ("qwen2",), mask_form="by_layer_type",
        layer_types=layer_types_from_config,
    ),
    Architecture(
        "Qwen3", ("qwen3",), mask_form="by_layer_type", layer_types=layer_types_from_config
    ),
    Architecture("Qwen3-MoE", ("qwen3_moe",)),
    Architecture("Phi-3", ("phi3",), sites=PHI3_SITES, query="self_attn.qkv_proj"),
    Architecture(
        "OLMo 2", ("olmo2",), sites=OLMO2_SITES,
        attention=("self_attn", "post_attention_layernorm"),
        mlp=("mlp", "post_feedforward_layernorm"),
        head_weights_unsupported="its q_norm normalises the queries of all heads together "
        "(one RMS over heads x head_dim), so one head's query weights move every head",
    ),
    Architecture(
        "Gemma 2", ("gemma2",), sites=GEMMA_SITES, mask_form="by_layer_type",
        layer_types=layer_types_from_config, logit_softcap="final_logit_softcapping",
        attention=GEMMA_ATTENTION, mlp=GEMMA_MLP,
    ),
    Architecture(
        "Gemma 3 (text)", ("gemma3_text",), sites=GEMMA_SITES, mask_form="by_layer_type",
        layer_types=layer_types_from_config, logit_softcap="final_logit_softcapping",
        unsupported=_gemma3_unsupported, attention=GEMMA_ATTENTION, mlp=GEMMA_MLP,
    ),
)
_BY_MODEL_TYPE = {t: arch for arch in ARCHITECTURES for t in arch.model_types}


def architecture_for(config: Any) -> Architecture:
    """The family of a model config; unknown or unsupported ones are a one-line error."""
    model_type = getattr(config, "model_type", None)
    arch = _BY_MODEL_TYPE.get(model_type)
    if arch is None:
        raise PatchingError(
            f"model type {model_type!r} has no architecture entry; supported: "
            f"{', '.join(sorted(_BY_MODEL_TYPE))}"
        )
    if (why := arch.unsupported(config)) is not None:
        raise PatchingError(f"{arch.name} with {why} is not supported")
    kinds = set(arch.layer_types(config))
    if arch.mask_form == "tensor" and len(kinds) > 1:
        raise PatchingError(
            f"{arch.name} takes one attention mask for every layer, but this config mixes "
            f"layer types {sorted(kinds)}"
        )
    for kind in kinds:
        if kind not in (FULL, SLIDING):
            raise PatchingError(
                f"{arch.name} layer type {kind!r} is not supported; allowed: {FULL}, {SLIDING}"
            )
    return arch


@dataclass(frozen=True)
class Located:
    """A site of one block, found in a model: the module, how to read it, which columns."""

    module: nn.Module
    read: Read
    columns: tuple[int, int] | None  # (start, stop) of the module's output; None: all of it


def locate(lm: nn.Module, arch: Architecture, site: str, layer: int) -> Located:
    """Where `site` of block `layer` is read. Stream sites are read at their block: `resid` as
    block `layer`'s output, `resid_pre` as its input (the engine writes them between blocks)."""
    block = lm.get_submodule(arch.layers)[layer]
    stream = SITES[site].stream
    if stream is not None:
        return Located(block, "input[0]" if stream == 0 else "output", None)
    at = arch.sites[site]
    columns = None if at.columns is None else at.columns(lm.config, arch.head_dim(lm.config))
    return Located(block.get_submodule(at.path) if at.path else block, at.read, columns)


def site_width(config: Any, arch: Architecture, site: str) -> int:
    """The last axis of `site`'s activation: the hidden size, or heads x head_dim."""
    count = SITES[site].head_count
    return config.hidden_size if count is None else getattr(config, count) * arch.head_dim(config)


def cache_argument(decoder: nn.Module) -> str:
    """The decoder's KV-cache keyword: `cache` (transformers >= 5.24; `past_key_values` is
    removed in 5.40) where its forward takes it, else `past_key_values`."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
