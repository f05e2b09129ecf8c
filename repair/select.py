"""Which components a targeted repair changes, and its same-size controls, chosen from measured
effects and written down with the reason for each choice.

For one corrupted model and one site, every component is scored by how far patching it moves
related math towards the donor, in the configured direction (``clean_to_corrupted``: the clean
model's activations into the corrupted one, i.e. which components repair it):

- ``sweep``: the flip rate of its one-layer (one-head) patch variant, flipped / differing items,
  read with the study's ``metric`` (``leaderboard.flips``). Patching the LAST layer's residual
  stream flips everything by construction (``Run.by_construction``) and locates nothing, so
  those variants are not ranked;
- ``attribution``: its AtP score (``patching.attribution``, ``logprob_diff`` on the last
  ``ATTRIBUTION_ROWS`` related-math rows), signed towards the donor's answer.

The located set is the top k; its controls are k components of the same kind drawn at random
among all the others (one draw per seed) and the k ranked lowest. The items a ranking read are
recorded (``used_items``), so the repair can be measured on the others.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from formats.errors import InputError
from formats.files import atomic_write_text
from leaderboard.flips import flip
from leaderboard.results import Run
from leaderboard.tables import RELATED
from leaderboard.variants import digest_prints, fingerprint
from patching import SITES
from patching.components import Component, components_of

ATTRIBUTION_ROWS = 32
VERSION = 1


class SelectionError(InputError):
    """A selection that cannot be made or used; one line."""


@dataclass(frozen=True)
class Ranked:
    """One component's score, and where it came from."""

    component: str
    score: float
    reason: dict[str, Any]


def component_name(site: str, layer: int, head: int | None = None) -> str:
    """The ``patching.components`` name of the weights behind ``site`` at ``layer`` (and head)."""
    return str(Component(SITES[site].weights, layer, head))


def _order(ranking: list[Ranked]) -> list[Ranked]:
    """Best first; ties in layer and head order."""
    return sorted(ranking, key=lambda r: (-r.score, Component.parse(r.component).sort_key()))


def sweep_ranking(runs: list[Run], label: str, site: str, direction: str, metric: str,
                  positions: str = "newest") -> list[Ranked]:
    """Components of ``site`` by the flip rate of their one-component patch variants."""
    clean = next(r for r in runs if r.role == "clean")
    corrupted = next((r for r in runs if r.role == "corrupted" and r.label == label), None)
    if corrupted is None:
        raise SelectionError(f"the sweep results hold no corrupted baseline {label!r}")
    receiver, donor = (clean, corrupted) if direction == "corrupted_to_clean" else (corrupted,
                                                                                     clean)
    out = []
    for run in runs:
        if (run.role != "patch" or run.label != label or run.site != site
                or run.direction != direction or run.positions != positions
                or run.single_layer is None or (run.heads is not None and len(run.heads) != 1)
                or run.by_construction):
            continue
        got = flip(run, receiver, donor, RELATED, metric)
        reason = {"variant": run.name, "results_file": str(run.results_file),
                  "flipped": got.flipped, "differing": got.differing}
        head = run.heads[0] if run.heads else None
        out.append(Ranked(component_name(site, run.layers[0], head), got.rate, reason))
    return _order(out)


def sweep_items(runs: list[Run]) -> list[int]:
    """Related-math doc ids any sweep variant was scored on (the ranking read them)."""
    return sorted({d for r in runs if RELATED in r.output_types for d in r.replies(RELATED)})


def attribution_ranking(scores: Any, site: str, direction: str) -> list[Ranked]:
    """Components of ``site`` by their AtP score (``patching.attribution.AttributionScores``
    with the ``logprob_diff`` metric: log p(corrupted answer) - log p(correct answer)), signed
    so that a larger value moves the receiver towards the donor's answer."""
    sign = 1.0 if direction == "corrupted_to_clean" else -1.0
    out = [Ranked(component_name(site, layer, head), sign * score,
                  {"attribution": scores.metric, "positions": scores.positions, "score": score})
           for (_, layer, head), score in scores.ranked(site)]
    return _order(out)


def attribution_for(clean: Any, corrupted: Any, tokenizer: Any, task_dir: Path,
                    direction: str) -> tuple[Any, list[int]]:
    """AtP scores of every component (``logprob_diff``, the corrupted model's greedy answers
    against the correct ones, on the last ``ATTRIBUTION_ROWS`` related-math rows), and the doc
    ids of those rows."""
    from patching.attribution import attribution_scores
    from patching.attribution_data import answer_pair_batch, read_rows

    path = task_dir / "data" / f"{RELATED}.jsonl"
    rows = read_rows(path)
    total = len(rows)
    batch = answer_pair_batch(tokenizer, corrupted, rows[-ATTRIBUTION_ROWS:])
    if batch is None:
        raise SelectionError(f"the corrupted model answers all last {ATTRIBUTION_ROWS} rows of "
                             f"{path.name} correctly: attribution has nothing to rank")
    receiver, donor = (clean, corrupted) if direction == "corrupted_to_clean" else (corrupted,
                                                                                     clean)
    return (attribution_scores(receiver, donor, batch, "logprob_diff"),
            list(range(total - ATTRIBUTION_ROWS, total)))


@dataclass(frozen=True)
class Choice:
    """A located set of k components of one site, with its controls."""

    site: str
    k: int
    source: str
    located: list[Ranked]
    lowest: list[Ranked]
    random: dict[str, list[str]]
    pool: int  # components of this kind in the model

    @property
    def name(self) -> str:
        return f"{self.site}-k{self.k}"


def check_sizes(site: str, k: int, ranked: int, pool: int, source: str) -> None:
    """Raise unless a top ``k`` and its controls fit: ``ranked`` components scored by the
    ``source``, ``pool`` components of the site's kind in the model."""
    kind = SITES[site].weights
    if type(k) is not int or k < 1:
        raise SelectionError(f"site {site}: k={k!r}, expected an integer >= 1")
    if k > ranked:
        raise SelectionError(f"site {site}: k={k} is larger than the {ranked} components "
                             f"the {source} ranked")
    if 2 * k > ranked:
        raise SelectionError(f"site {site}: k={k}: the {k} ranked lowest would overlap the {k} "
                             f"located ({ranked} ranked by the {source})")
    if k > pool - k:
        raise SelectionError(f"site {site}: k={k} leaves only {pool - k} other {kind} "
                             "components to draw random controls from")


def choose(ranking: list[Ranked], site: str, k: int, source: str, config: Any,
           seeds: list[int]) -> Choice:
    """The top ``k`` of ``ranking``, the ``k`` ranked lowest, and one random draw of ``k``
    per seed among the other components of the same kind in a model with ``config``."""
    kind = SITES[site].weights
    located = ranking[:k]
    chosen = {r.component for r in located}
    rest = [str(c) for c in components_of(kind, config) if str(c) not in chosen]
    check_sizes(site, k, len(ranking), len(rest) + len(chosen), source)
    draws = {str(seed): sorted(random.Random(f"{seed}:{site}:{k}").sample(rest, k),
                               key=lambda n: Component.parse(n).sort_key()) for seed in seeds}
    return Choice(site, k, source, located, ranking[-k:], draws, len(rest) + k)


def content_print(path: str, base: str | None = None) -> str:
    """A model's fingerprint from its files alone (and its base's, for an adapter), so a
    moved or copied model keeps it (``leaderboard.variants.fingerprint``)."""
    files = {"files": fingerprint(Path(path)), "base": fingerprint(Path(base)) if base else {}}
    return digest_prints(files)


def model_ids(clean: tuple[str, str], corrupted: tuple[str, str, str]) -> dict[str, Any]:
    """The pair a selection belongs to: (path, fingerprint) of the clean model and (label,
    path, fingerprint) of the corrupted one; only the fingerprints must match."""
    return {"clean": {"path": clean[0], "print": clean[1]},
            "corrupted": {"label": corrupted[0], "path": corrupted[1], "print": corrupted[2]}}


def write_selection(path: Path, pair: dict[str, Any], direction: str, metric: str,
                    choices: list[Choice], used_items: dict[str, list[int]],
                    evidence: dict[str, str]) -> Path:
    """The selection file (JSON, written atomically): the model pair, how components were
    ranked (``evidence``: source -> results folder or rows), every choice with its reasons."""
    record = {"version": VERSION, **pair, "direction": direction, "metric": metric,
              "evidence": evidence, "used_items": used_items,
              "choices": [asdict(c) for c in choices]}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def read_selection(path: Path, pair: dict[str, Any]) -> tuple[dict[str, Any], list[Choice]]:
    """A selection file, refused (one line) unless it was made for this model pair."""
    try:
        record = json.loads(path.read_text())
        choices = [Choice(**{**c, "located": [Ranked(**r) for r in c["located"]],
                             "lowest": [Ranked(**r) for r in c["lowest"]]})
                   for c in record["choices"]]
        made_for = {key: record[key] for key in ("clean", "corrupted")}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SelectionError(f"{path}: not a selection file ({err!r})") from None
    if [made_for[k]["print"] for k in made_for] != [pair[k]["print"] for k in made_for]:
        have, want = made_for["corrupted"], pair["corrupted"]
        raise SelectionError(
            f"{path} was made for clean {made_for['clean']['path']} and corrupted "
            f"{have['label']} {have['path']} (fingerprints {made_for['clean']['print']}, "
            f"{have['print']}), not clean {pair['clean']['path']} and corrupted "
            f"{want['label']} {want['path']} ({pair['clean']['print']}, {want['print']})")
    return record, choices
