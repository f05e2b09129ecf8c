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
from .config import StudyConfig
from .repair_plan import (
    RepairVariant,
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


def repaired(config: StudyConfig) -> list[str]:
    """Labels of the fine-tunes the stage repairs."""
    return config.repair.corrupted or config.swept  # type: ignore[union-attr]


def labels(study: Study) -> list[str]:
    return repaired(study.config)


def retrain_config(study: Study, label: str | None = None, variant: RepairVariant | None = None,
                   symbolic: bool = False) -> Any:
    """The retraining ``SFTConfig`` of a variant (placeholders when ``symbolic``, for hashing)."""
    spec = study.config.repair.retrain  # type: ignore[union-attr]
    if symbolic:
        return spec.sft_config(base_model="<corrupted>", data_dir="<data>", output_dir="<out>")
    cfg = spec.sft_config(base_model="<corrupted>", data_dir="<data>", output_dir="<out>")
    folder = study.folder("repair")
    return spec.sft_config(
        base_model=trainable_base(study, label),  # type: ignore[arg-type]
        data_dir=str(folder / "data" / f"{cfg.data_preset}-seed{cfg.data_seed}"),
        output_dir=str(folder / "train" / variant.name),  # type: ignore[union-attr]
        components=None if variant.components is None else list(variant.components))  # type: ignore[union-attr]


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

    spec = study.config.repair
    retrain = asdict(retrain_config(study, symbolic=True)) if spec.retrain else None  # type: ignore[union-attr]
    return {"repair": study.config.slice("repair"), "metric": study.config.metric,
            "labels": labels(study), "retrain": retrain, "tasks": file_print(TASKS_DIR),
            "selection_files": {k: file_print(p) for k, p in spec.selection_files.items()},  # type: ignore[union-attr]
            "code": code_print(*CODE)}


class _Models:
    """The clean model and one corrupted model at a time, loaded when first needed."""

    def __init__(self, study: Study) -> None:
        from leaderboard.loading import load_tokenizer, resolve_device

        spec = study.config.repair
        self.study, self.dtype = study, spec.dtype  # type: ignore[union-attr]
        self.device = resolve_device(study.device or spec.device)  # type: ignore[union-attr]
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
            if adapter_base(path):
                from peft import PeftModel

                base = load_model(adapter_base(path), self.device, self.dtype)  # type: ignore[arg-type]
                model = PeftModel.from_pretrained(base, path).eval()
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

    spec = study.config.repair
    sweeps_dir = study.folder("sweeps") / "results"
    runs = None
    out = {}
    for label in labels(study):
        clean, corrupted = _skeletons(study, label)

        def weights(label: str = label) -> tuple[Any, Any, Any]:
            return models.clean, models.corrupted(label), models.tokenizer

        try:
            check_pair(label, clean, corrupted)
            if runs is None and any(b.get("rank_by", "sweep") == "sweep" for b in spec.select):  # type: ignore[union-attr]
                runs = load_runs(sweeps_dir)
            ranked = partial(rank, spec, label, runs, weights, clean.config, study.config.metric,
                             sweeps_dir, TASKS_DIR)
            choices, used = selection_for(spec, label, _pair(study, label),  # type: ignore[arg-type]
                                          folder / f"selection-{label}.json",
                                          study.config.metric, ranked)
            variants = plan_variants(label, choices, spec.methods)  # type: ignore[union-attr]
            check_variants(variants, clean.config)
            if "retrain" in spec.methods:  # type: ignore[union-attr]
                retrain_config(study, label, variants[-1])  # checks the config, and the base
            out[label] = (variants, eval_samples(spec.tasks, used, spec.limit, TASKS_DIR))  # type: ignore[union-attr]
        except (SelectionError, LeaderboardError) as err:
            raise StageError(f"repair: {err}") from None
    return out


def _variant_hash(study: Study, variant: RepairVariant, samples: dict[str, list[int]],
                  prints: dict[str, Any]) -> str:
    retrain = asdict(retrain_config(study, symbolic=True)) if variant.method == "retrain" else None
    return digest({"variant": asdict(variant), "samples": samples, "models": prints,
                   "retrain": retrain, "eval": study.config.slice("repair")})


def run_repair(study: Study, folder: Path) -> dict[str, Any]:
    """Select, check, score every repaired model and its controls, then measure (passes 1-3)."""
    from leaderboard.repair_report import write_report

    models = _Models(study)
    plans = plan(study, folder, models)
    started = time.perf_counter()
    scored = 0
    for label, (variants, samples) in plans.items():
        scored += _score_label(study, folder, models, label, variants, samples)
    spec = study.config.repair
    report = write_report(folder / "results", folder, study.config.metric,
                          spec.resamples, labels(study))  # type: ignore[union-attr]
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
    todo = [v for v in variants if finished_hash(out / v.name) != _variant_hash(
        study, v, samples, prints)]
    if not todo:
        return 0
    tasks = TaskManager(include_defaults=False, include_path=str(TASKS_DIR))
    with env_info_once():
        for variant in tqdm(todo, desc=f"repair {label}", unit="model"):
            meta = _meta(study, variant, pair, _variant_hash(study, variant, samples, prints))
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
                                          "direction": study.config.repair.direction}}  # type: ignore[union-attr]


def _evaluate(study: Study, variant: RepairVariant, model: Any, tokenizer: Any,
              meta: dict[str, Any], samples: dict[str, list[int]], tasks: Any) -> Path:
    from lm_eval.models.huggingface import HFLM

    from leaderboard.sweep import evaluate_lm

    spec = study.config.repair
    config = study.sweep_config("repair", spec, labels(study), [])  # type: ignore[arg-type]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size,  # type: ignore[union-attr]
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


def dry_run_lines(study: Study, n_layers: int, n_heads: int) -> tuple[list[str], int]:
    """The repair plan offline: every select block's k checked against the components there
    are and the sweep variants that rank them; how many models are scored and retrained.
    Returns printable lines and the number of scored models."""
    from types import SimpleNamespace

    from leaderboard.repair_select import SelectionError, check_sizes
    from leaderboard.variants import expand
    from patching import SITES
    from patching.repair import components_of

    from .repair_plan import blocks

    spec = study.config.repair
    shape = SimpleNamespace(num_hidden_layers=n_layers, num_attention_heads=n_heads)
    cfg = study.config
    swept = expand(study.sweep_config("sweeps", cfg.sweeps, cfg.swept, cfg.sweeps.patches),
                   n_layers, n_heads)
    choices = 0
    for label in labels(study):
        for block in blocks(spec):  # type: ignore[arg-type]
            pool = len(components_of(SITES[block.site].weights, shape))
            ranked = pool if block.rank_by == "attribution" else len({
                (v.layers, v.heads) for v in swept
                if v.label == label and v.site == block.site and v.direction == spec.direction  # type: ignore[union-attr]
                and len(v.layers) == 1 and not (SITES[v.site].block_output
                                                and v.layers[0] == n_layers - 1)})
            for k in block.k:
                try:
                    check_sizes(block.site, k, ranked, pool, block.rank_by)
                except SelectionError as err:
                    raise StageError(f"repair {label}: {err} (direction "
                                     f"{spec.direction})") from None  # type: ignore[union-attr]
            choices += len(block.k)
    per_choice = 2 + len(spec.random_seeds)  # type: ignore[union-attr]
    methods = spec.methods  # type: ignore[union-attr]
    retrained = (choices * per_choice + len(labels(study))) if "retrain" in methods else 0
    restored = choices * per_choice if "restore" in methods else 0
    scored = 2 * len(labels(study)) + restored + retrained
    lines = [f"repair: {', '.join(labels(study))}; selections "
             + ", ".join(f"{b.site} top {b.k} by {b.rank_by}" for b in blocks(spec))  # type: ignore[arg-type]
             + f" ({spec.direction}); controls: {len(spec.random_seeds)} random draws, the "  # type: ignore[union-attr]
             f"lowest ranked{', retraining every weight' if retrained else ''}",
             f"    {scored} models scored ({restored} restored, {retrained} retrained, "
             f"{2 * len(labels(study))} baselines), tasks {', '.join(spec.tasks)}, limit "  # type: ignore[union-attr]
             f"{spec.limit}"]  # type: ignore[union-attr]
    if retrained:
        sft = retrain_config(study, symbolic=True)
        steps = f"{sft.max_steps} steps" if sft.max_steps else f"{sft.epochs} epochs"
        lines.append(f"    retraining: {steps}, lr {sft.learning_rate:g}, batch "
                     f"{sft.effective_batch}, data preset {sft.data_preset} (correct labels); "
                     "weights scored in memory, not kept")
    return lines, scored
