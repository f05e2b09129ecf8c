"""Targeted repair by weight restoration: the corrupted model with the clean model's weights put
back in chosen components, or, for a LoRA-corrupted model, its adapter switched off there.

    from patching.components import Selection, restore, restored
    fix = Selection(["mlp:L5", "head:L4.H2"])
    with restored(corrupted, clean, fix) as model:   # weights put back exactly on exit
        ...
    restore(corrupted, clean, fix)                    # in place, for good; returns the model

A component is a block (`block:L4`), its attention path (`attn:L4`: the projections and the
norms on that path), its MLP path (`mlp:L4`, with its norms), one head (`head:L4.H2`), or
`outside` (embeddings, final norm, unembedding), so every parameter lies in some component.
Which modules make up each path, and how a head slices the projections, are per-family facts
of `architectures.ARCHITECTURES` (`attention`, `mlp`, `query`, `output_projection`).

A head's own weights are its rows of the query projection (its bias rows too, where there is
one; Phi-3: of the query part of the fused `qkv_proj`) and its input columns of the output
projection. What it shares stays the corrupted model's: the key and value rows of its group
under grouped-query attention (putting them back would change every other head of the group),
per-head-shared norms such as Qwen3's `q_norm`/`k_norm` (one vector for all heads) and the
output projection's bias. So a restored head asks the clean model's query of the corrupted
keys and values, and only its own slice of the attention output changes. Families whose heads
cannot be changed alone (OLMo 2 normalises all heads' queries together) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .architectures import PER_HEAD_SITES, SITES, Architecture, architecture_for, heads_of
from .errors import PatchingError

OUTSIDE = "outside"
HEAD_KIND = SITES[PER_HEAD_SITES[0]].weights
KINDS: tuple[str, ...] = (*dict.fromkeys(site.weights for site in SITES.values()), OUTSIDE)
LAYER_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k not in (HEAD_KIND, OUTSIDE))
_NAME = re.compile(r"^(?P<kind>[a-z]+):L(?P<layer>\d+)(?:\.H(?P<head>\d+))?$")


@dataclass(frozen=True)
class Component:
    """One unit of weights: `kind` (one of KINDS), its layer (none for `outside`) and head."""

    kind: str
    layer: int | None = None
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PatchingError(f"unknown component kind {self.kind!r}; allowed: "
                                f"{', '.join(KINDS)}")
        wants_layer, wants_head = self.kind != OUTSIDE, self.kind == HEAD_KIND
        for what, value, wanted in (("layer", self.layer, wants_layer),
                                    ("head", self.head, wants_head)):
            ok = (value is None) if not wanted else (type(value) is int and value >= 0)
            if not ok:
                need = "a non-negative int" if wanted else "none"
                raise PatchingError(f"component {self.kind}: {what}={value!r}, expected {need}")

    @classmethod
    def parse(cls, text: str | Component) -> Component:
        """`block:L4`, `attn:L4`, `mlp:L4`, `head:L4.H2` or `outside`."""
        if isinstance(text, Component):
            return text
        if text == OUTSIDE:
            return cls(OUTSIDE)
        match = _NAME.match(text) if isinstance(text, str) else None
        if match is None or (match["kind"] == HEAD_KIND) != (match["head"] is not None):
            raise PatchingError(
                f"component {text!r}: expected KIND:L<layer> (KIND one of "
                f"{', '.join(LAYER_KINDS)}), {HEAD_KIND}:L<layer>.H<head> or {OUTSIDE}")
        head = None if match["head"] is None else int(match["head"])
        return cls(match["kind"], int(match["layer"]), head)

    def __str__(self) -> str:
        if self.kind == OUTSIDE:
            return OUTSIDE
        return f"{self.kind}:L{self.layer}" + ("" if self.head is None else f".H{self.head}")

    def sort_key(self) -> tuple[int, int, int]:
        return (-1 if self.layer is None else self.layer, KINDS.index(self.kind),
                -1 if self.head is None else self.head)


def components_of(kind: str, config: Any) -> list[Component]:
    """Every component of `kind` in a model with this config, in layer (and head) order."""
    if kind == OUTSIDE:
        return [Component(OUTSIDE)]
    layers = range(config.num_hidden_layers)
    if kind == HEAD_KIND:
        return [Component(kind, layer, h) for layer in layers for h in range(heads_of(config))]
    return [Component(kind, layer) for layer in layers]


@dataclass(frozen=True)
class Selection:
    """A validated, ordered set of components (names or `Component`s; duplicates refused)."""

    components: tuple[Component, ...] = ()

    def __post_init__(self) -> None:
        items = [self.components] if isinstance(self.components, str) else self.components
        parsed = [Component.parse(item) for item in items]
        seen = {str(c) for c in parsed}
        if len(seen) != len(parsed):
            raise PatchingError(f"selection {[str(c) for c in parsed]} has duplicates")
        object.__setattr__(self, "components", tuple(sorted(parsed, key=Component.sort_key)))

    @property
    def names(self) -> list[str]:
        return [str(c) for c in self.components]

    def check(self, config: Any) -> Architecture:
        """Raise unless every component exists in a model with this config (and its family
        can change single heads, where heads are asked for); returns the family."""
        arch = architecture_for(config)
        n_layers, n_heads = config.num_hidden_layers, heads_of(config)
        for c in self.components:
            if c.layer is not None and c.layer >= n_layers:
                raise PatchingError(f"component {c}: layer {c.layer} is out of range for a "
                                    f"{n_layers}-layer model (0..{n_layers - 1})")
            if c.head is not None and c.head >= n_heads:
                raise PatchingError(f"component {c}: head {c.head} is out of range for a model "
                                    f"with {n_heads} attention heads (0..{n_heads - 1})")
            if c.kind == HEAD_KIND and arch.head_weights_unsupported:
                raise PatchingError(f"component {c}: {arch.name} cannot change one head's "
                                    f"weights alone: {arch.head_weights_unsupported}")
        return arch


@dataclass(frozen=True)
class Slice:
    """Part of one parameter (named as in the plain, un-adapted model): all of it, or the range
    start:stop along `dim`."""

    param: str
    dim: int | None = None
    start: int = 0
    stop: int = 0

    def index(self) -> tuple[slice, ...]:
        if self.dim is None:
            return (slice(None),)
        return (slice(None),) * self.dim + (slice(self.start, self.stop),)


def named_weights(lm: nn.Module) -> dict[str, Tensor]:
    """Parameters by their plain-model name (tied ones once): a PEFT-injected module's base
    weight under the name it has without the adapter, the adapter's own tensors left out."""
    return {name.replace(".base_layer.", "."): p for name, p in lm.named_parameters()
            if ".lora_" not in name}


def component_slices(lm: nn.Module, component: Component, arch: Architecture | None = None
                     ) -> list[Slice]:
    """The parameter slices that make up `component` in `lm` (a plain causal LM, or the base
    model of a PEFT model)."""
    arch = arch or architecture_for(lm.config)
    names = named_weights(lm)
    if component.kind == OUTSIDE:
        return [Slice(n) for n in names if not n.startswith(f"{arch.layers}.")]
    block = f"{arch.layers}.{component.layer}"
    if component.kind == HEAD_KIND:
        size = arch.head_dim(lm.config)
        rows = (component.head * size, (component.head + 1) * size)  # type: ignore[operator]
        query = [Slice(f"{block}.{arch.query}.{p}", 0, *rows) for p in ("weight", "bias")
                 if f"{block}.{arch.query}.{p}" in names]
        return [*query, Slice(f"{block}.{arch.output_projection}.weight", 1, *rows)]
    paths = {"block": arch.attention + arch.mlp, "attn": arch.attention, "mlp": arch.mlp}
    prefixes = tuple(f"{block}.{path}." for path in paths[component.kind])
    return [Slice(n) for n in names if n.startswith(prefixes)]


def selection_slices(lm: nn.Module, selection: Selection) -> list[Slice]:
    arch = selection.check(lm.config)
    return [s for c in selection.components for s in component_slices(lm, c, arch)]


def selection_masks(lm: nn.Module, selection: Selection) -> dict[str, Tensor | None]:
    """Parameter name -> a CPU boolean mask of its selected entries (None: all of them)."""
    weights = named_weights(lm)
    masks: dict[str, Tensor | None] = {}
    for piece in selection_slices(lm, selection):
        if piece.dim is None or (piece.param in masks and masks[piece.param] is None):
            masks[piece.param] = None
            continue
        mask = masks.get(piece.param)
        if mask is None:
            mask = torch.zeros(weights[piece.param].shape, dtype=torch.bool)
        mask[piece.index()] = True
        masks[piece.param] = mask
    return masks


def parameters_touched(lm: nn.Module, selection: Selection) -> tuple[int, int]:
    """(scalars in the selection, all scalars of the model), each counted once however many
    components share it; LoRA adapters' own tensors are not the model's and are not counted."""
    weights = named_weights(lm)
    masks = selection_masks(lm, selection)
    touched = sum(weights[n].numel() if m is None else int(m.sum()) for n, m in masks.items())
    return touched, sum(p.numel() for p in weights.values())


def peft_base(model: Any) -> nn.Module | None:
    """The base model (LoRA layers injected) of a PEFT model; None for a plain model. Only
    plain LoRA can be switched off slice by slice: other adapters are refused."""
    if not (hasattr(model, "get_base_model") and hasattr(model, "peft_config")):
        return None
    for name, cfg in model.peft_config.items():
        kind = type(cfg).__name__
        problem = (f"a {kind}, not a LoraConfig" if kind != "LoraConfig" else
                   "use_dora=True" if getattr(cfg, "use_dora", False) else
                   f"bias={cfg.bias!r} (the adapter trains biases)" if cfg.bias != "none" else
                   f"modules_to_save={cfg.modules_to_save}" if cfg.modules_to_save else None)
        if problem:
            raise PatchingError(f"adapter {name!r} is {problem}; only plain LoRA can be "
                                "switched off per component")
    return model.get_base_model()


def check_repair_pair(corrupted: nn.Module, clean: nn.Module) -> None:
    """Raise unless clean weights fit the corrupted model: one family, the same parameters with
    the same shapes (the first difference named)."""
    families = [architecture_for(m.config) for m in (corrupted, clean)]
    if families[0] is not families[1]:
        raise PatchingError(f"the corrupted model is {families[0].name} and the clean one "
                            f"{families[1].name}; restoring needs one family")
    bad, good = named_weights(corrupted), named_weights(clean)
    for name in sorted(bad.keys() ^ good.keys()):
        where = "corrupted" if name in bad else "clean"
        raise PatchingError(f"parameter {name} is only in the {where} model; restoring needs "
                            "the same parameters in both")
    for name, tensor in bad.items():
        if tensor.shape != good[name].shape:
            raise PatchingError(f"parameter {name} is {tuple(tensor.shape)} in the corrupted "
                                f"model, {tuple(good[name].shape)} in the clean one")


Write = tuple[Tensor, tuple[slice, ...], Tensor | None]  # target, index, source (None: zero)


def _writes(corrupted: Any, clean: Any, selection: Selection) -> list[Write]:
    """What restoring means in tensors, checked before anything is written."""
    base = peft_base(corrupted)
    if base is None:
        if clean is None:
            raise PatchingError("restoring a plain corrupted model needs the clean model")
        if peft_base(clean) is not None:
            raise PatchingError("the clean model is a PEFT model; pass a plain model")
        check_repair_pair(corrupted, clean)
        bad, good = named_weights(corrupted), named_weights(clean)
        return [(bad[s.param], s.index(), good[s.param][s.index()])
                for s in selection_slices(corrupted, selection)]
    if clean is not None:
        raise PatchingError("a PEFT model's clean weights are its base: pass clean=None and "
                            "its adapter is switched off in the selection")
    out: list[Write] = []
    for piece in selection_slices(base, selection):
        module_path, _, attr = piece.param.rpartition(".")
        module = base.get_submodule(module_path)
        if getattr(module, "lora_embedding_A", None):
            raise PatchingError(f"{module_path}: a LoRA embedding adapter cannot be switched "
                                "off per component; adapt the projections only")
        if attr != "weight" or not hasattr(module, "lora_A"):
            continue  # not adapted: the base weight is the clean one already
        for name in module.lora_A:
            # delta = B @ A: a slice of output rows is B's rows, of input columns A's columns
            factor = module.lora_A[name] if piece.dim == 1 else module.lora_B[name]
            index = piece.index() if piece.dim is not None else (slice(None),)
            out.append((factor.weight, index, None))
    return out


def _as_selection(selection: Selection | Iterable[str]) -> Selection:
    return selection if isinstance(selection, Selection) else Selection(tuple(selection))


def _apply(writes: list[Write]) -> None:
    with torch.no_grad():
        for target, index, source in writes:
            if source is None:
                target[index] = 0
            else:
                target[index] = source


def restore(corrupted: Any, clean: Any, selection: Selection | Iterable[str]) -> Any:
    """Put the clean weights back into `corrupted` in the selected components, in place, and
    return it. For a PEFT (LoRA) model pass `clean=None`: its adapter is switched off there
    (the factor rows or columns that make up those weights are zeroed)."""
    _apply(_writes(corrupted, clean, _as_selection(selection)))
    return corrupted


@contextmanager
def restored(corrupted: Any, clean: Any, selection: Selection | Iterable[str]
             ) -> Iterator[Any]:
    """`restore` inside a `with` block: the corrupted model's own values are put back exactly
    on exit, also when the body raises."""
    writes = _writes(corrupted, clean, _as_selection(selection))
    saved = [(target, index, target[index].detach().clone()) for target, index, _ in writes]
    try:
        _apply(writes)
        yield corrupted
    finally:
        _apply(list(reversed(saved)))
