"""The study's ``repair`` stage: from locating the corruption to repairing it there, against
controls of the same size.

For each corrupted model (``repair.corrupted``), in three passes:

1. selection (``study.repair_plan``): rank each select block's site by the sweep's flip rates
   or by attribution, keep the top k and draw the controls, write ``selection-<label>.json``,
   and check every selection against both models. Nothing trains until every model passed;
2. scoring: the clean and corrupted models and every repaired one through lm-eval, one
   results folder each under ``results/`` (a folder whose hash matches is skipped, so a killed
   stage resumes there). Related math is scored on the items the ranking did not read.
   ``restore``: the corrupted model with the clean weights put back in memory
   (``patching.restored``; a LoRA adapter switched off there), put back as it was after;
   ``retrain``: the corrupted model fine-tuned on correct labels (``repair.retrain``) with only
   the selection trainable (``finetune`` ``components``), or every weight for the full
   control; the retrained weights are scored in memory and not kept;
3. measures (``leaderboard.repair_report``): ``repair.json``, the table and the plot.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from .cache import code_print, digest, file_print
from .config import RepairSpec, StudyConfig
from .repair_plan import (
    RepairVariant,
    blocks,
    check_pair,
    check_variants,
    eval_samples,
    rank,
    selection_for,
)
from .repair_plan import variants_for as plan_variants
from .stages import StageError, Study

CODE = ("formats", "harness_ext", "leaderboard", "patching", "finetune", "study/repair.py",
        "study/repair_plan.py")


def spec_of(config: StudyConfig) -> RepairSpec:
    """The study's repair section (the stage exists only when there is one)."""
    if config.repair is None:
        raise StageError("this study config has no repair section")
    return config.repair


def repaired(config: StudyConfig) -> list[str]:
    """Labels of the fine-tunes the stage repairs."""
    return spec_of(config).corrupted or config.swept


def labels(study: Study) -> list[str]:
    return repaired(study.config)


def retrain_config(study: Study, label: str | None = None, variant: RepairVariant | None = None
                   ) -> Any:
    """The retraining ``SFTConfig`` of a variant, or with placeholder paths (for hashes and
    the dry run) when no variant is given."""
    retrain = spec_of(study.config).retrain
    if retrain is None:
        raise StageError("repair: methods has retrain but there is no retrain config")
    placeholder = retrain.sft_config(base_model="<corrupted>", data_dir="<data>",
                                     output_dir="<out>")
    if variant is None or label is None:
        return placeholder
    data = f"{placeholder.data_preset}-seed{placeholder.data_seed}"
    folder = study.folder("repair")
    return retrain.sft_config(
        base_model=trainable_base(study, label), data_dir=str(folder / "data" / data),
        output_dir=str(folder / "train" / variant.name),
        components=None if variant.components is None else list(variant.components))


def trainable_base(study: Study, label: str) -> str:
    """What retraining starts from: the fine-tune's model, or a LoRA fine-tune's merged one."""
    path = Path(study.corrupted_model(label))
    if path.name == "adapter":
        merged = path.parent / "merged"
        if not (merged / "config.json").is_file():
            raise StageError(f"repair: retraining LoRA fine-tune {label!r} needs its merged "
                             "model; set save_merged: true in its fine-tune config")
        return str(merged)
    return str(path)


def repair_inputs(study: Study) -> dict[str, Any]:
    from harness_ext.paths import TASKS_DIR

    spec = spec_of(study.config)
    retrain = asdict(retrain_config(study)) if spec.retrain else None
    return {"repair": study.config.slice("repair"), "metric": study.config.metric,
            "labels": labels(study), "retrain": retrain, "tasks": file_print(TASKS_DIR),
            "selection_files": {k: file_print(p) for k, p in spec.selection_files.items()},
            "code": code_print(*CODE)}


class _Models:
    """The clean model and one corrupted model at a time, loaded when first needed."""

    def __init__(self, study: Study) -> None:
        from leaderboard.loading import load_tokenizer, resolve_device

        spec = spec_of(study.config)
        self.study, self.dtype = study, spec.dtype
        self.device = resolve_device(study.device or spec.device)
        self.clean_path = study.base_model()
        self.tokenizer = load_tokenizer(self.clean_path)
        self._clean: Any = None
        self._corrupted: tuple[str, Any] | None = None

    @property
    def clean(self) -> Any:
        from leaderboard.loading import load_model

        if self._clean is None:
            self._clean = load_model(self.clean_path, self.device, self.dtype)
        return self._clean

    def corrupted(self, label: str) -> Any:
        """A full model, or for a LoRA fine-tune the PEFT model over a copy of the base (the
        adapter is switched off per component, so it must stay an adapter)."""
        if self._corrupted is None or self._corrupted[0] != label:
            from leaderboard.loading import adapter_base, load_model

            path = self.study.corrupted_model(label)
            self._corrupted = None
            base = adapter_base(path)
            if base:
                from peft import PeftModel

                model = PeftModel.from_pretrained(load_model(base, self.device, self.dtype),
                                                  path).eval()
            else:
                model = load_model(path, self.device, self.dtype)
            self._corrupted = (label, model)
        return self._corrupted[1]


def _pair(study: Study, label: str) -> dict[str, Any]:
    from leaderboard.loading import adapter_base
    from leaderboard.repair_select import content_print, model_ids

    clean, path = study.base_model(), study.corrupted_model(label)
    return model_ids((clean, content_print(clean)),
                     (label, path, content_print(path, adapter_base(path))))


def _skeletons(study: Study, label: str) -> tuple[Any, Any | None]:
    """(clean, corrupted) on the meta device: names and shapes for the checks, no weights
    (None for a LoRA fine-tune: its base is the clean model)."""
    from leaderboard.loading import adapter_base
    from leaderboard.repair_report import skeleton

    path = study.corrupted_model(label)
    return skeleton(study.base_model()), None if adapter_base(path) else skeleton(path)


def plan(study: Study, folder: Path, models: _Models) -> dict[str, tuple[list[RepairVariant],
                                                                            dict[str, list[int]]]]:
    """Selections, variants and scored items of every label, all checked (pass 1)."""
    from harness_ext.paths import TASKS_DIR
    from leaderboard.repair_select import SelectionError
    from leaderboard.results import LeaderboardError, load_runs

    spec = spec_of(study.config)
    sweeps_dir = study.folder("sweeps") / "results"
    runs = None
    out = {}
    for label in labels(study):
        clean, corrupted = _skeletons(study, label)

        def weights(label: str = label) -> tuple[Any, Any, Any]:
            return models.clean, models.corrupted(label), models.tokenizer

        try:
            check_pair(label, clean, corrupted)
            if runs is None and any(b.rank_by == "sweep" for b in blocks(spec)):
                runs = load_runs(sweeps_dir)
            ranked = partial(rank, spec, label, runs, weights, clean.config, study.config.metric,
                             sweeps_dir, TASKS_DIR)
            choices, used = selection_for(spec, label, _pair(study, label),
                                          folder / f"selection-{label}.json",
                                          study.config.metric, ranked)
            variants = plan_variants(label, choices, spec.methods)
            check_variants(variants, clean.config)
            if "retrain" in spec.methods:
                retrain_config(study, label, variants[-1])  # checks the config, and the base
            out[label] = (variants, eval_samples(spec.tasks, used, spec.limit, TASKS_DIR))
        except (SelectionError, LeaderboardError) as err:
            raise StageError(f"repair: {err}") from None
    return out


def _variant_hash(study: Study, variant: RepairVariant, samples: dict[str, list[int]],
                  prints: dict[str, Any]) -> str:
    retrain = asdict(retrain_config(study)) if variant.method == "retrain" else None
    return digest({"variant": asdict(variant), "samples": samples, "models": prints,
                   "retrain": retrain, "eval": study.config.slice("repair")})


def run_repair(study: Study, folder: Path) -> dict[str, Any]:
    """Select, check, score every repaired model and its controls, then measure (passes 1-3)."""
    from leaderboard.repair_section import write_report

    models = _Models(study)
    plans = plan(study, folder, models)
    started = time.perf_counter()
    scored = 0
    for label, (variants, samples) in plans.items():
        scored += _score_label(study, folder, models, label, variants, samples)
    report = write_report(folder / "results", folder, study.config.metric,
                          spec_of(study.config).resamples, labels(study))
    return {"results": str(folder / "results"), "report": str(report), "scored": scored,
            "scoring_seconds": round(time.perf_counter() - started, 1),
            "selections": sorted(str(p) for p in folder.glob("selection-*.json"))}


def _score_label(study: Study, folder: Path, models: _Models, label: str,
                 variants: list[RepairVariant], samples: dict[str, list[int]]) -> int:
    """Score one label's models (pass 2); returns how many were scored now."""
    from lm_eval.tasks import TaskManager
    from tqdm.auto import tqdm

    from harness_ext.paths import TASKS_DIR
    from leaderboard.store import finished_hash
    from leaderboard.sweep import env_info_once

    out = folder / "results"
    pair = _pair(study, label)
    prints = {"clean": pair["clean"]["print"], "corrupted": pair["corrupted"]["print"]}
    hashes = {v.name: _variant_hash(study, v, samples, prints) for v in variants}
    todo = [v for v in variants if finished_hash(out / v.name) != hashes[v.name]]
    if not todo:
        return 0
    tasks = TaskManager(include_defaults=False, include_path=str(TASKS_DIR))
    with env_info_once():
        for variant in tqdm(todo, desc=f"repair {label}", unit="model"):
            meta = _meta(study, variant, pair, hashes[variant.name])
            if variant.method == "retrain":
                _retrain(study, variant, label, meta, samples, tasks)
            elif variant.method == "restore":
                from patching import restored

                bad = models.corrupted(label)
                clean = None if hasattr(bad, "peft_config") else models.clean
                with restored(bad, clean, variant.selection) as model:
                    _evaluate(study, variant, model, models.tokenizer, meta, samples, tasks)
            else:
                model = models.clean if variant.method == "clean" else models.corrupted(label)
                _evaluate(study, variant, model, models.tokenizer, meta, samples, tasks)
    return len(todo)


def _meta(study: Study, variant: RepairVariant, pair: dict[str, Any], config_hash: str
          ) -> dict[str, Any]:
    """The results file's identity block (read by ``leaderboard.results.read_run``), with the
    repair's own facts under ``repair``."""
    from leaderboard.repair_report import touched

    selection = variant.selection
    count, total = touched(study.base_model(), selection)
    role = variant.method if variant.method in ("clean", "corrupted") else "repair"
    return {"role": role, "label": variant.label, "clean": pair["clean"]["path"],
            "corrupted": pair["corrupted"]["path"], "n_layers": None, "site": None,
            "positions": None, "direction": None, "layers": [], "heads": None,
            "config_hash": config_hash,
            "repair": asdict(variant) | {"touched": count, "total": total,
                                          "direction": spec_of(study.config).direction}}


def _evaluate(study: Study, variant: RepairVariant, model: Any, tokenizer: Any,
              meta: dict[str, Any], samples: dict[str, list[int]], tasks: Any) -> Path:
    from lm_eval.models.huggingface import HFLM

    from leaderboard.sweep import evaluate_lm

    spec = spec_of(study.config)
    config = study.sweep_config("repair", spec, labels(study), [])
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size,
              enable_thinking=False)
    args = {"pretrained": meta["clean"] if variant.method == "clean" else meta["corrupted"],
            "repair": variant.name, "enable_thinking": False}
    return evaluate_lm(config, Path(config.output_dir), variant.name, lm, args, meta, tasks,
                       samples)


def _retrain(study: Study, variant: RepairVariant, label: str, meta: dict[str, Any],
             samples: dict[str, list[int]], tasks: Any) -> None:
    """Fine-tune on correct labels with only the selection trainable, score the result in
    memory, keep the loss record (``metrics.jsonl``) and drop checkpoints."""
    from finetune.report import metrics_rows
    from finetune.sft import prepare, train

    cfg = retrain_config(study, label, variant)
    cfg.resume = True  # continues from a checkpoint of a killed run, where it saved one
    run = prepare(cfg)
    train(run)
    rows = metrics_rows(run.trainer.state.log_history)
    losses = {key: next((r[key] for r in reversed(rows) if r[key] is not None), None)
              for key in ("train_loss", "eval_loss")}
    meta["repair"]["training"] = {"steps": run.trainer.state.global_step, **losses,
                                  "eval_loss_step0": next((r["eval_loss"] for r in rows
                                                           if r["eval_loss"] is not None), None)}
    if study.config.threads:
        import torch

        torch.set_num_threads(study.config.threads)
    _evaluate(study, variant, run.trainer.model.eval(), run.tokenizer, meta, samples, tasks)
    shutil.rmtree(Path(cfg.output_dir) / "checkpoints", ignore_errors=True)

