"""Checks shared by the engine's test files: the left-padded test batch, and the guard that a
patch really writes the donor's values at its site (a patch that writes nothing is caught).

The guard observes the site with plain torch hooks of its own, registered before the engine
runs: the engine puts its hooks in front of a module's others, so these see the activation the
model really goes on with. A `resid` of layer l is observed where it is consumed, at the input
of block l + 1 (or the final norm); `resid_mid` at the MLP path's input, and the block's output
must then be that value plus the MLP term the block computed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from patching import PatchSpec, architecture_for, patched_logprobs
from patching.architectures import MID_SITE, SITES, locate
from patching.models import as_runner

RULES = ["newest", "all", "prompt[-2:]", "steps[1:3]"]


def part_text(site: str, layer: int) -> str:
    """A part with heads where the site has them (query heads 1 and 3; KV group 1)."""
    count = SITES[site].head_count
    heads = "" if count is None else (".H1,3" if count == "num_attention_heads" else ".H1")
    return f"{site}:L{layer}{heads}"


def every_spec(layer: int = 1, rules: list[str] = RULES) -> list[str]:
    """Each site alone under each positions rule (resid_pre one block later: it is the stream
    the block before leaves, so at layer 1 it is the output of the shared block 0)."""
    return [f"{part_text(site, layer + (site == 'resid_pre'))}@{rule}" for site in SITES
            for rule in rules]


def left_padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts of 5, 3 and 1 tokens, as (ids, attention mask)."""
    ids = torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23], [0, 0, 0, 0, 31]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    return ids, mask


def _observe(model, site: str, layer: int, seen: dict[str, Tensor]) -> list:
    """Plain hooks recording `site` of `layer` (and, for resid_mid, the block's output and MLP
    term) in `seen`; returns their handles."""
    runner = as_runner(model)
    lm, arch = runner.lm, runner.arch
    blocks = lm.get_submodule(arch.layers)

    def stream_at(j: int, name: str):
        module = blocks[j] if j < len(blocks) else lm.get_submodule(arch.final_norm)
        return module.register_forward_pre_hook(lambda m, a: seen.__setitem__(name, a[0]))

    def at_site(name: str, which: str):
        at = locate(lm, arch, name, layer)
        cols = slice(None) if at.columns is None else slice(*at.columns)
        if at.read == "input[0]":
            return at.module.register_forward_pre_hook(
                lambda m, a: seen.__setitem__(which, a[0][..., cols]))
        pick = (lambda out: out[0]) if at.read == "output[0]" else (lambda out: out)
        return at.module.register_forward_hook(
            lambda m, a, out: seen.__setitem__(which, pick(out)[..., cols]))

    if SITES[site].stream is not None:
        return [stream_at(layer + SITES[site].stream, "site")]
    handles = [at_site(site, "site")]
    if site == MID_SITE:
        handles += [at_site("mlp", "mlp"), stream_at(layer + 1, "block")]
    return handles


def _run(model, ids: Tensor, site: str, layer: int, call) -> dict[str, Tensor]:
    seen: dict[str, Tensor] = {}
    handles = _observe(model, site, layer, seen)
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def assert_patch_writes_donor(receiver, donor, ids: torch.Tensor, spec: PatchSpec | str) -> None:
    """After the patch, the site (of the spec's one part, at every position) holds the donor's
    values, only in the part's heads for a site split into heads, and the logits move."""
    spec = PatchSpec.parse(spec)
    assert spec.positions.kind == "all" and len(spec.parts) == 1, spec
    part = spec.parts[0]
    lengths = [1] * len(ids)
    x = ids[:, :-1]  # what the teacher-forced pass runs
    with torch.no_grad():
        want = _run(donor, ids, part.site, part.layer, lambda: donor(x))["site"]
        own = _run(receiver, ids, part.site, part.layer, lambda: receiver(x))["site"]
    scores = {}

    def patched() -> None:
        scores["patched"] = patched_logprobs(receiver, donor, ids, spec, lengths).logprobs

    after = _run(receiver, ids, part.site, part.layer, patched)
    with torch.no_grad():
        clean = torch.log_softmax(receiver(x).logits[:, -1].double(), -1)
    clean = clean.gather(-1, ids[:, -1:])
    assert not torch.equal(want, own), spec
    got = after["site"]
    cols = torch.ones(got.shape[-1], dtype=torch.bool)
    if part.heads is not None:
        size = architecture_for(as_runner(receiver).config).head_dim(as_runner(receiver).config)
        head = torch.arange(got.shape[-1]) // size  # the head each column belongs to
        cols = head.unsqueeze(-1).eq(torch.tensor(part.heads)).any(-1)
        assert torch.equal(got[..., ~cols], own[..., ~cols]), spec
    assert torch.equal(got[..., cols], want[..., cols]), spec
    if part.site == MID_SITE:  # the block goes on from the patched stream
        assert torch.equal(after["block"], after["site"] + after["mlp"]), spec
    assert not torch.allclose(scores["patched"].double(), clean), spec
