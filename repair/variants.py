"""What the repair stage will score, decided and checked before any model trains.

Per corrupted model: the selection (ranked here, or read from a selection file made for this
model pair), every selection checked against both models (a component the model lacks, a k
larger than the components there are, a corrupted model whose shapes differ from the clean
one, a selection file of another pair: one line each), and the list of models to score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaderboard.tables import RELATED
from patching.components import Selection, check_repair_pair, components_of
from patching.errors import PatchingError
from repair.select import (
    Choice,
    SelectionError,
    attribution_for,
    attribution_ranking,
    choose,
    read_selection,
    sweep_items,
    sweep_ranking,
    write_selection,
)

from .config import RepairSpec, SelectBlock

LOCATED, RANDOM, LOWEST, FULL = "located", "random", "lowest", "full"
ALONE = "alone"  # the restore sweep: one component restored by itself


@dataclass(frozen=True)
class RepairVariant:
    """One model to score: a baseline (``method`` clean/corrupted) or a repaired model."""

    name: str
    label: str | None
    method: str  # clean | corrupted | restore | retrain
    site: str | None = None
    k: int | None = None
    control: str | None = None  # located | random | lowest | full | alone
    seed: int | None = None
    components: tuple[str, ...] | None = None  # None with retrain: every weight

    @property
    def selection(self) -> Selection | None:
        return None if self.components is None else Selection(self.components)

    def identity(self) -> dict[str, Any]:
        """What the results record says this model is: a baseline of ``label``'s items, or a
        repaired model with how it was chosen (no key for what does not apply)."""
        if self.method in ("clean", "corrupted"):
            return {"role": self.method, "label": self.label}
        if self.control == ALONE:
            return {"role": "restore", "label": self.label,
                    "component": self.components[0]}  # type: ignore[index]
        return {"role": "repair", "label": self.label, "method": self.method,
                "site": self.site, "k": self.k, "control": self.control, "seed": self.seed,
                "components": None if self.components is None else list(self.components)}


def variants_for(label: str, choices: list[Choice], methods: list[str]) -> list[RepairVariant]:
    """The clean and corrupted baselines (scored on this label's items), then per method every
    choice with its controls, then (for retraining) the full-model control."""
    out = [RepairVariant(f"clean-{label}", label, "clean"),
           RepairVariant(f"corrupted-{label}", label, "corrupted")]
    for method in methods:
        for c in choices:
            stem = f"{label}-{method}-{c.name}"
            out.append(RepairVariant(f"{stem}-{LOCATED}", label, method, c.site, c.k, LOCATED,
                                     components=tuple(r.component for r in c.located)))
            out += [RepairVariant(f"{stem}-{RANDOM}{seed}", label, method, c.site, c.k, RANDOM,
                                  int(seed), tuple(names)) for seed, names in c.random.items()]
            out.append(RepairVariant(f"{stem}-{LOWEST}", label, method, c.site, c.k, LOWEST,
                                     components=tuple(r.component for r in c.lowest)))
        if method == "retrain":
            out.append(RepairVariant(f"{label}-retrain-{FULL}", label, method, control=FULL))
    return out


def alone_variants(label: str, kinds: list[str], config: Any) -> list[RepairVariant]:
    """The restore sweep: every component of these kinds restored by itself."""
    return [RepairVariant(f"{label}-alone-{str(c).replace(':', '').replace('.', '')}", label,
                          "restore", control=ALONE, components=(str(c),))
            for kind in kinds for c in components_of(kind, config)]


def blocks(spec: RepairSpec) -> list[SelectBlock]:
    return [SelectBlock(**block) for block in spec.select]


def rank(spec: RepairSpec, label: str, sweep_runs: list[Any] | None, models: Any,
         config: Any, metric: str, sweeps_dir: Path, task_dir: Path
         ) -> tuple[list[Choice], dict[str, list[int]], dict[str, str]]:
    """Choices of every select block for ``label``, the related-math items the rankings read,
    and where each source's evidence is. ``models``: () -> (clean, corrupted, tokenizer), called
    only when attribution needs the weights."""
    choices, used, evidence = [], set(), {}
    scores = None
    for block in blocks(spec):
        if block.rank_by == "sweep":
            if sweep_runs is None:
                raise SelectionError(f"{label}: no sweep results to rank site {block.site} by")
            ranking = sweep_ranking(sweep_runs, label, block.site, spec.direction, metric)
            used |= set(sweep_items(sweep_runs))
            evidence["sweep"] = str(sweeps_dir)
        else:
            if scores is None:
                clean, corrupted, tokenizer = models()
                scores, rows = attribution_for(clean, corrupted, tokenizer, task_dir,
                                               spec.direction)
                used |= set(rows)
                evidence["attribution"] = f"{task_dir / 'data' / RELATED}.jsonl rows {rows[0]}.."
            ranking = attribution_ranking(scores, block.site, spec.direction)
        choices += [choose(ranking, block.site, k, block.rank_by, config, spec.random_seeds)
                    for k in block.k]
    return choices, {RELATED: sorted(used)}, evidence


def selection_for(spec: RepairSpec, label: str, pair: dict[str, Any], out: Path, metric: str,
                  ranked: Any) -> tuple[list[Choice], dict[str, list[int]]]:
    """The selection file's choices: read from ``spec.selection_files`` (checked to be this
    pair's), else ranked (``ranked()`` -> ``rank``'s result) and written to ``out``."""
    if label in spec.selection_files:
        record, choices = read_selection(Path(spec.selection_files[label]), pair)
        return choices, record["used_items"]
    choices, used, evidence = ranked()
    write_selection(out, pair, spec.direction, metric, choices, used, evidence)
    return choices, used


def check_pair(label: str, clean: Any, corrupted: Any | None) -> None:
    """Clean weights fit the corrupted model (None: a LoRA adapter, whose base is the clean
    model). Meta-device skeletons will do: only names and shapes are read."""
    try:
        if corrupted is not None:
            check_repair_pair(corrupted, clean)
    except PatchingError as err:
        raise SelectionError(f"{label}: {err}") from None


def check_variants(variants: list[RepairVariant], config: Any) -> None:
    """Every selection exists in a model with this config; raises ``SelectionError`` naming
    the first problem."""
    try:
        for variant in variants:
            if variant.selection is not None:
                variant.selection.check(config)
    except PatchingError as err:
        raise SelectionError(f"{variants[0].label}: {err}") from None


def eval_samples(tasks: list[str], used: dict[str, list[int]], limit: int | float | None,
                 task_dir: Path) -> dict[str, list[int]]:
    """Doc ids to score per task: every item the ranking did not read, the first ``limit``
    (a count, or a fraction of the task) of them."""
    out = {}
    for task in tasks:
        total = sum(1 for line in (task_dir / "data" / f"{task}.jsonl").open() if line.strip())
        held_out = set(used.get(task, ()))
        ids = [i for i in range(total) if i not in held_out]
        if limit is not None:
            ids = ids[:int(limit * total) if limit < 1 else int(limit)]
        if not ids:
            raise SelectionError(f"{task}: no items left to score once the {len(held_out)} "
                                 "the ranking read are held out")
        out[task] = ids
    return out
