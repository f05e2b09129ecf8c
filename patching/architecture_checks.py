"""The automatic check of an `architectures.ARCHITECTURES` entry against a model of its family.

Run on a tiny random model (the tests build one per family), it shows that every table fact the
engine relies on holds, by computing each from the model itself: the residual stream and the
terms added to it sum up, the head slices are what the output projection reads, the query, key
and value sites are what attention reads head by head (a key or value group moves exactly the
query heads that share it), and the weight paths cover every parameter once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .architectures import (
    HEAD_SITE,
    MID_SITE,
    SITES,
    Architecture,
    architecture_for,
    heads_of,
    locate,
    site_width,
)
from .errors import PatchingError
from .hooks import Key, capturing, site_hooks


def _probe(lm: nn.Module) -> Tensor:
    device = next(lm.parameters()).device
    return (torch.arange(1, 9)[None] % lm.config.vocab_size).to(device)


def _mlp_path(block: nn.Module, arch: Architecture, x: Tensor) -> Tensor:
    """The block's MLP path applied to the residual stream `x`: its modules in order."""
    for path in arch.mlp:
        x = block.get_submodule(path)(x)
    return x


def _close(a: Tensor, b: Tensor, atol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol)


@torch.no_grad()
def check_architecture(lm: nn.Module, arch: Architecture | None = None, atol: float = 1e-6
                       ) -> None:
    """Check a family entry against a model of that family (a tiny random one will do).

    On one short prompt, for every block: each site's activation has the expected width;
    `resid_pre` + `attn` = `resid_mid`, `resid_mid` + `mlp` = `resid` (so the terms ARE what
    enters the residual adds) and the MLP path's modules map `resid_mid` to `mlp`; the output
    projection applied to the head site gives the attention output. Then, in block 0, moving
    one head's `q` moves only that head's slice of the head site, and moving one KV group's
    `k` or `v` moves exactly the query heads of that group; and the weight facts
    (`check_weight_paths`). Raises `PatchingError` naming the first fact that fails; use
    float64 for a tight `atol`.
    """
    config = lm.config
    arch = arch or architecture_for(config)
    blocks = lm.get_submodule(arch.layers)
    attention_path = arch.sites[HEAD_SITE].path.rsplit(".", 1)[0]
    attention_outputs: list[Tensor] = []
    handles = [
        b.get_submodule(attention_path).register_forward_hook(
            lambda m, a, out: attention_outputs.append(out[0])
        )
        for b in blocks
    ]
    acts: dict[Key, Tensor] = {}
    keys = [(site, layer) for layer in range(len(blocks)) for site in SITES]
    try:
        with capturing(lm, arch, keys, acts):
            lm(input_ids=_probe(lm), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    for layer, block in enumerate(blocks):
        for site in SITES:
            if (got := acts[(site, layer)].shape[-1]) != (want := site_width(config, arch, site)):
                raise PatchingError(
                    f"{arch.name}: site {site!r} of layer {layer} is {got} wide, expected {want}"
                )
        a = {site: acts[(site, layer)] for site in SITES}
        facts = (
            (a["resid_pre"] + a["attn"], a[MID_SITE], "resid_pre + attn is not resid_mid"),
            (a[MID_SITE] + a["mlp"], a["resid"], "resid_mid + mlp is not its output"),
            (_mlp_path(block, arch, a[MID_SITE]), a["mlp"],
             f"its MLP path {arch.mlp} does not map resid_mid to the mlp term"),
            (locate(lm, arch, HEAD_SITE, layer).module(a[HEAD_SITE]), attention_outputs[layer],
             "the output projection of the head site is not the attention output"),
        )
        for got, want, what in facts:
            if not _close(got, want, atol):
                raise PatchingError(f"{arch.name}: layer {layer}'s {what}")
    for site in ("q", "k", "v"):
        _check_head_reads(lm, arch, site, atol)
    check_weight_paths(lm, arch, atol)


def _head_site_moves(lm: nn.Module, arch: Architecture, site: str, head: int) -> Tensor:
    """(query heads,) how far each head's slice of the head site moves in block 0 when one head
    of `site` moves by a random amount at every position."""
    config, size = lm.config, arch.head_dim(lm.config)
    cols = slice(head * size, (head + 1) * size)
    noise = torch.Generator().manual_seed(0)

    def shift(key: Key, act: Tensor) -> Tensor:
        out = act.clone()
        out[..., cols] += torch.randn(act[..., cols].shape, generator=noise).to(act)
        return out

    seen: list[Tensor] = []
    for edit in (None, shift):
        acts: dict[Key, Tensor] = {}
        with capturing(lm, arch, [(HEAD_SITE, 0)], acts):
            if edit is None:
                lm(input_ids=_probe(lm), use_cache=False)
            else:
                with site_hooks(lm, arch, [(site, 0)], edit):
                    lm(input_ids=_probe(lm), use_cache=False)
        seen.append(acts[(HEAD_SITE, 0)].unflatten(-1, (heads_of(config), size)))
    return (seen[1] - seen[0]).abs().amax(dim=(0, 1, 3))


def _check_head_reads(lm: nn.Module, arch: Architecture, site: str, atol: float) -> None:
    """The last head (or KV group) of `site` is read by exactly the query heads it serves."""
    config = lm.config
    heads, groups = heads_of(config), heads_of(config, site)
    last = groups - 1
    per_group = heads // groups
    want = list(range(last * per_group, (last + 1) * per_group))
    moved = _head_site_moves(lm, arch, site, last)
    got = [h for h in range(heads) if moved[h] > atol]
    if got != want:
        what = "head" if groups == heads else "KV group"
        raise PatchingError(
            f"{arch.name}: moving {what} {last} of site {site!r} moved query heads {got} of the "
            f"{HEAD_SITE} site, expected {want}"
        )


@torch.no_grad()
def check_weight_paths(lm: nn.Module, arch: Architecture, atol: float = 1e-6) -> None:
    """The weight facts `patching.components` relies on: every parameter of every block lies on
    exactly one of the attention and MLP paths; and, unless the family says heads cannot be
    changed alone, moving the last head's query rows in block 0 moves that head's slice of the
    per-head site and no other head's (so the rows ARE that head's query, and nothing mixes
    the heads' queries). The weight is put back bit for bit."""
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
    config: Any = lm.config
    heads, head_dim = heads_of(config), arch.head_dim(config)
    weight = lm.get_submodule(arch.layers)[0].get_submodule(arch.query).weight
    if weight.shape[0] < heads * head_dim:
        raise PatchingError(f"{arch.name}: {arch.query} has {weight.shape[0]} output rows, "
                            f"fewer than the {heads} x {head_dim} query rows")
    acts: dict[Key, Tensor] = {}
    outputs = []
    rows = slice((heads - 1) * head_dim, heads * head_dim)
    saved = weight[rows].clone()
    try:
        for shift in (0.0, 0.5):
            weight[rows] = saved + shift
            with capturing(lm, arch, [(HEAD_SITE, 0)], acts):
                lm(input_ids=_probe(lm), use_cache=False)
            outputs.append(acts[(HEAD_SITE, 0)].unflatten(-1, (heads, head_dim)))
    finally:
        weight[rows] = saved
    moved = (outputs[1] - outputs[0]).abs().amax(dim=(0, 1, 3))
    if moved[-1] <= atol or bool((moved[:-1] > atol).any()):
        raise PatchingError(
            f"{arch.name}: moving head {heads - 1}'s rows of {arch.query} changed heads "
            f"{[h for h in range(heads) if moved[h] > atol]} of the {HEAD_SITE} site, not that "
            "head alone"
        )
