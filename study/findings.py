"""The study's findings per condition, across its fine-tune seeds: what the corruption does,
where activation patching flips it, where the weights moved, what restoring and repairing
recover, and whether those three localisations agree.

Every number comes from a stage's files (baselines and sweeps through lm-eval's results and
samples, ``weights.json``, ``repair.json``) and is reported as ``leaderboard.seeds`` does: the
across-seed mean, a 95% interval over seeds, the within-run standard error, and how many seeds
a finding holds in. "Where patching flips it" reads the patches of the corrupted model's
activations into the clean one (``corrupted_to_clean``, the study's CMAP direction); the last
layer's residual stream is left out of every patching ranking (it copies the donor by
construction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from leaderboard.flips import flip
from leaderboard.metric import describe
from leaderboard.results import Run
from leaderboard.seeds import AcrossSeeds, across, holds_in
from leaderboard.tables import GENERAL, RELATED, SITE_ORDER, UNRELATED
from repair.localise import PAIRS, SITE_OF, Localisation, agreement_sentence, localise
from repair.select import sweep_ranking

from .summary import compare, metric, scored

FAMILIES = ((RELATED, "related math"), (UNRELATED, "unrelated math"), (GENERAL, "general"))
DIRECTION = "corrupted_to_clean"
SITES = ("resid", "attn", "mlp")
FLIPS = 0.5  # a patch "flips it" when it gives the donor's answer on half the differing items
MAX_BULLETS = 5
RATE = (0.0, 1.0)  # scores and flip rates: their across-seed intervals stay in range


@dataclass
class Condition:
    """One condition's numbers across its seeds (model labels in seed order)."""

    name: str
    labels: list[str]
    seeds: list[int | None]
    behaviour: dict[str, AcrossSeeds] = field(default_factory=dict)
    clean: dict[str, tuple[float, float]] = field(default_factory=dict)
    flips: dict[tuple[str, int], AcrossSeeds] = field(default_factory=dict)
    by_construction: set[tuple[str, int]] = field(default_factory=set)
    weights: dict[str, AcrossSeeds] = field(default_factory=dict)
    restore: dict[str, AcrossSeeds] = field(default_factory=dict)
    repair: dict[str, AcrossSeeds] = field(default_factory=dict)
    contrasts: dict[str, AcrossSeeds] = field(default_factory=dict)
    per_seed: dict[str, list[Localisation]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)


def _per_label(values: Mapping[str, Any], labels: list[str]) -> list[Any]:
    return [values[label] for label in labels if label in values]


def behaviour(condition: Condition, runs: list[Run], choice: str) -> None:
    """Each family's score across seeds, and the clean model's."""
    clean = next(r for r in runs if r.role == "clean")
    models = {r.label: r for r in runs if r.role == "corrupted"}
    for task, _ in FAMILIES:
        name = scored(clean, task, choice)
        got = [metric(models[label], task, name) for label in condition.labels
               if label in models]
        if (base := metric(clean, task, name)) is None or not got or None in got:
            continue
        condition.clean[task] = base
        condition.behaviour[task] = across([v for v, _ in got], [se for _, se in got], RATE)


def flip_rates(condition: Condition, runs: list[Run], choice: str) -> None:
    """Flip rate of every one-layer patch of each site, across seeds (by-construction cells
    kept for the heatmap, marked, and left out of every ranking)."""
    clean = next(r for r in runs if r.role == "clean")
    cells: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for label in condition.labels:
        corrupted = next((r for r in runs if r.role == "corrupted" and r.label == label), None)
        if corrupted is None:
            continue
        for run in runs:
            if (run.role != "patch" or run.label != label or run.direction != DIRECTION
                    or run.site not in SITES or run.single_layer is None
                    or run.positions != "newest"):
                continue
            got = flip(run, clean, corrupted, RELATED, choice)
            se = math.sqrt(got.rate * (1 - got.rate) / got.differing) if got.differing else 0.0
            cells.setdefault((run.site, run.single_layer), []).append((got.rate, se))
            if run.by_construction:
                condition.by_construction.add((run.site, run.single_layer))
    condition.flips = {cell: across([r for r, _ in v], [s for _, s in v], RATE)
                       for cell, v in cells.items() if len(v) == condition.n}


def component_scores(condition: Condition, weights: Mapping[str, Any] | None,
                     repair: Mapping[str, Any] | None) -> None:
    """Weight change and restore-sweep recovery of each component, and the located repairs'
    recoveries, across seeds. A recovery's within-run error is its bootstrap interval's
    half-width / 1.96."""
    if weights:
        per = _per_label(weights, condition.labels)
        if len(per) == condition.n:
            condition.weights = {c: across([w[c] for w in per], bounds=(0.0, math.inf))
                                 for c in per[0]}
    if not repair:
        return
    per = _per_label(repair, condition.labels)
    if len(per) != condition.n:
        return

    def agg(items: list[dict[str, Any]]) -> AcrossSeeds | None:
        recs = [i["recovery"] for i in items]
        if any(r["value"] is None for r in recs):
            return None
        return across([r["value"] for r in recs],
                      [(r["high"] - r["low"]) / (2 * 1.96) for r in recs])

    alone = [{a["component"]: a for a in data.get("alone", [])} for data in per]
    for component in alone[0]:
        if all(component in a for a in alone) and (value := agg([a[component] for a in alone])):
            condition.restore[component] = value
    rows = [{_repair_key(r): r for r in data["rows"]} for data in per]
    for key in rows[0]:
        if all(key in r for r in rows) and (value := agg([r[key] for r in rows])):
            condition.repair[key] = value
    contrasts = [{_contrast_key(x): x for x in data["contrasts"]} for data in per]
    for key in contrasts[0]:
        items = [{"recovery": c[key]} for c in contrasts if key in c]
        if len(items) == condition.n and (value := agg(items)):
            condition.contrasts[key] = value


def _contrast_key(item: Mapping[str, Any]) -> str:
    """``restore resid top 1 vs lowest``."""
    return f"{item['method']} {item['site']} top {item['k']} vs {item['against']}"


def _repair_key(row: Mapping[str, Any]) -> str:
    """``restore resid top 1 located``; random draws keep their seed."""
    what = "every weight" if row.get("site") is None else f"{row['site']} top {row['k']}"
    control = row["control"] + (f" {row['seed']}" if row["control"] == "random" else "")
    return f"{row['method']} {what} {control}"


def localisations(condition: Condition, runs: list[Run], weights: Mapping[str, Any] | None,
                  repair: Mapping[str, Any] | None, choice: str, n_layers: int) -> None:
    """Per seed and kind, the three per-layer scores (``repair.localise``)."""
    for label in condition.labels:
        moved = (weights or {}).get(label, {})
        alone = {a["component"]: a["recovery"]["value"]
                 for a in ((repair or {}).get(label) or {}).get("alone", [])}
        for kind, site in SITE_OF.items():
            try:
                ranked = sweep_ranking(runs, label, site, DIRECTION, choice)
            except ValueError:  # no corrupted baseline of this label in the sweep
                ranked = []
            flips = {r.component: r.score for r in ranked}
            condition.per_seed.setdefault(kind, []).append(
                localise(kind, n_layers, flips, moved, alone))


def mean_localisation(condition: Condition, kind: str) -> Localisation | None:
    """The kind's per-layer scores averaged over seeds (None where a seed lacks the layer)."""
    seeds = condition.per_seed.get(kind, [])
    if not seeds:
        return None
    scores = {}
    for method in seeds[0].scores:
        columns = zip(*(loc.scores[method] for loc in seeds), strict=True)
        scores[method] = tuple(None if None in col else sum(col) / len(col) for col in columns)
    return Localisation(kind, seeds[0].layers, scores)


def rho_across(condition: Condition, kind: str, a: str, b: str) -> AcrossSeeds | None:
    """Spearman's rho of two methods, per seed, across seeds (None if any seed lacks one)."""
    values = [loc.rho(a, b) for loc in condition.per_seed.get(kind, [])]
    return across([v for v in values if v is not None], bounds=(-1.0, 1.0)) \
        if values and None not in values else None


def gather(conditions: Mapping[str, list[str]], seeds: Mapping[str, int | None],
           base_runs: list[Run], sweep_runs: list[Run] | None,
           weights: Mapping[str, Any] | None, repair: Mapping[str, Any] | None, choice: str,
           n_layers: int) -> list[Condition]:
    """Every condition's numbers, in study order (conditions without a scored model left out)."""
    out = []
    found = {r.label for r in base_runs if r.role == "corrupted"}
    for name, labels in conditions.items():
        mine = [label for label in labels if label in found]
        if not mine:
            continue
        condition = Condition(name, mine, [seeds.get(label) for label in mine])
        behaviour(condition, base_runs, choice)
        # Flip rates are read on related math; a sweep that did not score it (the CoT study's,
        # read by its own report section) locates nothing here.
        swept = sweep_runs is not None and any(
            r.label in mine and r.role == "corrupted" and RELATED in r.metrics for r in sweep_runs)
        if swept:
            flip_rates(condition, sweep_runs, choice)  # type: ignore[arg-type]
        component_scores(condition, weights, repair)
        if swept or weights or repair:
            localisations(condition, sweep_runs or [], weights, repair, choice, n_layers)
        out.append(condition)
    return out


# ------------------------------------------------------------------ the words and the tables


def _falls(agg: AcrossSeeds, clean: tuple[float, float]) -> int:
    """-1 / 0 / +1 against the clean model: over several seeds, the interval over seeds must
    clear the clean score; from one seed, two standard errors of the difference."""
    if agg.interval is None:
        return compare(clean, (agg.mean, agg.within or 0.0))
    low, high = agg.interval
    return -1 if high < clean[0] else 1 if low > clean[0] else 0


def _where(cell: tuple[str, int]) -> str:
    return f"{cell[0]} L{cell[1]}"


def top_flip(condition: Condition) -> tuple[tuple[str, int], AcrossSeeds] | None:
    ranked = [(c, a) for c, a in condition.flips.items() if c not in condition.by_construction]
    if not ranked:
        return None
    return max(ranked, key=lambda ca: (ca[1].mean, -SITE_ORDER.get(ca[0][0], 9), -ca[0][1]))


def top_of(scores: Mapping[str, AcrossSeeds], kind: str = "block"
           ) -> tuple[str, AcrossSeeds] | None:
    items = [(c, a) for c, a in scores.items() if c.startswith(f"{kind}:")]
    return max(items, key=lambda ca: ca[1].mean) if items else None


def _seed_tops(condition: Condition, method: str, kind: str = "block") -> list[int | None]:
    return [loc.top(method) for loc in condition.per_seed.get(kind, [])]


def condition_table(c: Condition, choice: str) -> tuple[list[str], list[list[str]]]:
    """The compact table of one condition: behaviour, where patching flips it, where the
    weights moved, what restoring alone and the located repairs recover, and agreement."""
    rows = []
    for task, words in FAMILIES:
        if task in c.behaviour:
            base = c.clean[task]
            rows.append([f"{words} ({describe(choice)}; clean {base[0]:.2f})",
                         c.behaviour[task].text(), str(c.n)])
    if (best := top_flip(c)) is not None:
        cell, agg = best
        rows.append([f"patching flips related math most: {_where(cell)}, {DIRECTION}",
                     agg.text(), f"≥ {FLIPS} in " + holds_in(agg.holds(lambda v: v >= FLIPS),
                                                           c.n)])
    if (moved := top_of(c.weights)) is not None:
        name, agg = moved
        same = sum(t == int(name.split("L")[1]) for t in _seed_tops(c, "weights"))
        rows.append([f"weights moved most: {name} (‖ΔW‖/‖W‖)", agg.text(3),
                     f"top in {holds_in(same, c.n)}"])
    if (helps := top_of(c.restore)) is not None:
        name, agg = helps
        same = sum(t == int(name.split("L")[1]) for t in _seed_tops(c, "restore"))
        rows.append([f"restoring alone helps most: {name} (recovery)", agg.text(),
                     f"top in {holds_in(same, c.n)}"])
    for method in ("restore", "retrain"):  # the best repair of the located components
        located = [(k, a) for k, a in c.repair.items()
                   if k.startswith(method) and k.endswith(" located")]
        if located:
            key, agg = max(located, key=lambda ka: ka[1].mean)
            rows.append([f"{method} located {key[len(method) + 1:-8]}: best repair (recovery)",
                         agg.text(), str(c.n)])
    rhos = [(a, b, r) for a, b in PAIRS if (r := rho_across(c, "block", a, b)) is not None]
    if rhos:
        rows.append(["agreement over blocks (Spearman rho): " + ", ".join(
            f"{a}–{b}" for a, b, _ in rhos), "; ".join(r.text(within=False) for *_, r in rhos),
            str(c.n)])
    return ["measure", "value: mean [95% over seeds] ±within-run s.e.", "seeds"], rows


def bullets(conditions: list[Condition], choice: str) -> list[str]:
    """At most ``MAX_BULLETS`` findings, one sentence each with its figure: for each localised
    condition its behaviour and whether its localisations agree, then the best repair of the
    located components against its lowest-ranked control, then the other conditions."""
    localised = [c for c in conditions if mean_localisation(c, "block") is not None
                 and (c.flips or c.restore)]
    first = [line for c in localised for line in (_behaviour(c), _agreement(c)) if line]
    repair = next((line for c in localised if (line := _repair(c))), None)
    rest = [line for c in conditions if c not in localised and (line := _behaviour(c))]
    return [*first, *([repair] if repair else []), *rest][:MAX_BULLETS]


def _behaviour(c: Condition) -> str | None:
    if RELATED not in c.behaviour:
        return None
    seeds = f"{c.n} seed{'s' if c.n != 1 else ''}"
    rel, base = c.behaviour[RELATED], c.clean[RELATED]
    others = [(w, c.behaviour[t], _falls(c.behaviour[t], c.clean[t]))
              for t, w in FAMILIES[1:] if t in c.behaviour]
    verb = {-1: "falls to", 0: "stays at", 1: "rises to"}[_falls(rel, base)]
    tail = ", ".join(f"{w} {'falls to' if v == -1 else 'holds at'} {a.mean:.2f}"
                     for w, a, v in others)
    return (f"`{c.name}` ({seeds}): related math {verb} {rel.text()} from the clean model's "
            f"{base[0]:.2f}" + (f", while {tail}" if tail else "") + ".")


def _agreement(c: Condition) -> str | None:
    loc = mean_localisation(c, "block")
    if loc is None:
        return None
    tops = {m: loc.top(m) for m in loc.scores}
    text = agreement_sentence(tops, len(loc.layers), "block")
    held = [f"{sum(t == tops[m] for t in _seed_tops(c, m))}/{c.n}"
            for m in loc.scores if tops[m] is not None]
    extra = [f"these top layers hold in {', '.join(held)} seeds"] if held else []
    if (rho := rho_across(c, "block", "patching", "restore")) is not None:
        extra.append(f"Spearman rho of patching and restoring {rho.text()}")
    if extra:
        text = text[:-1] + f" ({'; '.join(extra)})."
    return f"`{c.name}`: " + text[0].lower() + text[1:]


def _repair(c: Condition) -> str | None:
    located = [(k, a) for k, a in c.repair.items() if k.endswith(" located")]
    if not located:
        return None
    key, agg = max(located, key=lambda ka: ka[1].mean)
    what = key[:-len(" located")]
    text = (f"`{c.name}`: the best repair of the located components, {what}, recovers "
            f"{agg.text()} of related math")
    if (lowest := c.repair.get(f"{what} lowest")) is not None:
        text += f", its lowest-ranked control {lowest.text()}"
    return text + "."


def baselines_table(conditions: list[Condition], choice: str
                    ) -> tuple[list[str], list[list[str]]]:
    """Each family per condition across seeds, beside the clean model."""
    tasks = [(t, w) for t, w in FAMILIES if any(t in c.behaviour for c in conditions)]
    headers = ["model", "seeds", *[f"{w} ({describe(choice)})" for _, w in tasks]]
    rows = []
    if conditions:
        first = conditions[0]
        rows.append(["clean", "", *[f"{first.clean[t][0]:.3f} ±{first.clean[t][1]:.3f}"
                                    if t in first.clean else "" for t, _ in tasks]])
    for c in conditions:
        rows.append([c.name, ", ".join("-" if s is None else str(s) for s in c.seeds),
                     *[c.behaviour[t].text(3) if t in c.behaviour else "" for t, _ in tasks]])
    return headers, rows


def where_table(c: Condition) -> tuple[list[str], list[list[str]]]:
    """Per site, the layer whose patch flips related math most (mean over seeds), its rate and
    in how many seeds it reaches ``FLIPS``; by-construction cells left out."""
    headers = ["site", "layer flipping most", "flip rate", f"seeds ≥ {FLIPS}",
               f"layers ≥ {FLIPS} (mean)"]
    rows = []
    for site in SITES:
        cells = {layer: a for (s, layer), a in c.flips.items()
                 if s == site and (s, layer) not in c.by_construction}
        if not cells:
            continue
        layer, agg = max(cells.items(), key=lambda la: (la[1].mean, -la[0]))
        over = [f"L{x}" for x, a in sorted(cells.items()) if a.mean >= FLIPS]
        rows.append([site, f"L{layer}", agg.text(),
                     holds_in(agg.holds(lambda v: v >= FLIPS), c.n), ", ".join(over) or "none"])
    return headers, rows


def repair_table(c: Condition) -> tuple[list[str], list[list[str]]]:
    """Every repair's recovery, then every contrast of located against a control, across
    seeds (within-run error: the bootstrap interval's half-width / 1.96)."""
    rows = [["recovery", key, agg.text()] for key, agg in c.repair.items()]
    rows += [["located minus control", key, agg.text()] for key, agg in c.contrasts.items()]
    return ["measure", "repair", "mean [95% over seeds] ±within"], rows


def localisation_table(c: Condition, kind: str = "block") -> tuple[list[str], list[list[str]]]:
    """The three rankings side by side: per layer, each method's mean score and its rank."""
    loc = mean_localisation(c, kind)
    if loc is None:
        return [], []
    headers = ["layer", "patching flip rate", "weight change", "restore recovery"]
    ranks = {m: _ranks(loc.scores[m]) for m in loc.scores}
    rows = []
    for i, layer in enumerate(loc.layers):
        cells = []
        for method, digits in (("patching", 2), ("weights", 4), ("restore", 2)):
            value = loc.scores[method][i]
            cells.append("" if value is None else f"{value:.{digits}f} (#{ranks[method][i]})")
        rows.append([f"L{layer}", *cells])
    return headers, rows


def _ranks(values: tuple[float | None, ...]) -> list[int | None]:
    """1 for the highest value (ties share the better rank), None where unscored."""
    scored_values = sorted({v for v in values if v is not None}, reverse=True)
    return [None if v is None else 1 + sum(s > v for s in scored_values) for v in values]


def as_record(conditions: list[Condition]) -> dict[str, Any]:
    """Every number above, for ``findings.json``."""

    def agg(a: AcrossSeeds) -> dict[str, Any]:
        low, high = a.interval or (None, None)
        return {"values": list(a.values), "mean": a.mean, "low": low, "high": high,
                "within": a.within, "seeds": a.n}

    out = {}
    for c in conditions:
        out[c.name] = {
            "labels": c.labels, "seeds": c.seeds,
            "behaviour": {t: agg(a) for t, a in c.behaviour.items()},
            "clean": {t: list(v) for t, v in c.clean.items()},
            "flips": {_where(k): agg(a) for k, a in c.flips.items()},
            "by_construction": sorted(_where(k) for k in c.by_construction),
            "weights": {k: agg(a) for k, a in c.weights.items()},
            "restore": {k: agg(a) for k, a in c.restore.items()},
            "repair": {k: agg(a) for k, a in c.repair.items()},
            "contrasts": {k: agg(a) for k, a in c.contrasts.items()},
            "rho": {f"{kind} {a} vs {b}": agg(r) for kind in c.per_seed for a, b in PAIRS
                    if (r := rho_across(c, kind, a, b)) is not None},
        }
    return out
