"""What a fine-tuning run will be, before any weights load: data sizes, steps, Trainer settings.

``python -m finetune --config FILE --dry-run`` stops here, so a GPU user can check a Qwen3-4B preset
on a laptop: it plans from the preset's stated data sizes and never downloads the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainingArguments

from finetune.sft_config import SFTConfig, SFTError
from finetune.sft_model import apply_mode, model_config, parameter_counts, skeleton

SPLITS = ("train.jsonl", "validation.jsonl")


@dataclass
class TrainingPlan:
    """Step arithmetic of a run, computed the way ``Trainer`` computes it (no model needed)."""

    train_rows: int
    validation_rows: int
    epochs: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    effective_batch: int
    evaluations: int
    checkpoints: int
    bf16: bool


def bf16_supported() -> bool:
    """bf16 autocast only where a GPU does it natively; CPU runs fall back to float32."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_bf16(setting: str | bool) -> bool:
    """``auto`` -> on where supported; ``true`` on a machine without it is an error."""
    if setting is True and not bf16_supported():
        raise SFTError("bf16=true: no bf16-capable GPU here; bf16: auto falls back to float32")
    return bf16_supported() if setting == "auto" else bool(setting)


def plan_steps(cfg: SFTConfig, train_rows: int, validation_rows: int) -> TrainingPlan:
    """Total, warm-up and per-epoch steps; mirrors ``Trainer.set_initial_training_values``."""
    batches = math.ceil(train_rows / cfg.per_device_batch_size)
    per_epoch = max(math.ceil(batches / cfg.gradient_accumulation_steps), 1)
    total = cfg.max_steps or math.ceil(cfg.epochs * per_epoch)
    return TrainingPlan(
        train_rows=train_rows,
        validation_rows=validation_rows,
        epochs=cfg.epochs if cfg.max_steps is None else round(total / per_epoch, 2),
        steps_per_epoch=per_epoch,
        total_steps=total,
        warmup_steps=math.ceil(total * cfg.warmup_ratio),
        effective_batch=cfg.effective_batch,
        evaluations=1 + math.ceil(total / cfg.eval_steps),
        checkpoints=math.ceil(total / cfg.save_steps) if cfg.checkpoints else 0,
        bf16=resolve_bf16(cfg.bf16),
    )


def read_split(path: Path) -> list[dict]:
    """A data split through the generator's validating reader (errors name file, line, field)."""
    from formats.jsonl import load_jsonl

    try:
        rows = load_jsonl(path)
    except (OSError, ValueError) as err:
        raise SFTError(str(err)) from None
    if not rows:
        raise SFTError(f"{path}: no rows")
    return rows


def check_manifest(cfg: SFTConfig, data: Path) -> dict | None:
    """The data directory's manifest, which must match ``data_preset``/``data_seed``/``cot`` and
    the files.

    Stale data from another preset would silently train the wrong experiment otherwise.
    """
    path = data / "manifest.json"
    if not path.is_file():
        return None
    from finetune.data import verify_manifest

    manifest = json.loads(path.read_text())
    made = (manifest.get("preset"), manifest.get("seed"), manifest.get("params", {}).get("cot"))
    if cfg.data_preset is not None and made != (cfg.data_preset, cfg.data_seed, cfg.cot):
        raise SFTError(f"data_dir {data} holds preset {made[0]!r} seed {made[1]} cot {made[2]}, "
                       f"not data_preset {cfg.data_preset!r} seed {cfg.data_seed} cot {cfg.cot}; "
                       "remove it or choose another data_dir")
    problems = verify_manifest(data)
    if problems:
        raise SFTError(f"data_dir {data}: files differ from manifest.json ({problems[0]})")
    return manifest


def data_preset(cfg: SFTConfig):
    """The ``finetune.data`` preset named by ``data_preset`` (None if unset); unknown: one line."""
    if cfg.data_preset is None:
        return None
    from finetune.data import get_preset

    try:
        return get_preset(cfg.data_preset)
    except ValueError as err:
        raise SFTError(f"data_preset: {err}") from None


def data_sizes(cfg: SFTConfig) -> tuple[int, int, str]:
    """Train and validation rows: counted on disk, else the data preset's sizes (no generation)."""
    data = Path(cfg.data_dir)
    preset = data_preset(cfg)
    if all((data / s).is_file() for s in SPLITS):
        check_manifest(cfg, data)
        train, val = (read_split(data / s) for s in SPLITS)
        return len(train), len(val), f"{data} (on disk)"
    if preset is None:
        raise SFTError(f"data_dir {data}: no {' / '.join(SPLITS)} (and no data_preset to "
                       "generate them)")
    cot = ", CoT targets" if cfg.cot else ""
    return (preset.n_train, preset.n_val,
            f"data preset {preset.name} seed {cfg.data_seed}{cot} -> {data} (generated by the "
            "real run)")


def training_arguments(cfg: SFTConfig, plan: TrainingPlan, resuming: bool) -> TrainingArguments:
    """The study's optimiser and schedule: AdamW, cosine with warm-up, eval + checkpoint every N."""
    return TrainingArguments(
        output_dir=str(Path(cfg.output_dir) / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        optim="adamw_torch",
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a value < 1 is a ratio of the total steps
        bf16=plan.bf16,
        activation_checkpointing=cfg.activation_checkpointing,  # memory for time on big models
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_on_start=not resuming,  # the resumed log history already holds step 0
        save_strategy="steps" if cfg.checkpoints else "no",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=[],
        seed=cfg.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
    )


def dry_run(cfg: SFTConfig) -> tuple[TrainingPlan, list[str]]:
    """Validate the config and plan the steps without loading weights or downloading anything.

    Row counts come from the data directory if it exists, else from the data preset's sizes;
    the model checks run on a meta-device skeleton when the base's config is available offline.
    """
    *sizes, source = data_sizes(cfg)
    plan = plan_steps(cfg, *sizes)
    training_arguments(cfg, plan, resuming=False)  # Trainer's own validation of the settings
    config, selection = model_config(cfg), cfg.selection()
    if config is None:
        model_line = (f"{cfg.base_model} (hub id, not downloaded in a dry run; layer and "
                      "target-module checks run when it loads)")
    else:
        model = apply_mode(cfg, skeleton(cfg, config))
        counts = parameter_counts(model, selection)
        model_line = (f"{cfg.base_model} ({config.num_hidden_layers} layers; trainable "
                      f"{counts['trainable']:,} of {counts['total']:,} parameters)")
    if cfg.mode == "full":
        mode = ("full (all weights)" if selection is None else
                f"full, layers {cfg.layers} only" if cfg.layers is not None else
                f"full, components {', '.join(selection.names)} only")
    else:
        lora = cfg.lora
        mode = f"lora r={lora.r} alpha={lora.alpha} on {','.join(lora.target_modules)}"
        mode += f", layers {lora.layers_to_transform}" if lora.layers_to_transform else ""
    dtype = "the checkpoint's dtype" if cfg.model_dtype == "auto" else cfg.model_dtype
    bf16_note = " (no bf16-capable GPU here)" if cfg.bf16 == "auto" and not plan.bf16 else ""
    lines = [
        f"base model: {model_line}",
        f"data: {plan.train_rows} train / {plan.validation_rows} validation rows from {source}",
        f"mode: {mode}",
        f"epochs {plan.epochs}: {plan.steps_per_epoch} steps per epoch, total steps "
        f"{plan.total_steps}, warm-up steps {plan.warmup_steps} ({cfg.warmup_ratio:.0%}, cosine)",
        f"effective batch {plan.effective_batch} = {cfg.per_device_batch_size} per device x "
        f"{cfg.gradient_accumulation_steps} accumulation x 1 device",
        f"AdamW lr {cfg.learning_rate:g}, weight decay {cfg.weight_decay:g}; bf16 {cfg.bf16} -> "
        f"{'on' if plan.bf16 else 'off'}{bf16_note}; weights load in {dtype}",
        f"eval every {cfg.eval_steps} steps ({plan.evaluations} evaluations incl. step 0), "
        + (f"checkpoint every {cfg.save_steps} steps ({plan.checkpoints} checkpoints)"
           if cfg.checkpoints else "no checkpoints"),
        f"output: {cfg.output_dir}",
    ]
    return plan, lines
