"""The summary stage's findings: the study's stage outputs read into ``study.findings``, and its
tables, bullets and figures written as ``findings.json`` and ``findings.md``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from formats.files import atomic_write_text
from leaderboard.results import load_runs

from .config import StudyConfig
from .findings import (
    DIRECTION,
    as_record,
    baselines_table,
    bullets,
    condition_table,
    gather,
    localisation_table,
    repair_table,
    where_table,
)
from .findings_plots import localisation_plot, where_heatmap


def _md(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def write_findings(config: StudyConfig, stage_folder: Callable[[str], Path], n_layers: int,
                   folder: Path) -> dict[str, Any]:
    """``findings.json``, ``findings.md`` and the figures in ``folder``, from the outputs in each
    stage's folder (``stage_folder(name)``) of a base model with ``n_layers`` blocks; returns
    what was written."""
    base_runs = load_runs(stage_folder("baselines") / "results")
    sweeps = stage_folder("sweeps") / "results"
    sweep_runs = load_runs(sweeps) if sweeps.is_dir() else None
    weights = (_json(stage_folder("weights") / "weights.json") or {}).get("labels")
    repair = (_json(stage_folder("repair") / "repair.json") or {}).get("labels") \
        if config.repair else None
    seeds = {label: m.seed for label, m in config.models.items()}
    conditions = gather(config.conditions, seeds, base_runs, sweep_runs, weights, repair,
                        config.metric, n_layers)
    figures = []
    for c in conditions:
        if (path := where_heatmap(c, folder / f"where-{c.name}.png")) is not None:
            figures.append(path)
    if (path := localisation_plot(conditions, folder / "localisations.png")) is not None:
        figures.append(path)
    summary = ["## Summary", ""]
    for c in conditions:
        summary += [f"**`{c.name}`**", "", _md(*condition_table(c, config.metric)), ""]
    summary += [f"- {line}" for line in bullets(conditions, config.metric)] + [""]
    detail = ["## Baselines across seeds", "",
              "Mean [95% interval over seeds] ±within-run standard error (lm-eval's, pooled).",
              "", _md(*baselines_table(conditions, config.metric)), ""]
    for c in conditions:
        headers, rows = where_table(c)
        if rows:
            detail += [f"### Where patching flips `{c.name}`'s related math", "",
                       f"Flip rate ({DIRECTION}), mean [95% over seeds] ±within-run s.e.; the "
                       "last layer's resid is left out (by construction).", "",
                       _md(headers, rows), ""]
        headers, rows = repair_table(c)
        if rows:
            detail += [f"### Repair of `{c.name}` across seeds", "", _md(headers, rows), ""]
        headers, rows = localisation_table(c)
        if rows and (c.flips or c.restore):  # weights alone: the summary table names the top
            detail += [f"### Three localisations of `{c.name}`, blocks by layer", "",
                       "Mean over seeds (rank among the layers). Patching scores no last block: "
                       "patching its residual stream copies the donor by construction.", "",
                       _md(headers, rows), ""]
    atomic_write_text(folder / "findings.md", "\n".join([*summary, *detail]) + "\n")
    atomic_write_text(folder / "findings.json", json.dumps(
        {"conditions": as_record(conditions), "summary": summary, "detail": detail,
         "figures": [p.name for p in figures]}, indent=1) + "\n")
    return {"findings": str(folder / "findings.json"), "figures": [str(p) for p in figures]}

