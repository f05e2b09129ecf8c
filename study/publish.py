"""The study report: stage timings and memory, the key table, the heatmap and the summary.

Everything a reader sees is regenerated from the stage records and the summary's numbers on
every complete run: ``<work_dir>/report/REPORT.md`` (with the leaderboard pages and their
plots beside it), optionally copied to ``report.publish_dir`` (e.g. ``docs/demo``), and the
README's generated block between the ``study:begin``/``study:end`` markers rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tabulate import tabulate

from formats.files import atomic_write_text, shown_path

from .pipeline import StageResult
from .report import TIMINGS, fmt_seconds
from .stages import StageError, Study

BEGIN, END = "<!-- study:begin", "<!-- study:end -->"


def _md(table: dict) -> str:
    return tabulate(table["rows"], headers=table["headers"], tablefmt="github",
                    disable_numparse=True)


def _git() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


def stage_table(results: list[StageResult]) -> dict:
    """Wall time and peak memory of each stage as measured when it last ran; the time of a
    stage that was killed and resumed is the sum of its runs."""
    rows = []
    for r in results:
        seconds = r.record.get("seconds", r.seconds)
        peak = r.record.get("peak_rss_bytes", r.peak_bytes)
        runs = r.record.get("segments", 1)
        wall = fmt_seconds(seconds) + (f" in {runs} runs" if runs > 1 else "")
        rows.append([r.name, "cached" if r.cached else "ran", wall,
                     f"{peak / 2**20:.0f} MiB", r.hash])
    return {"headers": ["stage", "this run", "wall time", "peak memory", "input hash"],
            "rows": rows}


def repair_lines(study: Study) -> list[str]:
    """The repair stage's tables (markdown lines), when the study repairs."""
    if study.config.repair is None:
        return []
    return [*(study.folder("repair") / "repair.md").read_text().splitlines(), ""]


def repair_images(study: Study) -> list[Path]:
    """The repair stage's plot, when the study repairs."""
    return [] if study.config.repair is None else [study.folder("repair") / "repair.png"]


def cot_section(study: Study, folder: Path) -> tuple[list[str], list[Path]]:
    """The "Where the reasoning breaks" section (``leaderboard.cot``), its heatmaps written to
    ``folder``, when the study has chain-of-thought tasks."""
    spec = study.config.cot
    if spec is None:
        return [], []
    from leaderboard.cot import section
    from leaderboard.results import load_runs

    baselines = load_runs(study.folder("baselines") / "results")
    sweeps = load_runs(study.folder("sweeps") / "results")
    lines, images, record = section(baselines, sweeps, spec.planted, spec.answer_only, folder)
    atomic_write_text(folder / "cot.json", json.dumps(record, indent=1) + "\n")
    return lines, images


def _which_ran(results: list[StageResult]) -> str:
    """Names the stages this invocation ran when others were cached, so its wall time is not
    read as the whole study's."""
    ran = [r.name for r in results if not r.cached]
    return "" if len(ran) == len(results) else f", running {', '.join(ran)} (the rest cached)"


def findings_images(study: Study) -> list[Path]:
    """The findings' figures (the summary stage's): mean heatmaps and the localisations."""
    folder = study.folder("summary")
    record = json.loads((folder / "findings.json").read_text())
    return [folder / name for name in record["figures"]]


def render(study: Study, results: list[StageResult], config_path: str,
           started_at: float | None, cot: list[str] = ()) -> tuple[str, str, str]:
    """(REPORT.md, DETAILS.md, the README block body); image links relative to the report
    folder; ``cot``: the chain-of-thought section's lines. The report is read in a minute: a
    compact table per corrupted model and at most five findings, then the figures; the prose
    per model and the per-model repair tables are the appendix, DETAILS.md."""
    summary = json.loads((study.folder("summary") / "summary.json").read_text())
    findings = json.loads((study.folder("summary") / "findings.json").read_text())
    total = sum(r.record.get("seconds", r.seconds) for r in results)
    peak = max(r.record.get("peak_rss_bytes", r.peak_bytes) for r in results)
    now = time.time()
    timing = (f"The stages took {fmt_seconds(total)} wall time in all when they ran; peak memory "
              f"{peak / 2**30:.2f} GiB (largest resident set of any stage, process and children)."
              + (f" This `make demo` took {fmt_seconds(now - started_at)} from its start, set-up "
                 f"included{_which_ran(results)}." if started_at else ""))
    where = [f"![{name}]({name})" for name in findings["figures"] if name.startswith("where-")]
    localised = [f"![{name}]({name})" for name in findings["figures"]
                 if name == "localisations.png"]
    header = [f"`python -m study --config {config_path}` at git {_git()}, "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(now))}.", ""]
    report = "\n".join([
        f"# Study report: {study.config.name}", "", *header,
        *findings["summary"],
        "The prose per model, its key table and the per-model repair tables are in "
        "[DETAILS.md](DETAILS.md).", "",
        *(["## Where patching flips related math", "",
           "Flip rate: of the related-math items where the clean and corrupted models' answers "
           "differ, the share the patched clean model answers as the corrupted one; the mean "
           "over seeds first, each seed below it.", "", *where, ""] if where else []),
        *(["## Three localisations", "", *localised, ""] if localised else []),
        *findings["detail"],
        *cot,
        *(["## Repair", "", "![recovery of related math per repair](repair.png)", "",
           "Per-model tables in [DETAILS.md](DETAILS.md#repair-the-located-components-against-"
           "same-size-controls).", ""] if study.config.repair else []),
        f"The full leaderboard pages (every variant and heatmap, example replies) are "
        f"`baselines.md` and `sweeps.md` in `{shown_path(study.work / 'report')}`.", "",
        "## Stages", "", _md(stage_table(results)), "", timing, ""])
    details = "\n".join([
        f"# Study details: {study.config.name}", "", *header,
        "## Per model", "", summary["paragraph"], "",
        "## Baselines per model (metric ± standard error, lm-eval)", "",
        _md(summary["key_table"]), "", *repair_lines(study)])
    block = [*findings["summary"][2:], *where, "", timing]
    return report, details, "\n".join(block)


def _swap_in(src: Path, dst: Path) -> None:
    """Replace the folder ``dst`` by ``src`` (copied beside it first, then renamed in)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(src)
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def rewrite_readme(readme: Path, body: str, source: str) -> None:
    """Replace the text between the README's study markers (kept) with ``body``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise StageError(f"{readme}: no '{BEGIN} ... -->' / '{END}' markers to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    marker = f"{BEGIN} generated by `{source}`; edits here are overwritten -->"
    atomic_write_text(readme, f"{head}{marker}\n{body}\n{END}{tail}")


def publish(study: Study, results: list[StageResult], config_path: str,
            started_at: float | None) -> Path:
    """Write the report folder (report, pages, plots), publish the report with its heatmaps,
    summary and timings (the pages stay in the work dir), and rewrite the README block;
    returns REPORT.md. When every stage was cached and a published report exists, the tracked
    copies are left alone: re-running a finished study changes no file in the checkout."""
    folder = study.work / "report"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(study.folder("page"), folder,
                    ignore=shutil.ignore_patterns("DONE.json", "STARTED.json"))
    shown = [folder / "REPORT.md", folder / "summary.json", folder / TIMINGS]
    for extra in (study.folder("summary") / "summary.json", study.work / TIMINGS):
        shutil.copy2(extra, folder / extra.name)
    for image in [*findings_images(study), *repair_images(study)]:
        shutil.copy2(image, folder / image.name)
        shown.append(folder / image.name)
    cot, cot_images = cot_section(study, folder)
    shown += [*cot_images, *([folder / "cot.json"] if cot else [])]
    report, details, block = render(study, results, config_path, started_at, cot)
    atomic_write_text(folder / "REPORT.md", report)
    atomic_write_text(folder / "DETAILS.md", details)
    shutil.copy2(study.folder("summary") / "findings.json", folder / "findings.json")
    shown += [folder / "DETAILS.md", folder / "findings.json"]
    spec = study.config.report
    if spec.publish_dir and all(r.cached for r in results) \
            and (Path(spec.publish_dir) / "REPORT.md").is_file():
        print(f"[study] every stage cached: {spec.publish_dir}"
              f"{' and ' + spec.readme if spec.readme else ''} left as published")
        return folder / "REPORT.md"
    if spec.publish_dir:
        staged = study.work / ".publish"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        for path in shown:
            shutil.copy2(path, staged / path.name)
        _swap_in(staged, Path(spec.publish_dir))
    if spec.readme:
        rel = os.path.relpath(Path(spec.publish_dir or folder).resolve(),
                              Path(spec.readme).resolve().parent)
        for image in findings_images(study):
            block = block.replace(f"]({image.name})", f"]({rel}/{image.name})")
        rewrite_readme(Path(spec.readme), block + f"\n\nFull report: [{rel}/REPORT.md]"
                       f"({rel}/REPORT.md).", f"python -m study --config {config_path}")
    return folder / "REPORT.md"


PUBLISHED = "PUBLISHED.json"


def published_for(study: Study) -> dict[str, str] | None:
    """The stage hashes the report folder was last published from (None: never)."""
    try:
        return json.loads((study.work / "report" / PUBLISHED).read_text())
    except (OSError, ValueError):
        return None


def mark_published(study: Study, hashes: dict[str, str]) -> None:
    """Record which stage hashes the report shows, so that a worker finishing after another
    one published the same results does not publish them again."""
    atomic_write_text(study.work / "report" / PUBLISHED, json.dumps(hashes, indent=1) + "\n")
