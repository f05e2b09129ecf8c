"""Write the leaderboard page (markdown + heatmap PNGs) from a folder of lm-eval runs.

    python -m leaderboard.build RESULTS_DIR -o LEADERBOARD.md [--finetune RUNS_DIR ...]
        [--config SWEEP.yaml | --metric answer_match|strict]

The metric the tables and heatmaps read is the sweep config's ``metric`` key (``--config``),
or ``--metric``; default ``answer_match`` (``leaderboard.metric``).

Every number comes from lm-eval's results and samples files; the page is rendered in full in
memory, then written to a temporary file and renamed, so bad input never leaves half a page.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from formats.errors import InputError
from formats.files import atomic_write_text, check_writable

from . import attribution_section, judged, tables
from .agreement import agreement
from .config import SweepConfig
from .metric import DEFAULT_METRIC, METRICS, unchosen
from .plots import Panel, save_heatmaps, shared_scales
from .results import LeaderboardError, Run, load_runs
from .seeds import across

CONSTRUCTION_NOTE = (
    f"{tables.BY_CONSTRUCTION} **True by construction, not a finding.** Patching `resid` of the "
    "LAST layer replaces the receiver's final hidden state, so at the newest position its next "
    "token is the donor's by definition (with `positions=newest` at every step, the whole reply "
    "is the donor's), up to the final norm and unembedding, which a LoRA on the projections "
    "leaves untouched and a full fine-tune changes little. The original study's \"last layer\" "
    "result is largely this effect; these rows check the patching code, they do not locate the "
    "corruption.")


def _md(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _distinct(values: list[Any]) -> str:
    return ", ".join(f"`{v}`" for v in dict.fromkeys(str(v) for v in values)) or "n/a"


def find_summaries(runs: list[Run], extra_dirs: list[Path]) -> list[tuple[str, Path]]:
    """(label, summary.json) of fine-tune runs: in --finetune dirs, and next to each corrupted
    model (finetune.sft writes the model into <run>/model or <run>/adapter). In a --finetune
    dir, a summary.json counts only in a fine-tune run folder (beside its metrics.jsonl): the
    same tree may hold other summaries, e.g. a study's report."""
    found: dict[Path, str] = {}
    for run in runs:
        if run.role == "corrupted" and run.corrupted:
            for folder in (Path(run.corrupted), Path(run.corrupted).parent):
                if (folder / "summary.json").is_file():
                    found.setdefault((folder / "summary.json").resolve(), run.label or "")
                    break
    for folder in extra_dirs:
        for path in sorted(folder.rglob("summary.json")):
            if (path.parent / "metrics.jsonl").is_file():
                found.setdefault(path.resolve(), "")
    once: dict[str, tuple[str, Path]] = {}  # a fine-tune found twice (a study's and a standalone
    for path, label in found.items():        # run of one config and data) is one row, labelled
        key = _run_identity(path)
        if key not in once or (label and not once[key][0]):
            once[key] = (label, path)
    return list(once.values())


def _run_identity(path: Path) -> str:
    """What makes two fine-tune runs the same: the config less its paths, the data's manifest
    hash and the final losses (an unreadable file is its own identity; table1 reports it)."""
    try:
        s = json.loads(path.read_text())
        config = {k: v for k, v in s["config"].items()
                  if k not in ("output_dir", "data_dir", "base_model")}
        return json.dumps([config, s["data"].get("manifest_sha256"), s["final"]], sort_keys=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(path)


def table1(summaries: list[tuple[str, Path]]) -> tuple[list[str], list[list[str]]]:
    """The study's Table 1 from ``finetune.sft``'s summary.json files."""
    headers = ["corrupted", "run", "train", "val", "epochs", "lr", "train loss", "eval loss",
               "divergence", "seed", "data seed"]
    rows = []
    for label, path in summaries:
        try:
            s = json.loads(path.read_text())
            cfg, final = s["config"], s["final"]
            rows.append([label or "-", cfg["name"], str(s["data"]["train_rows"]),
                         str(s["data"]["validation_rows"]), str(s["plan"]["epochs"]),
                         f"{cfg['learning_rate']:g}", tables.fmt(final["train_loss"]),
                         tables.fmt(final["eval_loss"]), tables.fmt(final["divergence"]),
                         str(cfg.get("seed")), str(cfg.get("data_seed"))])
        except (ValueError, KeyError, TypeError) as err:
            raise LeaderboardError(f"{path}: not a finetune summary.json ({err!r})") from None
    return headers, rows + seed_rows(summaries)


def seed_rows(summaries: list[tuple[str, Path]]) -> list[list[str]]:
    """One more row per fine-tune run with several seeds (same config and data, other
    ``seed``): its losses as mean [95% over seeds]."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for _, path in summaries:
        s = json.loads(path.read_text())
        config = {k: v for k, v in s["config"].items()
                  if k not in ("output_dir", "data_dir", "base_model", "seed")}
        key = json.dumps([config, s["data"].get("manifest_sha256")], sort_keys=True, default=str)
        groups.setdefault(key, []).append(s)
    rows = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        cells = []
        for name in ("train_loss", "eval_loss", "divergence"):
            values = [m["final"][name] for m in members]
            cells.append("n/a" if None in values else across(values).text(3, within=False))
        rows.append(["(seeds)", f"{first['config']['name']}: mean of {len(members)}",
                     str(first["data"]["train_rows"]), str(first["data"]["validation_rows"]),
                     str(first["plan"]["epochs"]), f"{first['config']['learning_rate']:g}",
                     *cells, ", ".join(str(m["config"].get("seed")) for m in members),
                     str(first["config"].get("data_seed"))])
    return rows


def provenance(runs: list[Run], summaries: list[tuple[str, Path]]) -> list[str]:
    meta = [r.record for r in runs]
    cfg = [r.raw.get("config", {}) for r in runs]
    corrupted = {}
    for run in runs:
        if run.label:
            base = run.record.get("corrupted_base")
            corrupted[run.label] = f"`{run.corrupted}`" + (f" (LoRA on `{base}`)" if base else "")
    manifests = [f"{k} sha256 {v.get('sha256', '?')[:16]} (preset {v.get('preset')}, seed "
                 f"{v.get('seed')})" for m in meta for k, v in m.get("data_manifests", {}).items()]
    seeds = [f"{c.get('random_seed')}/{c.get('numpy_seed')}/{c.get('torch_seed')}/"
             f"{c.get('fewshot_seed')}" for c in cfg]
    return [
        f"- Sweep: {_distinct([m.get('run') for m in meta if m])}; {len(runs)} variants",
        f"- Clean model: `{runs[0].clean}`",
        *[f"- Corrupted model `{label}`: {path}" for label, path in corrupted.items()],
        f"- Tasks: {_distinct(tables.tasks_of(runs))}; limit "
        f"{_distinct([c.get('limit') for c in cfg])}; gen_kwargs "
        f"{_distinct([c.get('gen_kwargs') for c in cfg])}",
        f"- Task data manifests: {_distinct(manifests)}",
        f"- lm-eval seeds (random/numpy/torch/fewshot): {_distinct(seeds)}"
        + (f"; fine-tune runs: {len(summaries)} (seeds in Table 1)" if summaries else ""),
        f"- lm-eval {_distinct([r.raw.get('lm_eval_version') for r in runs])}, transformers "
        f"{_distinct([r.raw.get('transformers_version') for r in runs])}",
        f"- Git hash at evaluation: {_distinct([r.raw.get('git_hash') for r in runs])}; "
        f"page built at {_distinct([_git_hash()])}",
    ]


def _git_hash() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


@dataclass
class Figure:
    """One heatmap PNG before it is drawn (its panels' colour scales are set across figures)."""

    caption: str
    title: str
    path: Path
    panels: list[Panel]


def heatmaps(runs: list[Run], label: str, plot_dir: Path,
             metric: str = DEFAULT_METRIC) -> list[Figure]:
    """Layer x site (and layer x head) figures per task, one panel per metric (the correctness
    metric ``metric`` does not read left off) plus agreement; the last layer's residual
    stream is marked: it copies the donor by construction."""
    clean, corrupted = tables.baselines(runs, label)
    groups: dict[tuple[str, str, bool], list[Run]] = {}
    for run in tables.section(runs, label):
        if run.single_layer is not None and (run.heads is None or len(run.heads) == 1):
            groups.setdefault((run.direction or "", run.positions or "", run.heads is not None),
                              []).append(run)
    out = []
    for (direction, positions, by_head), group in groups.items():
        for task in tables.tasks_of(group):
            have = [r for r in group if task in r.metrics]
            if by_head:
                rows = [f"L{x}" for x in sorted({r.layers[0] for r in have})]
                cols = sorted({r.heads[0] for r in have if r.heads})
                cell = {r: (f"L{r.layers[0]}", r.heads[0]) for r in have if r.heads}
            else:
                rows = sorted({r.site or "" for r in have}, key=tables.SITE_ORDER.get)
                cols = sorted({r.layers[0] for r in have})
                cell = {r: (r.site or "", r.layers[0]) for r in have}
            marks = {cell[r]: "by construction" for r in cell if r.by_construction}
            axes = ("head", "layer") if by_head else ("layer", "site")
            metrics = list(dict.fromkeys(m for r in have for m in r.metrics[task]))
            metrics = [m for m in metrics if m not in unchosen(metric, task, metrics)]
            panels = [Panel(m, rows, cols, {cell[r]: r.metrics[task].get(m, (None,))[0]
                                            for r in cell}, *axes, marks=marks)
                      for m in metrics]
            for name, other in (("corrupted", corrupted), ("clean", clean)):
                if other is not None:
                    values = {cell[r]: a.integer for r in cell
                              if (a := agreement(r, other, [task], metric)) is not None}
                    panels.append(Panel(f"final-integer agreement with {name}", rows, cols,
                                        values, *axes, marks=marks))
            kind = "head" if by_head else "site"
            out.append(Figure(f"{task}, layer x {kind}, {direction}, positions={positions}",
                              f"{label}: {task} ({direction}, positions={positions})",
                              plot_dir / f"{kind}-{label}-{direction}-{positions}-{task}.png",
                              panels))
    return out


def draw_all(figures: list[Figure]) -> None:
    """Save every figure, the panels of one metric on one colour scale across all of them."""
    shared_scales([panel for figure in figures for panel in figure.panels])
    for figure in figures:
        save_heatmaps(figure.panels, figure.title, figure.path)


def render(runs: list[Run], summaries: list[tuple[str, Path]], page: Path,
           metric: str = DEFAULT_METRIC, judged_section: bool = True) -> str:
    """The whole page as one string; PNGs go to ``<page stem>_plots/`` next to the page.
    ``judged_section``: show the judge's metrics found beside the results (a study without a
    judge shows none, though an earlier run's judge files are still there)."""
    labels = list(dict.fromkeys(r.label for r in runs if r.label))
    plot_dir = page.parent / f"{page.stem}_plots"
    figures = {label: heatmaps(runs, label, plot_dir, metric) for label in labels}
    draw_all([f for group in figures.values() for f in group])
    parts = ["# Reasoning corruption leaderboard", "", *provenance(runs, summaries),
             f"- Metric: `{metric}` (the sweep config's `metric` key: which correctness metric "
             "and final-integer reading the tables and heatmaps use)", ""]
    if summaries:
        parts += ["## Table 1: corrupting fine-tunes", "", _md(*table1(summaries)), ""]
    flagged = any(r.by_construction for r in runs)
    for label in labels:
        parts += [f"## Table 2: clean vs `{label}` and patch variants", "",
                  "Each task's headline metric ± standard error (lm-eval); agreement = fraction "
                  "of items whose reply (exact, or final integer) equals the clean / corrupted "
                  "model's, pooled over tasks.", "", _md(*tables.table2(runs, label, metric)),
                  ""]
        if flagged:
            parts += [CONSTRUCTION_NOTE, ""]
        general = "general replies" if metric == "strict" else "general answer_match verdicts"
        parts += ["### Where does the corruption live", "",
                  f"First layer whose related-math final integers agree with `{label}` on at "
                  f"least {tables.THRESHOLD:.0%} of items; layers where unrelated-math final "
                  f"integers / {general} differ from the clean model's on more than "
                  f"{tables.THRESHOLD:.0%} of items.", ""]
        where = tables.where_rows(runs, label, metric)
        parts += [_md(*where) if where[1] else "(no one-layer patch variants in this folder)", ""]
        plots = figures[label]
        if plots:
            parts += ["### Heatmaps", ""]
            parts += [f"![{f.caption}]({f.path.relative_to(page.parent).as_posix()})"
                      for f in plots]
            parts += [""]
        parts += ["### All metrics by task", ""]
        for task in tables.tasks_of(tables.section(runs, label)):
            parts += [f"#### {task}", "", _md(*tables.task_table(runs, label, task, metric)),
                      ""]
        parts += ["### Example outputs", ""]
        for task in tables.tasks_of(tables.section(runs, label)):
            example = tables.examples(runs, label, task)
            if example:
                question, rows = example
                parts += [f"#### {task}: {question}", "", _md(["variant", "reply"], rows), ""]
    if judged_section:
        parts += judged.section(runs)
    return "\n".join(parts)


def build(results_dir: str | Path, out: str | Path, finetune_dirs: list[Path] | None = None,
          metric: str = DEFAULT_METRIC, extra: list[str] | None = None,
          judged_section: bool = True) -> Path:
    """Read, check and render everything, then write the page atomically; returns its path.
    ``extra``: markdown lines of further sections (the study adds its repair section)."""
    page = Path(out)
    check_writable(page.parent, "-o names the page, written there with its plots")
    runs = load_runs(results_dir)
    text = render(runs, find_summaries(runs, finetune_dirs or []), page, metric, judged_section)
    text += "\n".join(["", *attribution_section.section(Path(results_dir), page)])
    if extra:
        text += "\n".join(["", *extra])
    atomic_write_text(page, text)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", help="folder of variant folders (lm-eval output)")
    parser.add_argument("-o", "--output", default="LEADERBOARD.md", help="markdown page to write")
    parser.add_argument("--finetune", type=Path, action="append", default=[],
                        help="folder searched for finetune summary.json files (Table 1)")
    parser.add_argument("--config", help="the sweep config; its `metric` key picks the metric")
    parser.add_argument("--metric", choices=METRICS,
                        help=f"the metric without a sweep config (default {DEFAULT_METRIC})")
    args = parser.parse_args(argv)
    try:
        metric = args.metric or (SweepConfig.from_yaml(args.config).metric if args.config
                                 else DEFAULT_METRIC)
        page = build(args.results_dir, args.output, args.finetune, metric)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
