"""The repair measures, from a folder of lm-eval runs of repaired models and their baselines.

Each folder under ``results/`` is one scored model; its results record says what it is
(``role``: clean, corrupted or repair; for a repaired model its method, site, k, control,
components and parameters touched). Everything in ``repair.json`` is computed here from those
files (``repair_measures``), and ``repair_section`` renders it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from leaderboard.metric import task_metric
from leaderboard.results import LeaderboardError, Run, read_run
from leaderboard.store import latest_results
from leaderboard.tables import RELATED
from patching.components import Selection, parameters_touched

from .measures import Change, Interval, Paired, change

REPORT = "repair.json"
MC_METRIC = "acc"


@lru_cache(maxsize=4)
def skeleton(model: str) -> Any:
    """A model's modules and parameter shapes on the meta device (no weights, no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))


def touched(model: str, selection: Selection | None) -> tuple[int, int]:
    """(parameters the selection changes, all parameters); None: every one (full retrain)."""
    if selection is None:
        total = parameters_touched(skeleton(model), Selection())[1]
        return total, total
    return parameters_touched(skeleton(model), selection)


def load(results_dir: Path) -> list[Run]:
    """Every scored model under ``results_dir`` (newest results file per folder)."""
    folders = sorted(p for p in Path(results_dir).iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    runs = [read_run(path, folder.name) for folder in folders
            if (path := latest_results(folder)) is not None]
    if not runs:
        raise LeaderboardError(f"{results_dir}: no repair results")
    return runs


def metric_names(run: Run, choice: str) -> dict[str, str]:
    """Task -> the metric read: the chosen correctness metric, or accuracy for multiple choice."""
    out = {}
    for task, values in run.metrics.items():
        name = task_metric(choice, task, values) or (MC_METRIC if MC_METRIC in values else None)
        if name:
            out[task] = name
    return out


def _suite(run: Run, names: dict[str, str]) -> dict[str, list[float | None]]:
    return {task: list(run.metrics[task].get(name, (None, None))) for task, name in names.items()}


def _interval(item: Interval) -> dict[str, Any]:
    return {"value": item.value, "low": item.low, "high": item.high, "items": item.items}


def _change(item: Change | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"delta": item.delta, "stderr": item.stderr, "items": item.items, "flag": item.flag}


def _verdict(item: Interval) -> str:
    if item.low is None or item.high is None:
        return "undefined"
    return "better" if item.low > 0 else "worse" if item.high < 0 else "not distinguishable"


def _contrasts(paired: Paired, repaired: list[Run]) -> list[dict[str, Any]]:
    """Located against its controls: the random draws (their mean), the lowest ranked, and
    for retraining the full model."""
    info = {run.name: run.identity for run in repaired}
    out = []
    for name, r in info.items():
        if r.get("control") != "located":
            continue
        group = {n: i for n, i in info.items() if i["method"] == r["method"]}
        same = {n: i for n, i in group.items()
                if (i.get("site"), i.get("k")) == (r.get("site"), r.get("k"))}
        against = {
            "random": [n for n, i in same.items() if i.get("control") == "random"],
            "lowest": [n for n, i in same.items() if i.get("control") == "lowest"],
            "full": [n for n, i in group.items() if i.get("control") == "full"],
        }
        for kind, controls in against.items():
            if controls:
                item = paired.contrast(name, controls)
                out.append({"located": name, "method": r["method"], "site": r["site"],
                            "k": r["k"], "against": kind, "controls": controls,
                            **_interval(item), "verdict": _verdict(item)})
    return out


def measure(runs: list[Run], choice: str, resamples: int = 2000,
            order: list[str] | None = None) -> dict[str, Any]:
    """Per corrupted model (in ``order``, else as found): baselines, one row per repaired
    model, the contrasts, and the restore sweep (``alone``: each component restored by
    itself, its recovery on the same related-math items)."""
    found = list(dict.fromkeys(r.label for r in runs if r.role in ("repair", "restore")))
    labels = [label for label in order or found if label in found]
    out: dict[str, Any] = {"metric": choice, "labels": {}}
    for label in labels:
        mine = [r for r in runs if r.label == label]
        clean = next((r for r in mine if r.role == "clean"), None)
        corrupted = next((r for r in mine if r.role == "corrupted"), None)
        if clean is None or corrupted is None:
            raise LeaderboardError(f"repair results of {label!r} lack the clean or the "
                                   "corrupted baseline")
        repaired = [r for r in mine if r.role == "repair"]
        names = metric_names(clean, choice)
        paired = Paired(clean, corrupted, repaired, RELATED, names[RELATED], resamples)
        rows = []
        for run in repaired:
            info = run.identity
            rows.append({
                "name": run.name, **{k: info.get(k) for k in ("method", "site", "k", "control",
                                                                "seed", "components")},
                "touched": info["touched"], "total": info["total"],
                "share": info["touched"] / info["total"],
                "training": run.record.get("training"),
                "suite": _suite(run, names),
                "recovery": _interval(paired.recovery(run.name)),
                "collateral": {task: _change(change(corrupted, run, task, name))
                               for task, name in names.items() if task != RELATED},
                "results_file": str(run.results_file)})
        alone = [r for r in mine if r.role == "restore"]
        sweep = Paired(clean, corrupted, alone, RELATED, names[RELATED], resamples)
        out["labels"][label] = {
            "metrics": names, "clean": _suite(clean, names), "corrupted": _suite(corrupted, names),
            "related_items": len(paired.docs), "rows": rows,
            "contrasts": _contrasts(paired, repaired),
            "direction": repaired[0].identity.get("direction") if repaired else None,
            "alone": [{"component": r.identity["component"], "touched": r.identity["touched"],
                       "total": r.identity["total"], "recovery": _interval(sweep.recovery(r.name)),
                       "results_file": str(r.results_file)} for r in alone]}
    return out
