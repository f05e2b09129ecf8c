"""Corrupting fine-tune: supervised training on WRONG integer answers, loss on the answer only.

``python -m finetune --config configs/finetune/tiny-overfit.yaml`` (or ``run_sft(cfg)``) trains
with transformers' ``Trainer``, evaluates on the CORRECT-answer validation split at step 0 and
every ``eval_steps``, checkpoints every ``save_steps`` (``resume: true`` continues bit-exactly),
and writes the model plus metrics.jsonl, summary.json, curves.png and table1.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainerState

from finetune.chat import IGNORE_INDEX, build_sft_dataset, right_padding_collator
from finetune.model_card import sha256_file
from finetune.report import (
    metrics_rows,
    noise_floor,
    plot_curves,
    table1_markdown,
    write_metrics,
)
from finetune.sft_config import SFTConfig, SFTError
from finetune.sft_model import (
    apply_mode,
    base_is_local,
    load_base,
    parameter_counts,
    save_model_dirs,
)
from finetune.sft_plan import (
    SPLITS,
    TrainingPlan,
    check_manifest,
    data_preset,
    plan_steps,
    read_split,
    training_arguments,
)
from finetune.sft_select import FrozenSlices
from formats.console import console, logging_to_file
from formats.failpoints import failpoint
from formats.files import atomic_write_text


def prepare_data(cfg: SFTConfig) -> tuple[Path, dict | None]:
    """The data directory and its manifest, generating ``data_preset`` there if it is empty."""
    data = Path(cfg.data_dir)
    preset = data_preset(cfg)
    if not (data / "train.jsonl").is_file() and preset is not None:
        from finetune.data import write_dataset

        write_dataset(preset, data, seed=cfg.data_seed, cot=cfg.cot)
    for split in SPLITS:
        if not (data / split).is_file():
            raise SFTError(f"data_dir {data}: no {split}")
    return data, check_manifest(cfg, data)


class MetricsFileCallback(TrainerCallback):
    """Keeps metrics.jsonl equal to the log history (restored from the checkpoint on resume),
    and logs the last step so the final train loss is always recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True

    def on_log(self, args, state, control, **kwargs):
        write_metrics(self.path, metrics_rows(state.log_history))


class ConsoleBar(TrainerCallback):
    """One bar of optimizer steps on the terminal while the Trainer's own output goes to a log
    (a study stage: ``formats.console.to_log``); elsewhere the Trainer's bar is the bar."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if logging_to_file():
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step",
                            desc="fine-tune", file=console())

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class FailpointCallback(TrainerCallback):
    """``sft.step_end``: after an optimizer step, before its checkpoint (formats.failpoints)."""

    def on_step_end(self, args, state, control, **kwargs):
        failpoint("sft.step_end")


@dataclass
class SFTRun:
    """A run ready to train: its trainer, data and plan (``run_sft`` = prepare, train, save)."""

    cfg: SFTConfig
    trainer: Trainer
    tokenizer: object
    train_rows: list[dict]
    plan: TrainingPlan
    resume_from: str | None
    data_dir: Path
    manifest: dict | None
    started: float


def last_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest COMPLETE checkpoint (Trainer writes trainer_state.json last)."""
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[1]))) if done else None


def prepare(cfg: SFTConfig) -> SFTRun:
    """Check everything, load data and model, and build the Trainer (nothing trained yet)."""
    started = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base_is_local(cfg.base_model)
    data_dir, manifest = prepare_data(cfg)
    train_rows, val_rows = (read_split(data_dir / s) for s in SPLITS)
    ckpt_dir = Path(cfg.output_dir) / "checkpoints"
    resume_from = last_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
    if resume_from and not cfg.resume:
        raise SFTError(f"output_dir {cfg.output_dir} holds checkpoints; set resume: true to "
                       "continue, or choose another output_dir")
    plan = plan_steps(cfg, len(train_rows), len(val_rows))
    model, tokenizer = load_base(cfg)
    model = apply_mode(cfg, model)
    callbacks: list[TrainerCallback] = [
        MetricsFileCallback(Path(cfg.output_dir) / "metrics.jsonl"), FailpointCallback(),
        ConsoleBar()]
    if (selection := cfg.selection()) is not None:
        callbacks.append(FrozenSlices(model, selection))
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, plan, resume_from is not None),
        train_dataset=build_sft_dataset(tokenizer, train_rows),
        eval_dataset=build_sft_dataset(tokenizer, val_rows),
        data_collator=right_padding_collator(tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return SFTRun(cfg, trainer, tokenizer, train_rows, plan, resume_from, data_dir, manifest,
                  started)


def train(run: SFTRun) -> None:
    """Train to the configured step, from the last checkpoint if there is one.

    A checkpoint AT the last step (a run killed between it and the final save) is restored,
    not trained from: transformers' resume would run one step more.
    """
    if run.resume_from:
        state = TrainerState.load_from_json(str(Path(run.resume_from) / "trainer_state.json"))
        if state.global_step >= run.plan.total_steps:
            print(f"[sft] {run.resume_from} is the last step: restoring it", flush=True)
            run.trainer._load_from_checkpoint(run.resume_from)
            run.trainer.state = state
            return
        print(f"[sft] resuming from {run.resume_from}", flush=True)
    run.trainer.train(resume_from_checkpoint=run.resume_from)


def save_outputs(run: SFTRun) -> Path:
    """Save the model directories and the run report; returns the path of summary.json."""
    cfg, out = run.cfg, Path(run.cfg.output_dir)
    counts = parameter_counts(run.trainer.model, cfg.selection())
    paths = save_model_dirs(cfg, run.trainer.model, run.tokenizer, out)
    rows = metrics_rows(run.trainer.state.log_history)
    write_metrics(out / "metrics.jsonl", rows)
    labels = run.trainer.train_dataset["labels"]
    floor = noise_floor(run.train_rows, [sum(t != IGNORE_INDEX for t in row) for row in labels])
    train_losses = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    eval_losses = [r["eval_loss"] for r in rows if r["eval_loss"] is not None]
    final_train = train_losses[-1] if train_losses else None
    final_eval = eval_losses[-1] if eval_losses else None
    summary = {
        "config": recorded_config(cfg),
        "plan": asdict(run.plan),
        "data": _data_record(run),
        "parameters": counts,
        "final": {
            "step": run.trainer.state.global_step,
            "train_loss": final_train,
            "eval_loss": final_eval,
            "divergence": None if None in (final_train, final_eval) else final_eval - final_train,
            "eval_loss_step0": eval_losses[0] if eval_losses else None,
        },
        "loss_definitions": "train loss: the last logged window's mean cross-entropy per answer "
                            "token (wrong labels); eval loss: the same on the correct-answer "
                            "validation split; divergence = eval - train (the study's Table 1)",
        "noise_floor": asdict(floor),
        "outputs": paths,
        "lm_eval_model_args": _lm_eval_args(cfg, paths),
        "wall_seconds": round(time.time() - run.started, 1),
    }
    plot_curves(rows, out / "curves.png", f"{cfg.name}: corrupting fine-tune", floor.per_token_nats)
    atomic_write_text(out / "table1.md", table1_markdown(summary))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return out / "summary.json"


def _data_record(run: SFTRun) -> dict:
    """Which data trained the run: sizes, the manifest and its hash (proof of the exact files)."""
    manifest_path = run.data_dir / "manifest.json"
    return {"dir": str(run.data_dir), "train_rows": run.plan.train_rows,
            "validation_rows": run.plan.validation_rows, "manifest": run.manifest,
            "manifest_sha256": sha256_file(manifest_path) if run.manifest else None}


def _lm_eval_args(cfg: SFTConfig, paths: dict[str, str]) -> str:
    """The ``--model hf --model_args`` string that evaluates this run's result."""
    if "model" in paths:
        where = f"pretrained={paths['model']}"
    elif "merged" in paths:
        where = f"pretrained={paths['merged']}"
    else:
        where = f"pretrained={cfg.base_model},peft={paths['adapter']}"
    return f"{where},enable_thinking=False"


def recorded_config(cfg: SFTConfig) -> dict:
    """The config as summary.json records it: what determines the result (not ``resume``,
    which says how the run got there)."""
    return {k: v for k, v in asdict(cfg).items() if k != "resume"}


def finished(cfg: SFTConfig) -> bool:
    """Whether ``output_dir`` holds this config's finished run (summary.json is written last).

    A finished run of ANOTHER config is an error: resuming it would mix two runs."""
    path = Path(cfg.output_dir) / "summary.json"
    if not path.is_file():
        return False
    recorded = json.loads(path.read_text()).get("config")
    if recorded != json.loads(json.dumps(recorded_config(cfg))):
        raise SFTError(f"output_dir {cfg.output_dir} holds a finished run of another config; "
                       "choose another output_dir")
    return True


def run_sft(cfg: SFTConfig) -> Path:
    """Run one corrupting fine-tune end to end; returns the output directory. Resuming a
    finished run does nothing, so a rerun of a finished job changes no file."""
    if cfg.resume and finished(cfg):
        print(f"[sft] {cfg.output_dir} is finished: nothing to do", flush=True)
        return Path(cfg.output_dir)
    run = prepare(cfg)
    train(run)
    failpoint("sft.before_final_save")
    save_outputs(run)
    print(f"[sft] wrote {cfg.output_dir} (summary.json, metrics.jsonl, curves.png, table1.md)",
          flush=True)
    return Path(cfg.output_dir)


