"""The study report: stage timings and memory, the key table, the heatmap and the summary.

Everything a reader sees is regenerated from the stage records and the summary's numbers when
the stages' results change: ``<work_dir>/report/REPORT.md`` (with the leaderboard pages and
their plots beside it). Only ``--publish`` copies it to ``report.publish_dir`` (e.g.
``docs/demo``) and rewrites the README's block between the ``study:begin``/``study:end``
markers, so a run leaves the checkout as it was.
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
              + (f" This run took {fmt_seconds(now - started_at)} from its caller's start "
                 f"(`--started-at`: set-up included){_which_ran(results)}." if started_at
                 else ""))
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


def rewrite_readme(readme: Path, body: str, source: str) -> bool:
    """Replace the text between the README's study markers (kept) with ``body``; False when
    it held that text already (the file is then not written)."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise StageError(f"{readme}: no '{BEGIN} ... -->' / '{END}' markers to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    marker = f"{BEGIN} generated by `{source}`; edits here are overwritten -->"
    new = f"{head}{marker}\n{body}\n{END}{tail}"
    if new == text:
        return False
    atomic_write_text(readme, new)
    return True


SHOWN = "SHOWN.json"
"""The report folder's list of the files that ``--publish`` copies."""
README_BLOCK = "README_BLOCK.md"
"""The README block rendered with the report (image links relative to the README)."""


def write_report(study: Study, results: list[StageResult], config_path: str,
                 started_at: float | None) -> Path:
    """Write the report folder in the work dir (report, pages, plots, what ``--publish``
    copies and the README block); returns REPORT.md. Nothing outside the work dir changes."""
    folder = study.work / "report"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(study.folder("page"), folder,
                    ignore=shutil.ignore_patterns("DONE.json", "STARTED.json", "stage.log"))
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
    atomic_write_text(folder / SHOWN, json.dumps([p.name for p in shown], indent=1) + "\n")
    spec = study.config.report
    if spec.readme:
        rel = os.path.relpath(Path(spec.publish_dir or folder).resolve(),
                              Path(spec.readme).resolve().parent)
        for image in findings_images(study):
            block = block.replace(f"]({image.name})", f"]({rel}/{image.name})")
        atomic_write_text(folder / README_BLOCK, block + f"\n\nFull report: "
                          f"[{rel}/REPORT.md]({rel}/REPORT.md).")
    return folder / "REPORT.md"


def publish_report(study: Study, config_path: str) -> list[str]:
    """``--publish``: copy the work dir's report (its ``SHOWN`` files) to ``report.publish_dir``
    and its block into ``report.readme``, each only where it differs, so that publishing a
    published report changes no file; returns what it rewrote."""
    spec, folder = study.config.report, study.work / "report"
    changed = []
    if spec.publish_dir:
        names = json.loads((folder / SHOWN).read_text())
        target = Path(spec.publish_dir)
        same = target.is_dir() and sorted(p.name for p in target.iterdir()) == sorted(names) \
            and all((target / n).read_bytes() == (folder / n).read_bytes() for n in names)
        if not same:
            staged = study.work / ".publish"
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir()
            for name in names:
                shutil.copy2(folder / name, staged / name)
            _swap_in(staged, target)
            changed.append(str(target))
    if spec.readme and rewrite_readme(Path(spec.readme), (folder / README_BLOCK).read_text(),
                                      f"python -m study --config {config_path}"):
        changed.append(spec.readme)
    return changed


WRITTEN_FOR = "WRITTEN_FOR.json"


def report_hashes(study: Study) -> dict[str, str] | None:
    """The stage hashes the work dir's report folder was written from (None: never)."""
    try:
        return json.loads((study.work / "report" / WRITTEN_FOR).read_text())
    except (OSError, ValueError):
        return None


def mark_report(study: Study, hashes: dict[str, str]) -> None:
    """Record which stage hashes the report shows, so that a rerun, or a worker finishing
    after another one wrote the report of the same results, does not write it again."""
    atomic_write_text(study.work / "report" / WRITTEN_FOR, json.dumps(hashes, indent=1) + "\n")
