"""The numbers of the leaderboard page, as rows of strings (the page only lays them out).

Every metric cell is formatted straight from the value lm-eval wrote (``fmt``), so a test can
check the page against the results files cell by cell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from patching import SITE_NAMES

from .agreement import Agreement, agreement, verdict_agreement
from .metric import DEFAULT_METRIC, task_metric
from .results import Run
from .variants import DIRECTION_SHORT

RELATED, UNRELATED, GENERAL = "corrupt_related", "corrupt_unrelated_math", "corrupt_general"
THRESHOLD = 0.5
SITE_ORDER = {site: i for i, site in enumerate(SITE_NAMES)}
BY_CONSTRUCTION = "†"
AGREEMENT_HEADERS = ["=clean reply", "=clean int", "=corrupted reply", "=corrupted int"]


def fmt(value: float | None, stderr: float | None = None) -> str:
    """``0.500 ± 0.289``; the value alone when lm-eval computed no standard error."""
    if value is None:
        return "n/a"
    return f"{value:.3f}" if stderr is None else f"{value:.3f} ± {stderr:.3f}"


def fmt_agreement(value: Agreement | None, integer: bool) -> str:
    if value is None:
        return "n/a"
    return f"{value.integer if integer else value.reply:.2f}"


def row_name(run: Run) -> str:
    """A baseline's name; a patch as its spec text and direction (`mlp:L4@all into_clean`)."""
    name = run.name
    if run.role == "patch" and run.spec is not None:
        name = f"{run.spec} {DIRECTION_SHORT.get(run.direction or '', run.direction)}"
    return f"{name} {BY_CONSTRUCTION}" if run.by_construction else name


def sort_key(run: Run) -> tuple[Any, ...]:
    role = {"clean": 0, "corrupted": 1, "patch": 2}[run.role]
    return (role, run.label or "", run.direction or "", run.positions or "",
            SITE_ORDER.get(run.site or "", 9), run.layers, run.heads or ())


def section(runs: list[Run], label: str) -> list[Run]:
    """Clean, the corrupted model ``label`` and its patch variants, in reading order."""
    return sorted((r for r in runs if r.role == "clean" or r.label == label), key=sort_key)


def baselines(runs: list[Run], label: str) -> tuple[Run, Run | None]:
    clean = next(r for r in runs if r.role == "clean")
    corrupted = next((r for r in runs if r.role == "corrupted" and r.label == label), None)
    return clean, corrupted


def tasks_of(runs: list[Run]) -> list[str]:
    """Tasks in first-seen order across runs."""
    return list(dict.fromkeys(t for r in runs for t in r.metrics))


def agreements(run: Run, clean: Run, corrupted: Run | None, tasks: list[str],
               metric: str = DEFAULT_METRIC) -> list[str]:
    """The four agreement cells of ``run`` over ``tasks``."""
    with_clean = agreement(run, clean, tasks, metric)
    with_corr = agreement(run, corrupted, tasks, metric) if corrupted else None
    return [fmt_agreement(with_clean, False), fmt_agreement(with_clean, True),
            fmt_agreement(with_corr, False), fmt_agreement(with_corr, True)]


def headline(run: Run, task: str, metric: str = DEFAULT_METRIC) -> str:
    """The metric a table shows for ``task``: the chosen one (``leaderboard.metric``), else
    the task's first (multiple choice: ``acc``)."""
    names = list(run.metrics.get(task) or {"n/a": None})
    return task_metric(metric, task, names) or names[0]


def table2(runs: list[Run], label: str,
           metric: str = DEFAULT_METRIC) -> tuple[list[str], list[list[str]]]:
    """The study's Table 2: one row per variant, each task's headline metric, pooled
    agreement."""
    rows_runs = section(runs, label)
    clean, corrupted = baselines(runs, label)
    tasks = tasks_of(rows_runs)
    shown = {t: headline(clean, t, metric) for t in tasks}
    headers = ["variant", *[f"{t} {shown[t]}" for t in tasks], *AGREEMENT_HEADERS]
    rows = []
    for run in rows_runs:
        cells = [fmt(*run.metrics.get(t, {}).get(shown[t], (None, None))) for t in tasks]
        rows.append([row_name(run), *cells, *agreements(run, clean, corrupted, tasks, metric)])
    return headers, rows


def task_table(runs: list[Run], label: str, task: str,
               metric: str = DEFAULT_METRIC) -> tuple[list[str], list[list[str]]]:
    """Every metric of one task with its standard error, plus agreement on that task."""
    rows_runs = [r for r in section(runs, label) if task in r.metrics]
    clean, corrupted = baselines(runs, label)
    metrics = list(dict.fromkeys(m for r in rows_runs for m in r.metrics[task]))
    rows = [[row_name(r), *[fmt(*r.metrics[task].get(m, (None, None))) for m in metrics],
             *agreements(r, clean, corrupted, [task], metric)] for r in rows_runs]
    return ["variant", *metrics, *AGREEMENT_HEADERS], rows


def layer_ranges(layers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'; [] -> 'none'."""
    if not layers:
        return "none"
    spans: list[list[int]] = []
    for layer in sorted(layers):
        if spans and layer == spans[-1][1] + 1:
            spans[-1][1] = layer
        else:
            spans.append([layer, layer])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def where(run: Run) -> str:
    """``L3`` or, for a head patch, ``L3.H0``; a patch of several sites as its spec text."""
    if run.site is None and run.spec is not None:
        return run.spec
    return "L" + "_".join(map(str, run.layers)) + (f".H{run.heads[0]}" if run.heads else "")


def _changed(runs: list[Run], task: str, measure: Callable[[Run], float | None]) -> str:
    if not any(task in r.metrics for r in runs):
        return "n/a (task not run)"
    changed = [r for r in runs if (m := measure(r)) is not None and m < THRESHOLD]
    if any(r.heads for r in runs):
        return ", ".join(where(r) for r in changed) or "none"
    return layer_ranges([r.single_layer for r in changed if r.single_layer is not None])


def general_measure(clean: Run, metric: str = DEFAULT_METRIC) -> Callable[[Run], float | None]:
    """How much a run's general behaviour equals the clean model's: the same reply text under
    ``strict``; under ``answer_match`` the same per-item answer_match verdict (read with the
    strict measure when the results have no answer_match)."""
    names = list(clean.metrics.get(GENERAL) or {})
    if metric == "answer_match" and task_metric(metric, GENERAL, names) == "answer_match":
        return lambda run: verdict_agreement(run, clean, GENERAL, "answer_match")
    return lambda run: a.reply if (a := agreement(run, clean, [GENERAL], metric)) else None


def integer_measure(other: Run, task: str,
                    metric: str = DEFAULT_METRIC) -> Callable[[Run], float | None]:
    """Final-integer agreement of a run with ``other`` on ``task``."""
    return lambda run: a.integer if (a := agreement(run, other, [task], metric)) else None


def where_rows(runs: list[Run], label: str,
               metric: str = DEFAULT_METRIC) -> tuple[list[str], list[list[str]]]:
    """Per site/direction/positions: first layer whose related-math final integers agree with
    the corrupted model's on >= half the items; layers where unrelated math (final integer) or
    general behaviour (``general_measure``) differ from the clean model's on more than half."""
    clean, corrupted = baselines(runs, label)
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in section(runs, label):
        if run.single_layer is not None and (run.heads is None or len(run.heads) == 1):
            key = (run.site or "", run.direction or "", run.positions or "")
            groups.setdefault(key, []).append(run)
    headers = ["site", "direction", "positions", "first layer: related = corrupted",
               "unrelated math changes at", "general changes at"]
    rows = []
    for (site, direction, positions), group in groups.items():
        first = "n/a (no corrupted baseline or related task)"
        if corrupted is not None and RELATED in corrupted.metrics:
            hits = [(r, a) for r in group if (a := agreement(r, corrupted, [RELATED], metric))
                    and a.integer >= THRESHOLD]
            first = "none"
            if hits:
                run, a = hits[0]
                first = f"{where(run)} ({a.integer:.2f})"
                if run.by_construction:
                    first += f" {BY_CONSTRUCTION} last layer: by construction, not a finding"
        rows.append([site, direction, positions, first,
                     _changed(group, UNRELATED, integer_measure(clean, UNRELATED, metric)),
                     _changed(group, GENERAL, general_measure(clean, metric))])
    return headers, rows


def _cell_text(text: str, width: int = 80) -> str:
    text = text.strip().replace("|", "\\|").replace("\r", "").replace("\n", "⏎")
    if not text:
        return "(empty)"
    return text if len(text) <= width else text[: width - 1] + "…"


def examples(runs: list[Run], label: str, task: str) -> tuple[str, list[list[str]]] | None:
    """The first item every baseline answered: its question and each variant's reply
    (baselines and one-layer, whole-component patches, layer by layer)."""
    clean, corrupted = baselines(runs, label)
    shown = [r for r in section(runs, label) if task in r.output_types
             and (r.role != "patch" or (r.single_layer is not None and r.heads is None))]
    if clean not in shown:
        return None
    common = set(clean.replies(task))
    if corrupted is not None and corrupted in shown:
        common &= set(corrupted.replies(task))
    if not common:
        return None
    doc_id = min(common)
    doc = next(s["doc"] for s in clean.samples(task) if s["doc_id"] == doc_id)
    question = str(doc.get("question", doc)) if isinstance(doc, dict) else str(doc)
    rows = [[row_name(r), _cell_text(r.replies(task).get(doc_id, "(not run)"))] for r in shown]
    return _cell_text(question, 200), rows
