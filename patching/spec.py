"""What a patch is (`PatchSpec`), and the checks that run before any forward pass.

Every check raises `PatchingError` with ONE line naming the bad value and what is
allowed, so a typo in a 36-layer sweep fails in milliseconds, not after an hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .architectures import SITE_NAMES, architecture_for, site_named
from .errors import PatchingError

POSITIONS: tuple[str, ...] = ("newest", "all")


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) else value
    try:
        items = list(items)
    except TypeError:
        raise PatchingError(f"{name} must be an int or a list of ints, got {value!r}") from None
    if not items:
        raise PatchingError(f"{name} must not be empty")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise PatchingError(f"{name} must hold non-negative ints, got {item!r} in {value!r}")
    if len(set(items)) != len(items):
        raise PatchingError(f"{name} has duplicates: {value!r}")
    return tuple(sorted(items))


@dataclass(frozen=True)
class PatchSpec:
    """Which donor activations replace the receiver's, and at which positions.

    site: a name of `architectures.SITES` ("resid", "attn", "mlp", "head"); layers: block
    indices; heads: only for a site split into heads (required there), applied in every
    listed layer; positions: "newest" (only the newest token, the study's scheme) or "all"
    (the component is replaced outright, prompt included).
    """

    site: str
    layers: Sequence[int]
    heads: Sequence[int] | None = None
    positions: str = "newest"

    def __post_init__(self) -> None:
        site = site_named(self.site)
        if self.positions not in POSITIONS:
            raise PatchingError(
                f"unknown positions {self.positions!r}; allowed: {', '.join(POSITIONS)}"
            )
        object.__setattr__(self, "layers", _int_tuple("layers", self.layers))
        if site.head_count is not None:
            if self.heads is None:
                raise PatchingError(
                    f"site {self.site!r} needs heads=[...] (head indices to patch)"
                )
            object.__setattr__(self, "heads", _int_tuple("heads", self.heads))
        elif self.heads is not None:
            per_head = [name for name in SITE_NAMES if site_named(name).head_count]
            raise PatchingError(
                f"heads={self.heads!r} is only allowed with site {' or '.join(map(repr, per_head))}"
                f", not {self.site!r}"
            )

    def check(self, config: Any) -> None:
        """Raise if a layer or head does not exist in a model with this config."""
        n_layers = config.num_hidden_layers
        for layer in self.layers:
            if layer >= n_layers:
                raise PatchingError(
                    f"layer {layer} is out of range for a {n_layers}-layer model "
                    f"(0..{n_layers - 1})"
                )
        count = site_named(self.site).head_count
        n_heads = getattr(config, count) if count else 0
        for head in self.heads or ():
            if head >= n_heads:
                raise PatchingError(
                    f"head {head} is out of range for a model with {n_heads} attention heads "
                    f"(0..{n_heads - 1})"
                )


def every_layer(
    site: str, num_layers: int, positions: str = "newest", heads: Sequence[int] | None = None
) -> list[PatchSpec]:
    """One spec per layer: the study's sweep (layer k of the donor into layer k of the receiver)."""
    return [PatchSpec(site, [layer], heads, positions) for layer in range(num_layers)]


def check_pair(receiver_config: Any, donor_config: Any) -> None:
    """Raise unless donor activations fit the receiver: one family, the same shape at every
    site; both families supported and loaded with an attention implementation the engine's
    masks serve."""
    families = []
    for role, config in (("receiver", receiver_config), ("donor", donor_config)):
        families.append(architecture_for(config))
        attention = getattr(config, "_attn_implementation", None) or "sdpa"
        if attention not in ("sdpa", "eager"):
            raise PatchingError(
                f"{role} uses attn_implementation={attention!r}; load it with 'sdpa' or 'eager'"
            )
    if families[0] is not families[1]:
        raise PatchingError(
            f"donor and receiver are of different families: receiver {families[0].name} "
            f"({receiver_config.model_type}), donor {families[1].name} ({donor_config.model_type})"
        )
    fields = {
        "num_hidden_layers": lambda c: c.num_hidden_layers,
        "hidden_size": lambda c: c.hidden_size,
        "num_attention_heads": lambda c: c.num_attention_heads,
        "head_dim": families[0].head_dim,
        "vocab_size": lambda c: c.vocab_size,
    }
    for name, get in fields.items():
        r, d = get(receiver_config), get(donor_config)
        if r != d:
            raise PatchingError(f"donor and receiver differ in {name}: receiver {r}, donor {d}")
