"""Run the stages in order, skipping those whose input hash matches their DONE record.

A stage's hash is computed only once its upstream stages are done (``--retrain`` changes the
base model's files, and so the hash of everything after it). ``--from STAGE`` redoes that stage
and all later ones; ``--until STAGE`` stops after it; with ``--shard i/n`` the sweep stage runs
one shard and is left unfinished, for a final run without ``--shard`` to complete.

Any number of processes may run one study config at once (on one machine, or on several with a
shared work dir): a stage scored through the runner (``Stage.shared``: baselines, sweeps,
repair) is worked on by all of them, each variant once (``leaderboard.claims``); any other stage
is claimed by one worker, and the others wait for its DONE record, or take the stage over when
its worker died (it resumes from its partial outputs, as after a crash).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.console import to_log
from formats.files import atomic_write_text, shown_path
from formats.fingerprints import digest
from leaderboard.claims import claim_path, keep_alive, try_claim

from .cache import SEGMENTS, STAGE_LOG, StageState
from .report import TIMINGS, Meter, fmt_seconds, header, load_timings, say
from .stages import Stage, StageError, Study


@dataclass
class StageResult:
    """How one stage went in this invocation (the report's timing table)."""

    name: str
    hash: str
    cached: bool
    seconds: float
    peak_bytes: int
    record: dict[str, Any] = field(default_factory=dict)


def stage_hash(stage: Stage, study: Study, upstream: dict[str, str]) -> str:
    """Hash of the stage's own inputs and its upstream stages' hashes."""
    return digest({"stage": stage.name, "inputs": stage.inputs(study),
                   "upstream": {name: upstream[name] for name in stage.upstream}})


def _check_names(stages: list[Stage], *names: str | None) -> None:
    known = [s.name for s in stages]
    for name in names:
        if name is not None and name not in known:
            raise StageError(f"unknown stage {name!r}; stages: {', '.join(known)}")


def run_stages(study: Study, stages: list[Stage], start: str | None = None,
               until: str | None = None, logs: bool = True) -> list[StageResult]:
    """Run (or reuse) every stage up to ``until``; returns one result per stage visited.
    ``logs``: each stage's library output goes to ``<stage>/stage.log``, the terminal shows
    the stage lines and our bars only (``formats.console``)."""
    import torch

    _check_names(stages, start, until)
    publish = study.config.report.publish_dir
    run = _Run(study, stages, load_timings(study.work / TIMINGS,
                                           *([Path(publish) / TIMINGS] if publish else [])),
               load_timings(study.work / TIMINGS), time.perf_counter(), logs)
    forced_from = None if start is None else [s.name for s in stages].index(start)
    sharded = study.shard[1] > 1
    for index, stage in enumerate(stages):
        if study.config.threads:
            torch.set_num_threads(study.config.threads)  # a fine-tune may have changed it
        run.hashes[stage.name] = stage_hash(stage, study, run.hashes)
        state = StageState(study.folder(stage.name), run.hashes[stage.name])
        forced = stage.forced(study) or (forced_from is not None and index >= forced_from)
        claimed = False
        if not (state.done and not forced) and not stage.shared and not sharded:
            claimed = _claim_or_wait(study, stage.name, state, forced)
        rerun = forced and (claimed or stage.shared or sharded)  # a waiter reuses its result
        with keep_alive(study.work, stage.name) if claimed else nullcontext():
            if not run.visit(index, state, rerun):
                return run.results  # one shard of the sweep: the rest is the other shards'
        if stage.name == until:
            break
    return run.results


@dataclass
class _Run:
    """One invocation's progress through the stages."""

    study: Study
    stages: list[Stage]
    estimates: dict[str, float]
    timings: dict[str, float]
    began: float
    logs: bool = True
    hashes: dict[str, str] = field(default_factory=dict)
    results: list[StageResult] = field(default_factory=list)

    def visit(self, index: int, state: StageState, rerun: bool) -> bool:
        """Reuse one stage's DONE record, or run the stage and record it; False when this
        process ran one shard of it (it stays unfinished, for the others)."""
        study, stage = self.study, self.stages[index]
        sharded = study.shard[1] > 1
        if state.done and not rerun:
            record = state.record()
            say(f"=== [{index + 1}/{len(self.stages)}] {stage.name}: cached "
                f"({self.hashes[stage.name]}, took {fmt_seconds(record.get('seconds', 0))} "
                "when it ran) ===")
            self.results.append(StageResult(stage.name, state.hash, True, 0.0, 0, record))
            return True
        if sharded and not stage.shardable:
            raise StageError(f"--shard: stage {stage.name} is not done; run it first "
                             f"(python -m study --config ... --until {stage.name})")
        remaining = [self.estimates.get(s.name) for s in self.stages[index:]]
        say(header(index + 1, len(self.stages), stage.name, stage.note,
                   time.perf_counter() - self.began, remaining))
        if state.begin(fresh=rerun):
            say(f"[study] {stage.name}: resuming from the partial outputs of an earlier run")
        log = state.folder / STAGE_LOG
        if self.logs:
            say(f"    its library output: {shown_path(log)}")
        with Meter(ledger=state.folder / SEGMENTS) as meter, \
                to_log(log) if self.logs else nullcontext():
            record = stage.run(study, state.folder)
        self.results.append(StageResult(stage.name, state.hash, False, meter.seconds,
                                        meter.peak_bytes, record))
        if sharded and stage.shardable:
            say(f"[study] shard {study.shard[0]}/{study.shard[1]} of {stage.name} done in "
                f"{fmt_seconds(meter.seconds)}; when every shard is done, run again without "
                "--shard to finish")
            return False
        # --retrain rebuilds the base model: its hash is that of the new files
        self.hashes[stage.name] = state.hash = stage_hash(stage, study, self.hashes)
        state.finish(record | {"seconds": round(meter.seconds, 2), "segments": meter.segments,
                               "peak_rss_bytes": meter.peak_bytes,
                               "memory_method": meter.method})
        self.timings[stage.name] = round(meter.seconds, 2)
        atomic_write_text(study.work / TIMINGS, json.dumps(self.timings, indent=1) + "\n")
        say(f"[study] {stage.name} done in {fmt_seconds(meter.seconds)}, peak memory "
            f"{meter.peak_bytes / 2**20:.0f} MiB")
        return True


def _claim_or_wait(study: Study, name: str, state: StageState, forced: bool,
                   poll: float = 2.0) -> bool:
    """Claim a stage that one worker runs; while another worker holds it, wait until it is
    done (False) or its holder died (then take it over). True: this worker runs it. A forced
    stage (``--from``) is claimed although it is done; a worker that finds it held waits for the
    holder's rerun to end and reuses it."""
    waited = False
    while not try_claim(study.work, name):
        if not waited:
            say(f"[study] {name}: another worker runs it; waiting for it")
            waited = True
        time.sleep(poll)
        if state.done and not (forced and claim_path(study.work, name).exists()):
            return False
    return True
