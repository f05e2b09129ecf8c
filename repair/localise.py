"""Three localisations of one corrupted model side by side: where activation patching flips
related math, where fine-tuning moved the weights, and where putting the clean weights back
helps.

For each kind of component (a block, whose output is the residual stream; its attention path;
its MLP path) every layer gets three scores:

- ``patching``: the flip rate of its one-layer patch in the repair's direction
  (``repair.select.sweep_ranking``, read with the study's metric);
- ``weights``: ‖ΔW‖ / ‖W_clean‖ (``repair.weights_moved``);
- ``restore``: the recovery of restoring it alone (the restore sweep).

Patching scores no last block: patching its residual stream copies the donor's next token by
construction, so it would rank first whatever the corruption is. Spearman's ρ
between each pair of methods, over the layers both score, says whether they agree; with few
layers ρ is coarse, and the report gives it per seed and across seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from leaderboard.seeds import spearman
from patching.components import Component

SITE_OF = {"block": "resid", "attn": "attn", "mlp": "mlp"}  # weights kind -> its patch site
METHODS = ("patching", "weights", "restore")
PAIRS = (("patching", "weights"), ("patching", "restore"), ("weights", "restore"))
WHO = {"patching": "activation patching", "weights": "the weight change",
       "restore": "restoring"}
SAYS = {"patching": "activation patching flips related math most",
        "weights": "the weights moved most", "restore": "restoring the clean weights helps most"}


@dataclass(frozen=True)
class Localisation:
    """One kind's three per-layer scores in one model (None: not measured there)."""

    kind: str
    layers: tuple[int, ...]
    scores: Mapping[str, tuple[float | None, ...]]

    def top(self, method: str) -> int | None:
        """The layer ``method`` scores highest (the earliest of ties); None when it scored no
        layer, or every layer alike."""
        pairs = [(s, layer) for layer, s in zip(self.layers, self.scores[method], strict=True)
                 if s is not None]
        if not pairs or len({s for s, _ in pairs}) < 2:
            return None
        best = max(s for s, _ in pairs)
        return min(layer for s, layer in pairs if s == best)

    def rho(self, a: str, b: str) -> float | None:
        """Spearman's ρ of two methods over the layers both scored."""
        both = [(x, y) for x, y in zip(self.scores[a], self.scores[b], strict=True)
                if x is not None and y is not None]
        return spearman([x for x, _ in both], [y for _, y in both]) if both else None


def localise(kind: str, n_layers: int, patching: Mapping[str, float],
             weights: Mapping[str, float], restore: Mapping[str, float | None]
             ) -> Localisation:
    """The three scores of every ``kind`` component, by layer, from per-component values
    (``block:L3`` -> value); a component a method did not score is None."""
    if kind not in SITE_OF:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(SITE_OF)}")
    layers = tuple(range(n_layers))
    names = [str(Component(kind, layer)) for layer in layers]
    last = f"block:L{n_layers - 1}"  # its resid patch flips by construction: not patching's
    sources = {"patching": {k: v for k, v in patching.items() if k != last},
               "weights": weights, "restore": restore}
    return Localisation(kind, layers, {m: tuple(sources[m].get(n) for n in names)
                                       for m in METHODS})


def position(layer: int, n_layers: int) -> str:
    """``early``, ``middle`` or ``late``: which third of the stack a layer sits in."""
    third = layer * 3 // max(n_layers, 1)
    return ("early", "middle", "late")[min(third, 2)]


def agreement_sentence(tops: Mapping[str, int | None], n_layers: int, kind: str) -> str:
    """Whether the three methods' top layers agree, in words: "Among blocks, activation patching
    flips related math most at L4 (late), while the weights moved most and restoring the clean
    weights helps most at L0 (early)."
    """
    found = {m: layer for m, layer in tops.items() if layer is not None}
    what = {"block": "blocks", "attn": "attention paths", "mlp": "MLP paths"}[kind]
    if not found:
        return f"Among {what}, no method singles out a layer."
    if len(set(found.values())) == 1 and len(found) == len(METHODS):
        layer = next(iter(found.values()))
        return f"Among {what}, all three methods agree on L{layer} ({position(layer, n_layers)})."
    groups: dict[int, list[str]] = {}
    for method, layer in found.items():
        groups.setdefault(layer, []).append(method)
    parts = [" and ".join(SAYS[m] for m in methods) + f" at L{layer} ({position(layer, n_layers)})"
             for layer, methods in groups.items()]
    text = parts[0] + (f", while {parts[1]}" if len(parts) > 1 else "") + (
        f", and {parts[2]}" if len(parts) > 2 else "")
    missing = [m for m in METHODS if m not in found]
    tail = "; " + " and ".join(WHO[m] for m in missing) + (
        " single out no layer" if len(missing) > 1 else " singles out no layer") if missing else ""
    return f"Among {what}, {text}{tail}."
