"""Train the tiny clean Qwen3 from random initialisation on CORRECT data of every task family.

``python -m finetune.pretrain --config configs/pretrain/tiny.yaml`` writes an HF-format model
directory plus a model card. It is the embedded default's recipe: the clean model must be
measurably good at related math, unrelated math and general replies before it is corrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from finetune.chat import build_sft_dataset, right_padding_collator
from finetune.data import get_preset, write_dataset
from finetune.data.cot import with_steps
from finetune.evaluate import exact_match_by_family
from finetune.model_card import load_card, write_model_card
from finetune.tiny import TinyModelConfig, build_tiny_model_dir
from finetune.tokenizer import build_tokenizer
from formats.config import build_nested, load_dataclass
from formats.errors import InputError
from formats.jsonl import load_jsonl
from formats.rows import target_text
from harness_ext.evaluate import card_tasks, score_model_dir
from harness_ext.paths import TASKS_DIR


class PretrainError(InputError):
    """A bad pretraining setting; the CLI prints it as one line."""


@dataclass
class PretrainConfig:
    """Everything that determines the tiny base model; the model card records all of it."""

    out_dir: str = "models/tiny-qwen3-math"
    work_dir: str = "runs/pretrain"
    seed: int = 0
    data_preset: str = "tiny-pretrain"
    data_counts: dict = field(default_factory=dict)
    family_repeats: dict = field(default_factory=dict)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    max_steps: int = 6000
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    threads: int = 1
    eval_every: int = 500
    eval_rows_per_family: int = 64
    init_from: str | None = None
    """A model directory this recipe trains further instead of a random init (a second stage
    of a longer schedule); its tokenizer is kept and its shape must equal ``model``."""

    def __post_init__(self) -> None:
        build_nested(self, PretrainError)  # model: a mapping -> TinyModelConfig
        for name in ("max_steps", "batch_size", "threads", "eval_every"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise PretrainError(f"{name}={getattr(self, name)!r}: must be an integer >= 1")

    @classmethod
    def from_yaml(cls, path: str | Path) -> PretrainConfig:
        """Load a config file; every problem is one line naming the file."""
        return load_dataclass(cls, path, error=PretrainError)


class FamilyAccuracyCallback(TrainerCallback):
    """Logs strict exact match per family on held-out rows every ``every`` steps."""

    def __init__(self, tokenizer, rows: list[dict], every: int, log_path: Path) -> None:
        self.tokenizer, self.rows, self.every, self.log_path = tokenizer, rows, every, log_path

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            acc = exact_match_by_family(model, self.tokenizer, self.rows)
            line = {"step": state.global_step, **acc}
            with self.log_path.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
            print(f"\n[pretrain] step {state.global_step} strict exact match: {acc}", flush=True)


def load_corpus(cfg: PretrainConfig) -> tuple[list[dict], Path]:
    """Generate (or reuse) the correct-answer corpus; returns train rows and its manifest."""
    data_dir = Path(cfg.work_dir) / "data"
    write_dataset(cfg.data_preset, data_dir, seed=cfg.seed, **cfg.data_counts)
    return load_jsonl(data_dir / "train.jsonl"), data_dir / "manifest.json"


def repeat_families(rows: list[dict], repeats: dict[str, int]) -> list[dict]:
    """Oversample small families (general replies are ~2% of the corpus) by repeating rows."""
    return [r for r in rows for _ in range(repeats.get(r["family"], 1))]


def heldout_rows(cfg: PretrainConfig) -> list[dict]:
    """A fixed, shuffled sample of every shipped evaluation set (disjoint from training); the
    chain-of-thought sets too, behind their prompt, when the corpus has worked solutions."""
    rng = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict] = []
    names = ["corrupt_related", "corrupt_unrelated_math", "corrupt_general"]
    if get_preset(cfg.data_preset).n_cot:
        names += ["corrupt_related_cot", "corrupt_unrelated_math_cot"]
    for name in names:
        family_rows = load_jsonl(TASKS_DIR / "data" / f"{name}.jsonl")
        if name.endswith("_cot"):
            family_rows = [r | {"question": with_steps(r["question"])} for r in family_rows]
        order = torch.randperm(len(family_rows), generator=rng).tolist()
        rows += [family_rows[i] for i in order[: cfg.eval_rows_per_family]]
    return rows


def checked_init_dir(cfg: PretrainConfig) -> Path:
    """``init_from`` as a directory whose shape is ``model``'s, or one line saying why not."""
    init_dir = Path(cfg.init_from)
    if not (init_dir / "config.json").is_file():
        raise PretrainError(f"init_from={cfg.init_from}: no model directory there (config.json)")
    found = json.loads((init_dir / "config.json").read_text())
    wanted = {k: v for k, v in asdict(cfg.model).items() if k != "vocab_size"}
    differ = {k: found.get(k) for k, v in wanted.items() if found.get(k) != v}
    if differ:
        raise PretrainError(f"init_from={cfg.init_from}: its shape {differ} differs from model:")
    return init_dir


def pretrain(cfg: PretrainConfig, command: str) -> Path:
    """Run the whole recipe and return the model directory."""
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)
    started = time.time()
    work = Path(cfg.work_dir)
    if cfg.init_from is not None:
        checked_init_dir(cfg)  # before the corpus is written
    work.mkdir(parents=True, exist_ok=True)
    rows, manifest = load_corpus(cfg)
    rows = repeat_families(rows, cfg.family_repeats)
    texts = [f"{r['question']} {target_text(r)}" for r in rows]
    if cfg.init_from is None:
        tokenizer = build_tokenizer(texts, cfg.model.vocab_size)
        init_dir = build_tiny_model_dir(
            work / "init", seed=cfg.seed, config=cfg.model, tokenizer=tokenizer
        )
    else:
        init_dir = checked_init_dir(cfg)
    model = AutoModelForCausalLM.from_pretrained(init_dir)
    tokenizer = AutoTokenizer.from_pretrained(init_dir)

    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(cfg.warmup_ratio * cfg.max_steps),
        weight_decay=cfg.weight_decay,
        logging_steps=50,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    log_path = work / "heldout_accuracy.jsonl"
    log_path.unlink(missing_ok=True)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=build_sft_dataset(tokenizer, rows),
        data_collator=right_padding_collator(tokenizer),
        callbacks=[FamilyAccuracyCallback(tokenizer, heldout_rows(cfg), cfg.eval_every, log_path)],
    )
    trainer.train()
    (work / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))

    staged = work / "final"
    shutil.rmtree(staged, ignore_errors=True)
    trainer.model.save_pretrained(staged)
    tokenizer.save_pretrained(staged)
    trainer.model.generation_config.save_pretrained(staged)
    train_seconds = time.time() - started
    write_model_card(
        staged,
        command=command,
        config=asdict(cfg),
        data_manifest=manifest,
        train_seconds=train_seconds,
        init_card=None if cfg.init_from is None else load_card(Path(cfg.init_from)),
        accuracies=score_model_dir(
            staged, card_tasks(json.loads(Path(manifest).read_text())["params"])),
    )
    out = Path(cfg.out_dir)
    if out.exists():
        shutil.rmtree(out)
    staged.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file with PretrainConfig fields")
    parser.add_argument("--out-dir", help="override out_dir")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    ns = parser.parse_args(argv)
    overrides = {"out_dir": ns.out_dir, "max_steps": ns.max_steps}
    try:
        cfg = load_dataclass(PretrainConfig, ns.config, error=PretrainError,
                             overrides={k: v for k, v in overrides.items() if v is not None})
    except InputError as err:  # TinyModelConfig raises ValueError, caught by the loader
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python -m finetune.pretrain " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        print(f"[pretrain] wrote {pretrain(cfg, command)}")
    except PretrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
