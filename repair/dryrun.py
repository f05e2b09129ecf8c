"""The repair stage in ``--dry-run``: the plan checked offline against the model's shape and the
sweep variants that will rank each site, and what it will cost."""

from __future__ import annotations

from types import SimpleNamespace

from leaderboard.variants import Variant
from patching import SITES
from patching.components import components_of

from .run import RepairError, RepairJob, retrain_config
from .select import SelectionError, check_sizes
from .variants import blocks


def _ranked(swept: list[Variant], label: str, site: str, direction: str, n_layers: int) -> int:
    """One-component sweep variants of ``site`` in the repair's direction (the last layer's
    block output left out: it flips by construction)."""
    return len({(v.layers, v.heads) for v in swept
                if v.label == label and v.site == site and v.direction == direction
                and len(v.layers) == 1
                and not (SITES[site].stream == 1 and v.layers[0] == n_layers - 1)})


def dry_run_lines(job: RepairJob, swept: list[Variant], n_layers: int, n_heads: int
                  ) -> tuple[list[str], int]:
    """Every select block's k checked against the components there are and the sweep variants
    (``swept``) that rank them; printable lines, and how many models will be scored."""
    spec = job.spec
    shape = SimpleNamespace(num_hidden_layers=n_layers, num_attention_heads=n_heads)
    repaired = job.labels
    choices = 0
    for label in repaired:
        for block in blocks(spec):
            pool = len(components_of(SITES[block.site].weights, shape))
            ranked = pool if block.rank_by == "attribution" else _ranked(
                swept, label, block.site, spec.direction, n_layers)
            for k in block.k:
                try:
                    check_sizes(block.site, k, ranked, pool, block.rank_by)
                except SelectionError as err:
                    raise RepairError(f"repair {label}: {err} (direction "
                                      f"{spec.direction})") from None
            choices += len(block.k)
    per_choice = 2 + len(spec.random_seeds)  # located, lowest, random draws
    retrained = choices * per_choice + len(repaired) if "retrain" in spec.methods else 0
    restored = choices * per_choice if "restore" in spec.methods else 0
    alone = len(repaired) * sum(len(components_of(kind, shape)) for kind in spec.restore_each)
    scored = 2 * len(repaired) + restored + retrained + alone
    lines = [f"repair: {', '.join(repaired)}; selections "
             + ", ".join(f"{b.site} top {b.k} by {b.rank_by}" for b in blocks(spec))
             + f" ({spec.direction}); controls: {len(spec.random_seeds)} random draws, the "
             f"lowest ranked{', retraining every weight' if retrained else ''}",
             f"    {scored} models scored ({restored} restored, {retrained} retrained, {alone} "
             f"restored alone, {2 * len(repaired)} baselines), tasks {', '.join(spec.tasks)}, "
             f"limit {spec.limit}"]
    if alone:
        lines.append(f"    restore sweep: {alone} models, each {', '.join(spec.restore_each)} "
                     "component restored alone, scored on related math")
    if retrained:
        sft = retrain_config(job)
        steps = f"{sft.max_steps} steps" if sft.max_steps else f"{sft.epochs} epochs"
        lines.append(f"    retraining: {steps}, lr {sft.learning_rate:g}, batch "
                     f"{sft.effective_batch}, data preset {sft.data_preset} (correct labels); "
                     "weights scored in memory, not kept")
    return lines, scored
