"""Score every variant of a sweep through lm-eval, one folder of lm-eval files per variant.

    python -m leaderboard.sweep --config configs/sweeps/tiny.yaml [--shard i/n | --shard auto]

Each variant is an lm-eval model object (``hf``'s ``HFLM`` for baselines, ``patched_hf`` for
patches) built around models loaded once per process, scored by ``simple_evaluate`` with the
chat template (thinking off) and our task folder only (lm-eval's built-in index costs ~14 s per
call). Finished variants (results file with the same hash) are skipped, so a killed sweep is
resumed by running the same command again. Patch variants of one model pair and direction run
back to back and share their generation: up to ``generate_together`` of them are generated
in one engine pass (``leaderboard.shared_generation``); their files are the same either way.

Scale-out: variants are independent. Plain background processes, one per GPU::

    for i in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$i python -m leaderboard.sweep \\
        --config C.yaml --shard $i/4 > sweep.$i.log 2>&1 & done; wait

or ``accelerate launch --num_processes 4 -m leaderboard.sweep --config C.yaml --shard auto``
(``auto`` reads RANK / WORLD_SIZE / LOCAL_RANK). Every shard writes its own variant folders
into the same output dir; ``python -m leaderboard.build`` merges them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.errors import InputError
from formats.model_files import adapter_base_problem, weights_problem

from .config import SweepConfig, SweepConfigError
from .loading import (
    ModelCache,
    ModelLoadError,
    adapter_base,
    load_tokenizer,
    model_kv_heads,
    model_shape,
    resolve_device,
)
from .runner import EvalSettings, Job, Outcome, is_finished, run_jobs, variant_record
from .shared_generation import SharedGeneration, patch_spec, run_order, shared_generators, units
from .variants import (
    Variant,
    cli_model,
    digest_prints,
    expand,
    fingerprint,
    model_args,
    shard,
    variant_hash,
)

log = logging.getLogger(__name__)


@dataclass
class SweepPlan:
    """Everything decided before any model loads: variants, their hashes, absolute paths."""

    config: SweepConfig
    clean: str
    corrupted: dict[str, str]
    adapter_base: dict[str, str]
    task_dir: Path
    n_layers: int
    n_heads: int
    variants: list[Variant]
    hashes: dict[str, str]
    manifests: dict[str, Any]

    @property
    def out_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def settings(self) -> EvalSettings:
        return settings_of(self.config, self.task_dir)

    def meta(self, variant: Variant) -> dict[str, Any]:
        """The results file's record: what the variant is and the sweep's facts."""
        label = variant.label or ""
        return variant_record(
            variant.identity(), run=self.config.name, cli_model=cli_model(variant),
            clean=self.clean, corrupted=self.corrupted.get(label),
            corrupted_base=self.adapter_base.get(label), n_layers=self.n_layers,
            n_heads=self.n_heads, task_dir=str(self.task_dir), data_manifests=self.manifests)


def settings_of(config: SweepConfig, task_dir: Path) -> EvalSettings:
    """How a sweep config scores each variant."""
    return EvalSettings(config.tasks, task_dir, config.batch_size, config.limit,
                        config.gen_kwargs, config.bootstrap_iters, config.seed)


@dataclass
class SweepOutcome(Outcome):
    """``Outcome`` plus ``shared_calls``: how many variants each shared engine pass generated
    for."""

    shared_calls: list[int] = field(default_factory=list)


def _manifests(task_dir: Path) -> dict[str, Any]:
    """Every data ``manifest.json`` under the task folder, with its hash and seed/preset."""
    out = {}
    for path in sorted(task_dir.rglob("manifest.json")):
        entry: dict[str, Any] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        try:
            raw = json.loads(path.read_text())
            entry |= {k: raw.get(k) for k in ("preset", "seed", "generator_version")}
        except ValueError:
            entry["error"] = "not valid JSON"
        out[str(path.relative_to(task_dir))] = entry
    return out


def _local(path: str) -> str:
    """An existing local dir as an absolute path (results then name it from any CWD); anything
    else (a hub id such as Qwen/Qwen3-4B) as given."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _model_print(path: str, base: str | None = None) -> str:
    """Digest of a model's name, its files and, for an adapter, its base model's."""
    files = fingerprint(Path(path))
    base_files = fingerprint(Path(base)) if base else {}
    return digest_prints({"path": path, "files": files, "base": base, "base_files": base_files})


def plan_sweep(config: SweepConfig, models: ModelCache | None = None) -> SweepPlan:
    """Resolve paths, read the model shape from its config and expand and hash the variants;
    ``models``: where a prefiltered block gets its models (the sweep's cache)."""
    from harness_ext.paths import TASKS_DIR
    from harness_ext.task_list import check_task_names

    clean = _local(config.clean)
    corrupted = {k: _local(p) for k, p in config.corrupted.items()}  # type: ignore[union-attr]
    bases = {k: b for k, p in corrupted.items() if (b := adapter_base(p))}
    task_dir = Path(config.task_dir or TASKS_DIR).resolve()
    if not task_dir.is_dir():
        raise SweepConfigError(f"task_dir {task_dir}: no such folder")
    check_task_names(config.tasks, task_dir)  # here, not in every variant
    named = {"clean": clean} | {f"corrupted[{k}]": p for k, p in corrupted.items()}
    for name, path in named.items():  # before any work: a 43-s failure per variant otherwise
        if (problem := weights_problem(path) or adapter_base_problem(path, clean)) is not None:
            raise ModelLoadError(f"{name} {path}: {problem}")
    n_layers, n_heads = model_shape(clean)
    for label, path in corrupted.items():
        if model_shape(path) != (n_layers, n_heads):
            raise SweepConfigError(f"corrupted[{label}] {path}: shape {model_shape(path)} differs "
                                   f"from the clean model's {(n_layers, n_heads)}")
    prints = {"clean": _model_print(clean)}
    prints |= {k: _model_print(p, bases.get(k)) for k, p in corrupted.items()}
    tasks_print = digest_prints(fingerprint(task_dir, recursive=True))
    kept = None
    if any(block.prefilter for block in config.patches):
        from .prefilter import prefilter_heads

        kept = prefilter_heads(config, clean, corrupted, task_dir, n_layers, n_heads, models)
    variants = expand(config, n_layers, n_heads, kept, model_kv_heads(clean))
    hashes = {v.name: variant_hash(config, v, prints, tasks_print) for v in variants}
    return SweepPlan(config, clean, corrupted, bases, task_dir, n_layers, n_heads, variants,
                     hashes, _manifests(task_dir))


def make_lm(plan: SweepPlan, variant: Variant, models: ModelCache, tokenizer: Any,
            generator: SharedGeneration | None = None) -> Any:
    """The lm-eval model object of one variant, around models loaded once per process."""
    common = {"tokenizer": tokenizer, "batch_size": plan.config.batch_size,
              "enable_thinking": False}
    if variant.role == "patch":
        from harness_ext.patched_lm import PatchedLM

        return PatchedLM(
            pretrained=models.get(plan.clean), corrupted=models.get(plan.corrupted[variant.label]),
            spec=variant.spec, direction=variant.direction, seed=plan.config.seed,
            generator=generator, **common)
    from lm_eval.models.huggingface import HFLM

    path = plan.clean if variant.role == "clean" else plan.corrupted[variant.label]  # type: ignore[index]
    return HFLM(pretrained=models.get(path), **common)


def job_of(plan: SweepPlan, variant: Variant, models: ModelCache, tokenizer: Any,
           shared: dict[str, SharedGeneration], unit: str) -> Job:
    """The runner's job for one variant, claimed with the rest of its ``unit``: its lm-eval
    model around the process's models; a patch variant in a shared generation tells it, on
    exit, that the variant is done."""
    generator = shared.get(unit)  # None: a baseline, or generating alone

    @contextmanager
    def build(record: dict[str, Any]) -> Iterator[Any]:
        try:
            yield make_lm(plan, variant, models, tokenizer, generator)
        finally:
            if generator is not None:
                generator.finish(patch_spec(variant))

    args = model_args(variant, plan.clean, plan.corrupted, plan.adapter_base,
                      plan.config.batch_size)
    return Job(variant.name, plan.hashes[variant.name], plan.meta(variant), args, build,
               unit=unit)


def run_sweep(config: SweepConfig, shard_index: int = 0, shard_count: int = 1,
              device: str | None = None, progress: bool = True) -> SweepOutcome:
    """Run this shard's unfinished variants; a failing variant is logged and the rest go on."""
    models = ModelCache(resolve_device(device or config.device), config.dtype)  # loads lazily
    plan = plan_sweep(config, models)
    mine = shard(plan.variants, shard_index, shard_count)
    outcome = SweepOutcome()
    pending = []
    for variant in mine:
        if is_finished(plan.out_dir, variant.name, plan.hashes[variant.name]):
            outcome.skipped.append(variant.name)
        else:
            pending.append(variant)
    log.info("sweep %s: %d variants, %d in shard %d/%d, %d finished, %d to run",
                config.name, len(plan.variants), len(mine), shard_index, shard_count,
                len(outcome.skipped), len(pending))
    if not pending:
        return outcome
    unit_of = units(mine, config.generate_together)  # from every variant: the same in each worker
    pending = run_order(pending)
    shared = shared_generators(pending, unit_of, config.generate_together)
    tokenizer = load_tokenizer(plan.clean)
    jobs = [job_of(plan, v, models, tokenizer, shared, unit_of[v.name]) for v in pending]
    run_jobs(jobs, plan.settings, plan.out_dir, f"{config.name} [{shard_index}/{shard_count}]",
             outcome, progress)
    outcome.shared_calls = [n for generator in shared.values() for n in generator.call_sizes]
    return outcome


def parse_shard(text: str) -> tuple[int, int]:
    """``i/n`` or ``auto`` (RANK/WORLD_SIZE from torchrun or ``accelerate launch``)."""
    if text == "auto":
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n or auto") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return index, count


def launcher_device() -> str | None:
    """Under a launcher, this process's GPU (cuda:LOCAL_RANK). LOCAL_RANK is then removed:
    ``simple_evaluate`` returns None on LOCAL_RANK != 0 (it assumes tensor parallelism), while
    here every process runs its own independent variants."""
    local = os.environ.pop("LOCAL_RANK", None)
    if local is None:
        return None
    import torch

    return f"cuda:{local}" if torch.cuda.is_available() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="sweep YAML (see configs/sweeps/)")
    parser.add_argument("--shard", default="0/1", help="i/n (this process runs variants i, i+n, "
                        "...) or auto (from RANK/WORLD_SIZE)")
    parser.add_argument("--device", help="override the config's device (cpu, cuda:1, ...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("leaderboard").setLevel(logging.INFO)  # our sweep size and prefilter lines
    try:
        shard_index, shard_count = parse_shard(args.shard)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    device = args.device or (launcher_device() if args.shard == "auto" else None)
    start = time.time()
    try:
        config = SweepConfig.from_yaml(args.config)
        outcome = run_sweep(config, shard_index, shard_count, device=device)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(outcome.ran)} ran, {len(outcome.skipped)} already finished, "
          f"{len(outcome.failed)} failed in {time.time() - start:.0f} s -> {config.output_dir}")
    if outcome.shared_calls:
        print(f"generation shared: {len(outcome.shared_calls)} engine passes for "
              f"{sum(outcome.shared_calls)} variant-batches")
    for name, why in outcome.failed.items():
        print(f"FAILED {name}: {why}", file=sys.stderr)
    if outcome.failed:
        return 1
    return judge_sweep(config) if config.judge is not None and shard_count == 1 else 0


def judge_sweep(config: SweepConfig) -> int:
    """The config's judge over the finished sweep's open-ended tasks (docs/judge.md); cached,
    so a re-run judges nothing twice."""
    from harness_ext.judge.answers import JudgeError
    from harness_ext.judge.run import judge_folder

    judge = config.judge
    assert judge is not None
    try:
        done = judge_folder(config.output_dir, judge.load(), patterns=judge.tasks,
                            require=False)
    except JudgeError as err:
        print(f"error: judge: {err}", file=sys.stderr)
        return 2
    print(f"judge {judge.model}: {len(done.metrics)} variant folder(s) judged"
          + ("" if done.rewritten else " already (nothing rewritten)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
