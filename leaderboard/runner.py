"""Score variants through lm-eval, one folder of lm-eval files each: the one runner behind the
sweep (baselines and patches), the repair and the restore sweep.

A ``Job`` is one variant to score: its name (its folder), the hash of everything its scores
depend on, the record that says what it is (``RECORD_KEY`` in its results file, read back by
``leaderboard.results``), the ``--model_args`` that reproduce it from the command line, and
``build``: a context manager that makes its lm-eval model object and undoes, on exit, what
making it did (weights put back, a shared generation told the variant is done). A job whose
folder holds a results file with its hash is finished and skipped, so a killed run resumes by
running again; a failing job is recorded and the others go on.

Workers cooperate through claims (``leaderboard.claims``): any number of processes given the
same jobs and output folder each claim a unit of work (a job, or the jobs that share one
generation: ``Job.unit``) before running it, skip units others hold, and at the end wait for
those to finish or take over the unit of a holder that died.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from formats.console import console

from .claims import keep_alive, try_claim
from .store import RECORD_KEY, discard_tmp, finished_hash, new_tracker, write_variant

log = logging.getLogger(__name__)
FORMAT = 2  # of the record: {"format", "variant": what it is, "config_hash", run facts}


@dataclass(frozen=True)
class EvalSettings:
    """How every job of one run is scored (``simple_evaluate``'s arguments)."""

    tasks: list[str]
    task_dir: Path
    batch_size: int
    limit: int | float | None = None
    gen_kwargs: dict[str, Any] | None = None
    bootstrap_iters: int = 100000
    seed: int = 1234


Build = Callable[[dict[str, Any]], AbstractContextManager[Any]]


@dataclass
class Job:
    """One variant to score. ``record``: what it is (``variant``) and the run's facts, without
    placeholders; ``build(record)`` yields the lm-eval model and may add facts it learns while
    building (a retrain's losses). ``samples``: doc ids per task instead of the settings'
    ``limit``."""

    name: str
    hash: str
    record: dict[str, Any]
    model_args: dict[str, Any]
    build: Build
    samples: dict[str, list[int]] | None = None
    unit: str | None = None  # the claim it is run under (default: its own name)

    @property
    def claim(self) -> str:
        return self.unit or self.name


@dataclass
class Outcome:
    """Names of the jobs this process ran, skipped as finished (``by_others``: finished by
    another worker while this one ran), and failed (with why)."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    by_others: list[str] = field(default_factory=list)


def variant_record(variant: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """A results file's record: what the variant is, and the run's facts that are known (keys
    whose value is None are left out, so the record holds no placeholders)."""
    return {"format": FORMAT, "variant": {k: v for k, v in variant.items() if v is not None},
            **{k: v for k, v in facts.items() if v is not None}}


def is_finished(out_dir: Path, name: str, config_hash: str) -> bool:
    """Whether ``out_dir/name`` holds a finished results file with this hash."""
    return finished_hash(out_dir / name) == config_hash


def run_jobs(jobs: list[Job], settings: EvalSettings, out_dir: Path, desc: str,
             outcome: Outcome | None = None, progress: bool = True, poll: float = 2.0
             ) -> Outcome:
    """Score every unfinished job, each into ``out_dir/<name>``: first the units no other
    worker holds, in order, then the others' as they finish or their holders die."""
    outcome = outcome or Outcome()
    units: dict[str, list[Job]] = {}
    for job in jobs:
        if is_finished(out_dir, job.name, job.hash):
            outcome.skipped.append(job.name)
        else:
            units.setdefault(job.claim, []).append(job)
    if not units:
        return outcome
    from lm_eval.tasks import TaskManager

    task_manager = TaskManager(include_defaults=False, include_path=str(settings.task_dir))
    bar = tqdm(total=sum(map(len, units.values())), desc=desc, unit="variant",
               disable=not progress, file=console())
    with env_info_once():
        waiting = [name for name in units
                   if not _run_unit(units[name], name, settings, out_dir, task_manager,
                                    outcome, bar)]
        while waiting:
            time.sleep(poll)
            waiting = [name for name in waiting
                       if not _run_unit(units[name], name, settings, out_dir, task_manager,
                                        outcome, bar)]
    bar.close()
    return outcome


def _run_unit(jobs: list[Job], unit: str, settings: EvalSettings, out_dir: Path,
              task_manager: Any, outcome: Outcome, bar: Any) -> bool:
    """Run one unit's unfinished jobs under its claim; False when another worker holds it
    (nothing run). Jobs another worker finished meanwhile are counted in ``by_others``."""
    todo = [j for j in jobs if not is_finished(out_dir, j.name, j.hash)]
    done_elsewhere = [j.name for j in jobs if j not in todo and j.name not in outcome.ran]
    if not todo:
        outcome.by_others += [n for n in done_elsewhere if n not in outcome.by_others]
        bar.update(len(jobs))
        return True
    if not try_claim(out_dir, unit):
        return False
    with keep_alive(out_dir, unit):
        for job in todo:
            if is_finished(out_dir, job.name, job.hash):  # a worker before us finished it
                outcome.by_others.append(job.name)
                bar.update(1)
                continue
            bar.set_postfix_str(job.name, refresh=False)
            try:
                with job.build(job.record) as lm:
                    evaluate(settings, out_dir, job, lm, task_manager)
                outcome.ran.append(job.name)
            except Exception as err:  # noqa: BLE001 - one broken variant must not stop a run
                discard_tmp(out_dir, job.name)
                outcome.failed[job.name] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                log.error("variant %s failed: %s", job.name, outcome.failed[job.name])
            bar.update(1)
    bar.update(len(jobs) - len(todo))
    return True


def evaluate(settings: EvalSettings, out_dir: Path, job: Job, lm: Any, task_manager: Any
             ) -> Path:
    """Score one lm-eval model object with the settings' tasks into ``out_dir/<job.name>``
    (the job's record under ``RECORD_KEY``); returns the results file."""
    from lm_eval import simple_evaluate

    tracker = new_tracker(out_dir, job.name)
    seed = settings.seed
    results = simple_evaluate(
        model=lm, model_args=job.model_args, tasks=settings.tasks,
        limit=None if job.samples else settings.limit, samples=job.samples,
        batch_size=settings.batch_size, device=str(lm.device), gen_kwargs=settings.gen_kwargs,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed, bootstrap_iters=settings.bootstrap_iters,
        task_manager=task_manager, apply_chat_template=True, log_samples=True,
        evaluation_tracker=tracker,
    )
    results[RECORD_KEY] = job.record | {"config_hash": job.hash}
    return write_variant(out_dir, job.name, results, tracker)


@contextmanager
def env_info_once() -> Iterator[None]:
    """Within this block, ``simple_evaluate`` collects the environment once, not per variant.

    lm-eval records torch's ``collect_env`` report in every results file; collecting it
    spawns subprocesses (pip, nvidia-smi, ...): 0.5 s of wall time per call measured here,
    about what a tiny variant's whole evaluation takes. It cannot change within one process.
    """
    import lm_eval.evaluator as evaluator

    real, collected = evaluator.add_env_info, {}

    def add_once(storage: dict[str, Any]) -> None:
        if not collected:
            real(collected)
        storage.update(copy.deepcopy(collected))

    evaluator.add_env_info = add_once
    try:
        yield
    finally:
        evaluator.add_env_info = real
