"""What a patch is (`PatchSpec`: parts and positions), its one text form, and the checks that
run before any forward pass.

A spec is one or more parts, each a site of one layer (with its own head set for a site split
into heads), all applied in one run, at the positions of one `Positions` rule. Its text form is
used by the CLI, sweep labels, the leaderboard and errors alike::

    attn:L3 + mlp:L5 + head:L4.H0,2@steps[4:9]

parts joined by ` + `, each `SITE:L<layer>` or `SITE:L<layer>.H<h>[,<h>...]` (the names of
`patching.components`'s components), and an optional `@POSITIONS` suffix for the whole spec
(`@newest`, the default, `@all`, `@prompt[i:j]`, `@steps[a:b]`). `PatchSpec.parse(text)` builds
one, `str(spec)` gives the canonical text back (parts in forward order, heads sorted, no
`@newest`), and the two round-trip.

Every check raises `PatchingError` with ONE line naming the bad piece and what is allowed, so a
typo in a 36-layer sweep fails in milliseconds, not after an hour.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .architectures import PER_HEAD_SITES, SITE_NAMES, SITES, architecture_for, site_named
from .errors import PatchingError
from .positions import FORMS, Positions

_PART = re.compile(r"^(?P<site>[A-Za-z_]\w*):L(?P<layer>\d+)(?:\.H(?P<heads>[\d,\s]+))?$")
PART_FORM = "SITE:L<layer> or SITE:L<layer>.H<h>[,<h>...]"


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
class Part:
    """One site of one layer; `heads` for a site split into heads (required there)."""

    site: str
    layer: int
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        site = site_named(self.site)
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise PatchingError(f"layers must hold non-negative ints, got {self.layer!r}")
        if site.head_count is not None:
            if self.heads is None:
                raise PatchingError(
                    f"site {self.site!r} needs heads=[...] (head indices to patch; in text "
                    f"{self.site}:L{self.layer}.H0,2)"
                )
            object.__setattr__(self, "heads", _int_tuple("heads", self.heads))
        elif self.heads is not None:
            raise PatchingError(
                f"heads={list(self.heads)!r} is only allowed with site "
                f"{' or '.join(map(repr, PER_HEAD_SITES))}, not {self.site!r}"
            )

    def __str__(self) -> str:
        heads = "" if self.heads is None else ".H" + ",".join(map(str, self.heads))
        return f"{self.site}:L{self.layer}{heads}"

    @property
    def order(self) -> tuple[int, int]:
        """Where the part is computed in a forward pass (parts are kept in this order)."""
        return self.layer, SITES[self.site].order

    @classmethod
    def parse(cls, text: str, spec: str = "") -> Part:
        where = f" of {spec!r}" if spec and spec != text else ""
        match = _PART.match(text.strip())
        if match is None:
            raise PatchingError(f"part {text.strip()!r}{where} is not {PART_FORM}")
        site, layer, heads = match.group("site"), int(match.group("layer")), match.group("heads")
        if site not in SITES:
            raise PatchingError(
                f"unknown site {site!r} in part {text.strip()!r}{where}; allowed: "
                f"{', '.join(SITE_NAMES)}"
            )
        head_list = None
        if heads is not None:
            pieces = [h.strip() for h in heads.split(",")]
            if not all(pieces):
                raise PatchingError(f"part {text.strip()!r}{where} has an empty head in "
                                    f".H{heads}; list heads as .H0,2")
            head_list = [int(h) for h in pieces]
        try:
            return cls(site, layer, None if head_list is None else tuple(head_list))
        except PatchingError as err:
            raise PatchingError(f"part {text.strip()!r}{where}: {err}") from None


def _parts_from_layers(site: str, layers: Any, heads: Any) -> tuple[Part, ...]:
    site_named(site)
    layer_tuple = _int_tuple("layers", layers)
    if heads is not None:
        heads = _int_tuple("heads", heads)
    return tuple(Part(site, layer, heads) for layer in layer_tuple)


def _check_parts(parts: Sequence[Part]) -> tuple[Part, ...]:
    if not parts:
        raise PatchingError("a spec needs at least one part, such as attn:L3")
    seen: dict[tuple[str, int], Part] = {}
    for part in parts:
        if not isinstance(part, Part):
            raise PatchingError(f"parts must be Part objects or text such as 'attn:L3', got "
                                f"{part!r}")
        if (part.site, part.layer) in seen:
            raise PatchingError(
                f"part {part.site}:L{part.layer} is given twice ({seen[(part.site, part.layer)]}"
                f" and {part}); list each site and layer once, with all its heads (head:L4.H0,2)"
            )
        seen[(part.site, part.layer)] = part
    for part in parts:
        if part.site == "resid" and ("resid_pre", part.layer + 1) in seen:
            raise PatchingError(
                f"parts {part} and resid_pre:L{part.layer + 1} are one tensor (block "
                f"{part.layer}'s output is block {part.layer + 1}'s input); give it once"
            )
    return tuple(sorted(parts, key=lambda p: p.order))


@dataclass(frozen=True, init=False)
class PatchSpec:
    """Which donor activations replace the receiver's, and at which positions.

    Either `PatchSpec(site, layers, heads, positions)`: one site in every listed layer, with
    the same heads in each (the form of a layer sweep); or `PatchSpec(parts=[...],
    positions=...)` with `Part`s or part texts; or `PatchSpec.parse(text)`. `positions` is a
    `Positions` rule or its text (`patching.positions`).
    """

    parts: tuple[Part, ...]
    positions: Positions

    def __init__(
        self,
        site: str | None = None,
        layers: Any = None,
        heads: Any = None,
        positions: str | Positions = "newest",
        *,
        parts: Iterable[Part | str] | None = None,
    ) -> None:
        if parts is not None:
            if site is not None or layers is not None or heads is not None:
                raise PatchingError("give either parts=[...] or site/layers/heads, not both")
            built = [Part.parse(p) if isinstance(p, str) else p for p in parts]
        else:
            if site is None or layers is None:
                raise PatchingError("a PatchSpec needs site and layers (or parts=[...])")
            built = list(_parts_from_layers(site, layers, heads))
        object.__setattr__(self, "parts", _check_parts(built))
        object.__setattr__(self, "positions", Positions.parse(positions))

    @classmethod
    def parse(cls, text: str | PatchSpec) -> PatchSpec:
        """The spec a text form describes (module docstring); one line naming the bad piece."""
        if isinstance(text, PatchSpec):
            return text
        if not isinstance(text, str):
            raise PatchingError(f"a spec must be text such as 'attn:L3 + mlp:L5', got {text!r}")
        body, at, positions = text.partition("@")
        if "@" in positions:
            raise PatchingError(f"spec {text!r} has more than one @; give one @POSITIONS suffix "
                                f"({FORMS})")
        if at and not positions.strip():
            raise PatchingError(f"spec {text!r} ends in '@'; give positions after it ({FORMS})")
        pieces = body.split("+")
        if not body.strip():
            raise PatchingError(f"spec {text!r} has no part; write parts such as attn:L3 + "
                                "mlp:L5")
        for i, piece in enumerate(pieces):
            if not piece.strip():
                where = "a dangling '+' at the end" if i == len(pieces) - 1 else (
                    "a '+' with nothing before it" if i == 0 else "two '+' in a row")
                raise PatchingError(f"spec {text!r} has {where}; join parts as attn:L3 + mlp:L5")
        parts = [Part.parse(piece, text) for piece in pieces]
        try:
            built = _check_parts(parts)
            rule = Positions.parse(positions) if at else Positions()
        except PatchingError as err:
            raise PatchingError(f"spec {text!r}: {err}") from None
        spec = cls.__new__(cls)
        object.__setattr__(spec, "parts", built)
        object.__setattr__(spec, "positions", rule)
        return spec

    def __str__(self) -> str:
        body = " + ".join(map(str, self.parts))
        return body if self.positions.kind == "newest" else f"{body}@{self.positions}"

    def __repr__(self) -> str:
        return f"PatchSpec({str(self)!r})"

    @property
    def layers(self) -> tuple[int, ...]:
        """Every layer a part names, ascending."""
        return tuple(sorted({p.layer for p in self.parts}))

    @property
    def sites(self) -> tuple[str, ...]:
        """Every site a part names, in forward order."""
        return tuple(dict.fromkeys(p.site for p in self.parts))

    def check(self, config: Any) -> None:
        """Raise if a part's layer or head does not exist in a model with this config."""
        n_layers = config.num_hidden_layers
        for part in self.parts:
            if part.layer >= n_layers:
                raise PatchingError(
                    f"layer {part.layer} of part {part} is out of range for a {n_layers}-layer "
                    f"model (0..{n_layers - 1})"
                )
            count = site_named(part.site).head_count
            if count is None:
                continue
            n_heads = getattr(config, count)
            for head in part.heads or ():
                if head < n_heads:
                    continue
                if count == "num_attention_heads":
                    raise PatchingError(
                        f"head {head} of part {part} is out of range for a model with {n_heads} "
                        f"attention heads (0..{n_heads - 1})"
                    )
                per_group = config.num_attention_heads // n_heads
                raise PatchingError(
                    f"head {head} of part {part} is out of range: {part.site} heads are the "
                    f"model's {n_heads} KV groups (0..{n_heads - 1}), each read by "
                    f"{per_group} query heads under grouped-query attention"
                )


def every_layer(
    site: str, num_layers: int, positions: str | Positions = "newest",
    heads: Sequence[int] | None = None,
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
        "num_key_value_heads": lambda c: c.num_key_value_heads,
        "head_dim": families[0].head_dim,
        "vocab_size": lambda c: c.vocab_size,
    }
    for name, get in fields.items():
        r, d = get(receiver_config), get(donor_config)
        if r != d:
            raise PatchingError(f"donor and receiver differ in {name}: receiver {r}, donor {d}")
