"""One variant folder on disk: lm-eval's own files, written so that a kill never leaves a
folder that looks finished.

The files are made by lm-eval's ``EvaluationTracker`` (the same code as ``lm_eval
--output_path X --log_samples``), so lm-eval tools and the leaderboard re-read them as any
lm-eval run: ``results_<date>.json`` and ``samples_<task>_<date>.jsonl``. They are written into
a temporary folder, then moved in: samples first, the results file LAST, so the presence of a
results file with this variant's hash marks a finished variant.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from lm_eval.loggers import EvaluationTracker
from lm_eval.utils import get_latest_filename

from formats.failpoints import failpoint

RECORD_KEY = "scored"
"""Top-level key the runner adds to lm-eval's results dict: what the variant is and the run's
facts (``leaderboard.runner.variant_record``); lm-eval tools ignore it."""


class StoreError(RuntimeError):
    """lm-eval did not write what it should have; names the folder."""


def results_files(folder: Path) -> list[Path]:
    """lm-eval results files in a variant folder (``results_<date>.json``)."""
    return sorted(p for p in folder.glob("results_*.json") if p.is_file())


def latest_results(folder: Path) -> Path | None:
    """The newest results file, chosen as lm-eval's own tools choose (by the date in the name)."""
    files = results_files(folder)
    return Path(get_latest_filename([str(p) for p in files])) if files else None


def samples_file(results_file: Path, task: str) -> Path:
    """The samples file lm-eval wrote in the same call as ``results_file`` (same date id)."""
    date_id = results_file.stem.removeprefix("results_")
    return results_file.parent / f"samples_{task}_{date_id}.jsonl"


def finished_hash(folder: Path) -> str | None:
    """The config hash of the finished variant in ``folder``; None when absent or unreadable
    (a half-written file counts as not finished: the variant is run again)."""
    path = latest_results(folder)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())[RECORD_KEY]["config_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _tmp(out_dir: Path, name: str) -> Path:
    return out_dir / f".tmp-{name}"


def discard_tmp(out_dir: Path, name: str) -> None:
    """Remove a failed variant's scratch folder."""
    shutil.rmtree(_tmp(out_dir, name), ignore_errors=True)


def new_tracker(out_dir: Path, name: str) -> EvaluationTracker:
    """An lm-eval tracker writing into a fresh per-variant scratch folder. Each variant belongs
    to one shard, so no two processes share the folder and a dead run's leftover may go."""
    tmp = _tmp(out_dir, name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return EvaluationTracker(output_path=str(tmp / "results.json"))  # .json: files land in tmp


def write_variant(out_dir: Path, name: str, results: dict[str, Any],
                  tracker: EvaluationTracker) -> Path:
    """Save ``simple_evaluate``'s results (with ``samples``) with lm-eval's tracker into its
    scratch folder, check every file is there, then move them into ``out_dir/name``; returns
    the results file."""
    tmp = Path(tracker.output_path).parent
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    written = results_files(tmp)
    if len(written) != 1:  # the tracker logs and swallows its own write errors
        raise StoreError(f"{tmp}: lm-eval wrote {len(written)} results files, expected 1")
    missing = [t for t in results["configs"] if not samples_file(written[0], t).is_file()]
    if missing:
        raise StoreError(f"{tmp}: lm-eval wrote no samples for {missing}")

    final = out_dir / name
    final.mkdir(parents=True, exist_ok=True)
    for old in results_files(final):  # first: the folder must stop looking finished
        old.unlink()
    for old in final.glob("samples_*.jsonl"):
        old.unlink()
    for task in results["configs"]:
        src = samples_file(written[0], task)
        os.replace(src, final / src.name)
    failpoint("sweep.before_results")
    target = final / written[0].name
    os.replace(written[0], target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target
