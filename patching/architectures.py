"""The one definition of patch sites and of the decoder families the engine runs.

Two tables, in the manner of TransformerLens' hook names and nnterp's per-architecture
renames:

- `SITES`: what each site IS, the same in every family: whether it is a block's output
  (which decides where a row patched there joins the receiver's batch), whether its last
  axis is split into heads (and which config count gives their number), and which weights
  compute it (what `patching.repair` restores or retrains for a component found there).
- `ARCHITECTURES`: where each family keeps those activations (module path inside a block and
  how the activation is read), its decoder/layer/norm paths, how its blocks take attention
  masks, which layers attend through a sliding window, where `head_dim` comes from, what
  scales its logits, and which modules make up a block's attention and MLP paths and how a
  head slices the query and output projections (for `patching.repair`).

The engine, the naive reference, attribution and the sweep runner read these facts; none of
them compares site or family names. A new family is one `Architecture` entry, checked on a
tiny random model by `check_architecture` (the tests run it for every entry).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .errors import PatchingError

# How a site's activation is read from its module:
#   "output"    the module's output tensor
#   "output[0]" the first element of the module's tuple output
#   "input[0]"  the module's first positional input (read with a forward PRE-hook)
Read = Literal["output", "output[0]", "input[0]"]
FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Site:
    """What a site means, whatever the family."""

    meaning: str  # one line, for errors and the README
    block_output: bool = False  # the block's output: a row patched here joins the NEXT block
    residual_term: bool = False  # one of the terms a block adds to the residual stream
    head_count: str | None = None  # config field counting the heads its last axis is split in
    # The weights that compute it, as `patching.repair` names a component: "block", "attn",
    # "mlp" (Architecture.attention / .mlp paths) or "head" (one head's projection slices).
    weights: str = "block"


SITES: Mapping[str, Site] = MappingProxyType(
    {
        "resid": Site("the residual stream after the block (the block's output)", True),
        "attn": Site("the attention output as it enters the residual add", residual_term=True,
                     weights="attn"),
        "mlp": Site("the MLP output as it enters the residual add", residual_term=True,
                    weights="mlp"),
        "head": Site(
            "one head's slice of the attention output projection's input",
            head_count="num_attention_heads", weights="head",
        ),
    }
)
SITE_NAMES: tuple[str, ...] = tuple(SITES)
BLOCK_OUTPUT_SITE: str = next(name for name, site in SITES.items() if site.block_output)
RESIDUAL_TERMS: tuple[str, ...] = tuple(name for name, site in SITES.items() if site.residual_term)
PER_HEAD_SITES: tuple[str, ...] = tuple(name for name, site in SITES.items() if site.head_count)


def heads_of(config: Any) -> int:
    """How many heads the per-head site splits into in a model with this config."""
    return getattr(config, SITES[PER_HEAD_SITES[0]].head_count)


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


# Where a site lives inside one block: module path ("" = the block) and how it is read.
Where = tuple[str, Read]
PRE_NORM_SITES: Mapping[str, Where] = MappingProxyType(
    {
        "resid": ("", "output"),
        "attn": ("self_attn", "output[0]"),
        "mlp": ("mlp", "output"),
        "head": ("self_attn.o_proj", "input[0]"),
    }
)
# Gemma 2/3 and OLMo 2 normalise the attention and MLP outputs before the residual add: the
# sites are those norms' outputs, the tensors that are actually added.
POST_NORM_SITES: Mapping[str, Where] = MappingProxyType(
    PRE_NORM_SITES
    | {
        "attn": ("post_attention_layernorm", "output"),
        "mlp": ("post_feedforward_layernorm", "output"),
    }
)


# Modules (paths inside a block) whose parameters make up its attention and its MLP path, norms
# included: together they hold every parameter of the block, each exactly once.
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
    sites: Mapping[str, Where] = field(default_factory=lambda: PRE_NORM_SITES)
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
    # Weights (`patching.repair`): the block modules of each path, and the projection whose
    # first heads * head_dim output rows are the queries, head h at rows h*head_dim.. (Phi-3:
    # the fused `qkv_proj`); the output projection is the per-head site's module, head h at its
    # input columns h*head_dim... `head_weights_unsupported`: why one head's weights cannot be
    # changed alone in this family (None: they can).
    attention: tuple[str, ...] = PRE_NORM_ATTENTION
    mlp: tuple[str, ...] = PRE_NORM_MLP
    query: str = "self_attn.q_proj"
    head_weights_unsupported: str | None = None

    def __post_init__(self) -> None:
        missing = sorted(set(SITES) - set(self.sites))
        if missing:
            raise ValueError(f"architecture {self.name}: no module for sites {missing}")
        if set(self.attention) & set(self.mlp):
            raise ValueError(f"architecture {self.name}: a module in both attention and mlp")

    @property
    def output_projection(self) -> str:
        """The block module whose input columns are the heads (the per-head site's module)."""
        return self.sites[PER_HEAD_SITES[0]][0]

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
    Architecture("Phi-3", ("phi3",), query="self_attn.qkv_proj"),
    Architecture(
        "OLMo 2", ("olmo2",), sites=POST_NORM_SITES,
        attention=("self_attn", "post_attention_layernorm"),
        mlp=("mlp", "post_feedforward_layernorm"),
        head_weights_unsupported="its q_norm normalises the queries of all heads together "
        "(one RMS over heads x head_dim), so one head's query weights move every head",
    ),
    Architecture(
        "Gemma 2", ("gemma2",), sites=POST_NORM_SITES, mask_form="by_layer_type",
        layer_types=layer_types_from_config, logit_softcap="final_logit_softcapping",
        attention=GEMMA_ATTENTION, mlp=GEMMA_MLP,
    ),
    Architecture(
        "Gemma 3 (text)", ("gemma3_text",), sites=POST_NORM_SITES, mask_form="by_layer_type",
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


def locate(lm: nn.Module, arch: Architecture, site: str, layer: int) -> tuple[nn.Module, Read]:
    """The module holding `site` of block `layer`, and how to read it."""
    path, read = arch.sites[site]
    block = lm.get_submodule(arch.layers)[layer]
    return (block.get_submodule(path) if path else block), read


def cache_argument(decoder: nn.Module) -> str:
    """The decoder's KV-cache keyword: `cache` (transformers >= 5.24; `past_key_values` is
    removed in 5.40) where its forward takes it, else `past_key_values`."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def check_architecture(lm: nn.Module, arch: Architecture | None = None, atol: float = 1e-6
                       ) -> None:
    """Check a family entry against a model of that family (a tiny random one will do).

    On one short prompt, for every block: each site's activation has the expected width; the
    block's output equals its input plus the attn and mlp sites (so they ARE what enters the
    residual adds); the output projection applied to the head site gives the attention
    module's output (so the head slices are that projection's input). Then the weight facts
    (`check_weight_paths`). Raises `PatchingError` naming the first fact that fails; use
    float64 for a tight `atol`.
    """
    from .hooks import capturing  # hooks imports this module

    config = lm.config
    arch = arch or architecture_for(config)
    blocks = lm.get_submodule(arch.layers)
    head_path = arch.sites["head"][0]
    attention_path = head_path.rsplit(".", 1)[0] if "." in head_path else ""
    block_inputs: list[Tensor] = []
    attention_outputs: list[Tensor] = []
    handles = [b.register_forward_pre_hook(lambda m, a: block_inputs.append(a[0])) for b in blocks]
    handles += [
        b.get_submodule(attention_path).register_forward_hook(
            lambda m, a, out: attention_outputs.append(out[0])
        )
        for b in blocks
    ]
    acts: dict[tuple[str, int], Tensor] = {}
    keys = [(site, layer) for layer in range(len(blocks)) for site in SITES]
    ids = torch.arange(1, 9)[None] % config.vocab_size
    try:
        with capturing(lm, arch, keys, acts):
            lm(input_ids=ids.to(next(lm.parameters()).device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    widths = {site: config.hidden_size for site in SITES}
    widths |= {site: heads_of(config) * arch.head_dim(config) for site in PER_HEAD_SITES}
    for layer in range(len(blocks)):
        for site, width in widths.items():
            if (got := acts[(site, layer)].shape[-1]) != width:
                raise PatchingError(
                    f"{arch.name}: site {site!r} of layer {layer} is {got} wide, expected {width}"
                )
        summed = block_inputs[layer] + acts[("attn", layer)] + acts[("mlp", layer)]
        if not torch.allclose(summed, acts[("resid", layer)], atol=atol):
            raise PatchingError(
                f"{arch.name}: layer {layer}'s input + attn + mlp is not its output (the attn "
                "and mlp sites are not what enters the residual adds)"
            )
        o_proj, _ = locate(lm, arch, "head", layer)
        if not torch.allclose(o_proj(acts[("head", layer)]), attention_outputs[layer], atol=atol):
            raise PatchingError(
                f"{arch.name}: layer {layer}'s output projection of the head site is not the "
                "attention output (the head slices are not that projection's input)"
            )
    check_weight_paths(lm, arch, atol)


@torch.no_grad()
def check_weight_paths(lm: nn.Module, arch: Architecture, atol: float = 1e-6) -> None:
    """The weight facts `patching.repair` relies on: every parameter of every block lies on
    exactly one of the attention and MLP paths; and, unless the family says heads cannot be
    changed alone, moving the last head's query rows in block 0 moves that head's slice of the
    per-head site and no other head's (so the rows ARE that head's query, and nothing mixes
    the heads' queries). The weight is put back bit for bit."""
    from .hooks import capturing

    paths = arch.attention + arch.mlp
    for layer, block in enumerate(lm.get_submodule(arch.layers)):
        for name, _ in block.named_parameters():
            owners = [path for path in paths if name.startswith(f"{path}.")]
            if len(owners) != 1:
                raise PatchingError(
                    f"{arch.name}: parameter {name} of layer {layer} lies on {len(owners)} "
                    f"weight paths {owners} (attention {arch.attention}, mlp {arch.mlp})"
                )
    if arch.head_weights_unsupported is not None:
        return
    config, site = lm.config, PER_HEAD_SITES[0]
    heads, head_dim = heads_of(config), arch.head_dim(config)
    weight = lm.get_submodule(arch.layers)[0].get_submodule(arch.query).weight
    if weight.shape[0] < heads * head_dim:
        raise PatchingError(f"{arch.name}: {arch.query} has {weight.shape[0]} output rows, "
                            f"fewer than the {heads} x {head_dim} query rows")
    ids = torch.arange(1, 9)[None].to(weight.device) % config.vocab_size
    acts: dict[tuple[str, int], Tensor] = {}
    outputs = []
    rows = slice((heads - 1) * head_dim, heads * head_dim)
    saved = weight[rows].clone()
    try:
        for shift in (0.0, 0.5):
            weight[rows] = saved + shift
            with capturing(lm, arch, [(site, 0)], acts):
                lm(input_ids=ids, use_cache=False)
            outputs.append(acts[(site, 0)].unflatten(-1, (heads, head_dim)))
    finally:
        weight[rows] = saved
    moved = (outputs[1] - outputs[0]).abs().amax(dim=(0, 1, 3))
    if moved[-1] <= atol or bool((moved[:-1] > atol).any()):
        raise PatchingError(
            f"{arch.name}: moving head {heads - 1}'s rows of {arch.query} changed heads "
            f"{[h for h in range(heads) if moved[h] > atol]} of the {site} site, not that head "
            "alone"
        )
