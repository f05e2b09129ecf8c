"""The study's ``repair`` stage: from locating the corruption to repairing it there, against
controls of the same size.

For each corrupted model (``repair.corrupted``), in three passes:

1. selection (``repair.variants``): rank each select block's site by the sweep's flip rates
   or by attribution, keep the top k and draw the controls, write ``selection-<label>.json``,
   and check every selection against both models. Nothing trains until every model passed;
2. scoring: the clean and corrupted models and every repaired one through lm-eval, one
   results folder each under ``results/`` (a folder whose hash matches is skipped, so a killed
   stage resumes there). Related math is scored on the items the ranking did not read.
   ``restore``: the corrupted model with the clean weights put back in memory
   (``patching.restored``; a LoRA adapter switched off there), put back as it was after;
   ``retrain``: the corrupted model fine-tuned on correct labels (the section's ``retrain``)
   with only the selection trainable (``finetune`` ``components``), or every weight for the
   full control; the retrained weights are scored in memory and not kept;
3. measures (``repair.record``): ``repair.json``, the table and the plot.

Scoring goes through the one runner (``leaderboard.runner``), as the sweep's does.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from formats.errors import InputError
from formats.fingerprints import code_print, digest, file_print

from .config import RepairSpec
from .select import SelectionError
from .variants import (
    RepairVariant,
    alone_variants,
    blocks,
    check_pair,
    check_variants,
    eval_samples,
    rank,
    selection_for,
)
from .variants import variants_for as plan_variants

CODE = ("formats", "harness_ext", "leaderboard", "patching", "finetune", "repair")


class RepairError(InputError):
    """The repair stage cannot go on; one line saying why."""


@dataclass(frozen=True)
class RepairJob:
    """What the repair reads, resolved by its caller (the study): the section, the models,
    where it writes and where the sweep's rankings are."""

    spec: RepairSpec
    clean: str                 # the clean model: a local path or a hub id
    corrupted: dict[str, str]  # label -> fine-tune result (model/ or adapter/), in repair order
    folder: Path               # selections, results/, data/, train/ and the report go here
    sweeps_dir: Path           # the sweep's results folder, which ranks by flip rates
    metric: str
    device: str | None = None
    threads: int | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.corrupted)


def retrain_config(job: RepairJob, label: str | None = None,
                   variant: RepairVariant | None = None) -> Any:
    """The retraining ``SFTConfig`` of a variant, or with placeholder paths (for hashes and
    the dry run) when no variant is given."""
    retrain = job.spec.retrain
    if retrain is None:
        raise RepairError("repair: methods has retrain but there is no retrain config")
    placeholder = retrain.sft_config(base_model="<corrupted>", data_dir="<data>",
                                     output_dir="<out>")
    if variant is None or label is None:
        return placeholder
    data = f"{placeholder.data_preset}-seed{placeholder.data_seed}"
    return retrain.sft_config(
        base_model=trainable_base(job, label), data_dir=str(job.folder / "data" / data),
        output_dir=str(job.folder / "train" / variant.name),
        components=None if variant.components is None else list(variant.components))


def trainable_base(job: RepairJob, label: str) -> str:
    """What retraining starts from: the fine-tune's model, or a LoRA fine-tune's merged one."""
    path = Path(job.corrupted[label])
    if path.name == "adapter":
        merged = path.parent / "merged"
        if not (merged / "config.json").is_file():
            raise RepairError(f"repair: retraining LoRA fine-tune {label!r} needs its merged "
                              "model; set save_merged: true in its fine-tune config")
        return str(merged)
    return str(path)


def repair_inputs(job: RepairJob) -> dict[str, Any]:
    """What the stage's results depend on besides the models (hashed by the caller)."""
    from harness_ext.paths import TASKS_DIR

    spec = job.spec
    retrain = asdict(retrain_config(job)) if spec.retrain else None
    return {"repair": asdict(spec), "metric": job.metric, "labels": job.labels,
            "retrain": retrain, "tasks": file_print(TASKS_DIR),
            "selection_files": {k: file_print(p) for k, p in spec.selection_files.items()},
            "code": code_print(*CODE)}


class Models:
    """The clean model and one corrupted model at a time, loaded when first needed."""

    def __init__(self, job: RepairJob) -> None:
        from leaderboard.loading import load_tokenizer, resolve_device

        self.job, self.dtype = job, job.spec.dtype
        self.device = resolve_device(job.device or job.spec.device)
        self.tokenizer = load_tokenizer(job.clean)
        self._clean: Any = None
        self._corrupted: tuple[str, Any] | None = None

    @property
    def clean(self) -> Any:
        from leaderboard.loading import load_model

        if self._clean is None:
            self._clean = load_model(self.job.clean, self.device, self.dtype)
        return self._clean

    def corrupted(self, label: str) -> Any:
        """A full model, or for a LoRA fine-tune the PEFT model over a copy of the base (the
        adapter is switched off per component, so it must stay an adapter)."""
        if self._corrupted is None or self._corrupted[0] != label:
            from leaderboard.loading import load_unmerged

            self._corrupted = None
            self._corrupted = (label, load_unmerged(self.job.corrupted[label], self.device,
                                                    self.dtype))
        return self._corrupted[1]


def _pair(job: RepairJob, label: str) -> dict[str, Any]:
    from leaderboard.loading import adapter_base

    from .select import content_print, model_ids

    path = job.corrupted[label]
    return model_ids((job.clean, content_print(job.clean)),
                     (label, path, content_print(path, adapter_base(path))))


def _skeletons(job: RepairJob, label: str) -> tuple[Any, Any | None]:
    """(clean, corrupted) on the meta device: names and shapes for the checks, no weights
    (None for a LoRA fine-tune: its base is the clean model)."""
    from leaderboard.loading import adapter_base

    from .record import skeleton

    path = job.corrupted[label]
    return skeleton(job.clean), None if adapter_base(path) else skeleton(path)


@dataclass(frozen=True)
class LabelPlan:
    """What one corrupted model's repair scores: the baselines, the repaired models and their
    controls (``variants``, on every task), the restore sweep (``alone``, on related math),
    and the doc ids per task (``samples``: those no ranking read)."""

    variants: list[RepairVariant]
    alone: list[RepairVariant]
    samples: dict[str, list[int]]


def plan(job: RepairJob, models: Models) -> dict[str, LabelPlan]:
    """Selections, variants and scored items of every label, all checked (pass 1)."""
    from harness_ext.paths import TASKS_DIR
    from leaderboard.results import LeaderboardError, load_runs

    spec = job.spec
    runs = None
    out = {}
    for label in job.labels:
        clean, corrupted = _skeletons(job, label)

        def weights(label: str = label) -> tuple[Any, Any, Any]:
            return models.clean, models.corrupted(label), models.tokenizer

        try:
            check_pair(label, clean, corrupted)
            if runs is None and any(b.rank_by == "sweep" for b in blocks(spec)):
                runs = load_runs(job.sweeps_dir)
            ranked = partial(rank, spec, label, runs, weights, clean.config, job.metric,
                             job.sweeps_dir, TASKS_DIR)
            choices, used = selection_for(spec, label, _pair(job, label),
                                          job.folder / f"selection-{label}.json", job.metric,
                                          ranked)
            variants = plan_variants(label, choices, spec.methods)
            check_variants(variants, clean.config)
            if "retrain" in spec.methods:
                retrain_config(job, label, variants[-1])  # checks the config, and the base
            alone = alone_variants(label, spec.restore_each, clean.config)
            out[label] = LabelPlan(variants, alone,
                                   eval_samples(spec.tasks, used, spec.limit, TASKS_DIR))
        except (SelectionError, LeaderboardError) as err:
            raise RepairError(f"repair: {err}") from None
    return out


def _variant_hash(job: RepairJob, variant: RepairVariant, samples: dict[str, list[int]],
                  prints: dict[str, Any]) -> str:
    retrain = asdict(retrain_config(job)) if variant.method == "retrain" else None
    return digest({"variant": asdict(variant), "samples": samples, "models": prints,
                   "retrain": retrain, "eval": asdict(job.spec)})


def run_repair(job: RepairJob) -> dict[str, Any]:
    """Select, check, score every repaired model and its controls, then measure (passes 1-3)."""
    from .report import write_report

    models = Models(job)
    plans = plan(job, models)
    started = time.perf_counter()
    scored = 0
    for label, label_plan in plans.items():
        scored += _score_label(job, models, label, label_plan)
    report = write_report(job.folder / "results", job.folder, job.metric, job.spec.resamples,
                          job.labels)
    return {"results": str(job.folder / "results"), "report": str(report), "scored": scored,
            "scoring_seconds": round(time.perf_counter() - started, 1),
            "selections": sorted(str(p) for p in job.folder.glob("selection-*.json"))}


def settings(job: RepairJob, tasks: list[str] | None = None) -> Any:
    """How every repaired model is scored (the runner's settings); ``tasks``: fewer tasks."""
    from harness_ext.paths import TASKS_DIR
    from leaderboard.runner import EvalSettings

    spec = job.spec
    return EvalSettings(list(tasks or spec.tasks), Path(TASKS_DIR), spec.batch_size, spec.limit,
                        spec.gen_kwargs, spec.bootstrap_iters)


def _score_label(job: RepairJob, models: Models, label: str, todo: LabelPlan) -> int:
    """Score one label's models (pass 2) with the one runner: the repaired models on every
    task, then the restore sweep on related math; returns how many ran now."""
    from leaderboard.runner import Outcome, run_jobs
    from leaderboard.tables import RELATED

    pair = _pair(job, label)
    prints = {"clean": pair["clean"]["print"], "corrupted": pair["corrupted"]["print"]}
    related = {RELATED: todo.samples[RELATED]}
    outcome = Outcome()
    for variants, samples, tasks, what in ((todo.variants, todo.samples, None, "repair"),
                                           (todo.alone, related, [RELATED], "restore sweep")):
        jobs = [_job(job, models, v, pair, _variant_hash(job, v, samples, prints), samples)
                for v in variants]
        run_jobs(jobs, settings(job, tasks), job.folder / "results", f"{what} {label}", outcome)
    if outcome.failed:
        name, why = next(iter(outcome.failed.items()))
        raise RepairError(f"repair: {len(outcome.failed)} model(s) failed, e.g. {name}: {why}")
    return len(outcome.ran)


def _job(job: RepairJob, models: Models, variant: RepairVariant, pair: dict[str, Any],
         config_hash: str, samples: dict[str, list[int]]) -> Any:
    """The runner's job for one repair variant: its record, and how its model is made."""
    from leaderboard.runner import Job, variant_record

    from .record import touched

    count, total = touched(job.clean, variant.selection)
    identity = variant.identity() | {"touched": count, "total": total,
                                     "direction": job.spec.direction}
    record = variant_record(identity, run="repair", clean=pair["clean"]["path"],
                            corrupted=pair["corrupted"]["path"])
    source = pair["clean"]["path"] if variant.method == "clean" else pair["corrupted"]["path"]
    args = {"pretrained": source, "repair": variant.name, "enable_thinking": False}
    return Job(variant.name, config_hash, record, args,
               partial(_built, job, models, variant), samples)


@contextmanager
def _built(job: RepairJob, models: Models, variant: RepairVariant, record: dict[str, Any]
           ) -> Iterator[Any]:
    """The lm-eval model of a variant: a baseline as loaded, the corrupted model with clean
    weights put back for the body of the block, or a retrained copy (its checkpoints removed
    after, its losses added to the record)."""
    if variant.method == "retrain":
        model, tokenizer, out_dir = _retrain(job, variant, record)
        try:
            yield _hflm(job, model, tokenizer)
        finally:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    elif variant.method == "restore":
        from patching import restored

        bad = models.corrupted(variant.label)  # type: ignore[arg-type]
        clean = None if hasattr(bad, "peft_config") else models.clean
        with restored(bad, clean, variant.selection) as model:
            yield _hflm(job, model, models.tokenizer)
    else:
        model = models.clean if variant.method == "clean" else models.corrupted(variant.label)  # type: ignore[arg-type]
        yield _hflm(job, model, models.tokenizer)


def _hflm(job: RepairJob, model: Any, tokenizer: Any) -> Any:
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=job.spec.batch_size,
                enable_thinking=False)


def _retrain(job: RepairJob, variant: RepairVariant, record: dict[str, Any]
             ) -> tuple[Any, Any, Path]:
    """Fine-tune on correct labels with only the selection trainable; the loss record goes
    into the results record (``training``). Returns the model, its tokenizer and its folder."""
    from finetune.report import metrics_rows
    from finetune.sft import prepare, train

    cfg = retrain_config(job, variant.label, variant)
    cfg.resume = True  # continues from a checkpoint of a killed run, where it saved one
    run = prepare(cfg)
    train(run)
    rows = metrics_rows(run.trainer.state.log_history)
    losses = {key: next((r[key] for r in reversed(rows) if r[key] is not None), None)
              for key in ("train_loss", "eval_loss")}
    record["training"] = {"steps": run.trainer.state.global_step, **losses,
                          "eval_loss_step0": next((r["eval_loss"] for r in rows
                                                   if r["eval_loss"] is not None), None)}
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    return run.trainer.model.eval(), run.tokenizer, Path(cfg.output_dir)
