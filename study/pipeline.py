"""Run the stages in order, skipping those whose input hash matches their DONE record.

A stage's hash is computed only once its upstream stages are done (``--retrain`` changes the
base model's files, and so the hash of everything after it). ``--from STAGE`` redoes that stage
and all later ones; ``--until STAGE`` stops after it; with ``--shard i/n`` the sweep stage runs
one shard and is left unfinished, for a final run without ``--shard`` to complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.files import atomic_write_text
from formats.fingerprints import digest

from .cache import StageState
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
               until: str | None = None) -> list[StageResult]:
    """Run (or reuse) every stage up to ``until``; returns one result per stage visited."""
    import torch

    _check_names(stages, start, until)
    publish = study.config.report.publish_dir
    estimates = load_timings(study.work / TIMINGS,
                             *([Path(publish) / TIMINGS] if publish else []))
    timings = load_timings(study.work / TIMINGS)  # this work dir's own record
    forced_from = None if start is None else [s.name for s in stages].index(start)
    hashes: dict[str, str] = {}
    results: list[StageResult] = []
    began = time.perf_counter()
    sharded = study.shard[1] > 1
    for index, stage in enumerate(stages):
        if study.config.threads:
            torch.set_num_threads(study.config.threads)  # a fine-tune may have changed it
        hashes[stage.name] = stage_hash(stage, study, hashes)
        state = StageState(study.folder(stage.name), hashes[stage.name])
        forced = stage.forced(study) or (forced_from is not None and index >= forced_from)
        position = f"[{index + 1}/{len(stages)}] {stage.name}"
        if state.done and not forced:
            record = state.record()
            say(f"=== {position}: cached ({hashes[stage.name]}, took "
                f"{fmt_seconds(record.get('seconds', 0))} when it ran) ===")
            results.append(StageResult(stage.name, state.hash, True, 0.0, 0, record))
        else:
            if sharded and not stage.shardable:
                raise StageError(f"--shard: stage {stage.name} is not done; run it first "
                                 f"(python -m study --config ... --until {stage.name})")
            remaining = [estimates.get(s.name) for s in stages[index:]]
            say(header(index + 1, len(stages), stage.name, stage.note,
                       time.perf_counter() - began, remaining))
            kept = state.begin(fresh=forced)
            if kept:
                say(f"[study] {stage.name}: resuming from the partial outputs of an earlier run")
            with Meter() as meter:
                record = stage.run(study, state.folder)
            results.append(StageResult(stage.name, state.hash, False, meter.seconds,
                                       meter.peak_bytes, record))
            if sharded and stage.shardable:
                say(f"[study] shard {study.shard[0]}/{study.shard[1]} of {stage.name} done in "
                    f"{fmt_seconds(meter.seconds)}; when every shard is done, run again "
                    "without --shard to finish")
                return results
            # --retrain rebuilds the base model: its hash is that of the new files
            hashes[stage.name] = state.hash = stage_hash(stage, study, hashes)
            state.finish(record | {"seconds": round(meter.seconds, 2),
                                   "peak_rss_bytes": meter.peak_bytes,
                                   "memory_method": meter.method})
            timings[stage.name] = round(meter.seconds, 2)
            atomic_write_text(study.work / TIMINGS, json.dumps(timings, indent=1) + "\n")
            say(f"[study] {stage.name} done in {fmt_seconds(meter.seconds)}, peak memory "
                f"{meter.peak_bytes / 2**20:.0f} MiB")
        if stage.name == until:
            break
    return results
