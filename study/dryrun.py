"""``--dry-run``: check the whole plan offline (paths, shapes, layer/head ranges, disk) and run
nothing, so a GPU-day study fails on a laptop in seconds rather than after the fine-tunes.

The model's shape comes from its ``config.json`` (a local dir, or the hub cache); a hub id that
is not cached is checked against the known Qwen3-4B shape, and the plan says so.
"""

from __future__ import annotations

import fnmatch
import math
import shutil
from dataclasses import asdict, dataclass

from formats.errors import InputError
from harness_ext.task_list import TaskListError, load_tasks

from .memory_plan import (
    describe,
    devices_here,
    gb,
    kv_bytes_per_token,
    new_tokens,
    params_and_dtype_bytes,
    placement,
    sweep_need,
)
from .stage_list import stage_list
from .stages import Study, baselines_backend

QWEN3_4B = {"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 128, "hidden_size": 2560, "intermediate_size": 9728,
            "vocab_size": 151936, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
QWEN3_8B = {"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 128, "hidden_size": 4096, "intermediate_size": 12288,
            "vocab_size": 151936, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
KNOWN_SHAPES = {"qwen3-4b": ("Qwen3-4B", QWEN3_4B), "qwen3-8b": ("Qwen3-8B", QWEN3_8B)}
"""Shapes checked offline when a hub id is not cached (the study's base model, the judge)."""
SAMPLE_BYTES = 2048  # one logged lm-eval sample (doc, prompt, reply, metrics), measured ~1-2 KB


class PlanError(InputError):
    """The plan cannot run as configured; one line."""


@dataclass
class ModelFacts:
    """What the plan needs to know about the base model."""

    source: str
    layers: int
    heads: int
    params: int
    dtype_bytes: int
    kv_per_token: int  # KV-cache bytes of one token, every layer


def _facts(config: object, source: str) -> ModelFacts:
    """Layers, heads and parameter count."""
    params, size = params_and_dtype_bytes(config)
    return ModelFacts(source, config.num_hidden_layers, config.num_attention_heads,  # type: ignore[attr-defined]
                      params, size, kv_bytes_per_token(config, size))


def model_facts(name: str, hint: str = "", role: str = "base model") -> ModelFacts:
    """Shape and size from the local dir or hub cache, else a known shape (``KNOWN_SHAPES``)."""
    from transformers import AutoConfig, Qwen3Config

    from finetune.sft_config import SFTError
    from finetune.sft_model import base_is_local

    try:
        local = base_is_local(name)
    except SFTError as err:
        raise PlanError(f"{err}{hint}") from None
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
        source = f"{name}/config.json" if local else f"{name} (hub cache)"
    except (OSError, ValueError):
        known = next((v for k, v in KNOWN_SHAPES.items() if k in name.lower()), None)
        if local or known is None:
            raise PlanError(f"{role} {name}: no readable config.json locally or in the hub "
                            f"cache, and its shape is not known offline{hint}") from None
        config = Qwen3Config(**known[1])
        source = (f"{name} is not in the local hub cache: checked against the known {known[0]} "
                  "shape")
    return _facts(config, source)


def _docs_read(tasks: list[str], limit: int | float | None) -> dict[str, tuple[int, int]]:
    """Per task: (docs read, replies per doc): its docs capped by ``limit`` (lm-eval reads
    the first ones), and its ``repeats`` (the emergent-misalignment tasks sample several
    replies per question)."""
    read = {}
    for name, task in load_tasks(tasks).items():
        rows = len(task.eval_docs)
        cap = rows if limit is None else (math.ceil(limit * rows) if limit < 1 else int(limit))
        read[name] = (min(rows, cap), task.config.repeats or 1)
    return read


def _task_rows(tasks: list[str], limit: int | float | None) -> int:
    """Replies generated per variant over ``tasks``."""
    return sum(docs * repeats for docs, repeats in _docs_read(tasks, limit).values())


def finetune_lines(study: Study, facts: ModelFacts, base_ready: bool) -> tuple[list[str], float]:
    """Each fine-tune's own dry run (its steps only while the base model is still to be built),
    and the disk its outputs and checkpoints take."""
    from finetune.sft_config import SFTError
    from finetune.sft_plan import data_sizes, dry_run, plan_steps

    lines, disk = [], 0.0
    model_bytes = facts.params * facts.dtype_bytes
    for label, model in study.config.models.items():
        cfg = study.sft_config(label)
        try:
            if base_ready:
                plan, detail = dry_run(cfg)
            else:
                *sizes, source = data_sizes(cfg)
                plan = plan_steps(cfg, *sizes)
                detail = [f"{cfg.mode} fine-tune of the base the base stage builds: "
                          f"{plan.total_steps} steps, data {source}"]
        except SFTError as err:
            raise PlanError(f"finetune {label}: {err}") from None
        kept = min(plan.checkpoints, cfg.save_total_limit or plan.checkpoints)
        if cfg.mode == "full":  # weights + AdamW's two moments per weight, in the weights' dtype
            out, ckpt = model_bytes, 3 * model_bytes
        else:  # an adapter is ~1% of the model; its merged copy is a whole model
            out, ckpt = model_bytes * (0.01 + cfg.save_merged), 0.03 * model_bytes
        disk += out + kept * ckpt
        seed = "" if model.seed is None else f", seed {model.seed}"
        lines += [f"finetune {label} ({model.spec.config}{seed}):",
                  *[f"    {line}" for line in detail],
                  f"    disk: {gb(out)} model + {kept} kept checkpoint(s) x {gb(ckpt)}"]
    return lines, disk


def eval_lines(study: Study, facts: ModelFacts) -> tuple[list[str], float]:
    """Variant counts of baselines and sweeps (ranges checked against the shape), and disk."""
    from leaderboard.config import SweepConfigError
    from leaderboard.variants import expand

    cfg = study.config
    baselines = study.sweep_config("baselines", cfg.baselines, list(cfg.models), [])
    sweeps = study.sweep_config("sweeps", cfg.sweeps, cfg.swept, cfg.sweeps.patches)
    try:
        swept = expand(sweeps, facts.layers, facts.heads)
    except SweepConfigError as err:
        raise PlanError(f"sweeps: {err} (model: {facts.layers} layers, {facts.heads} "
                        "heads)") from None
    n_base = 1 + len(cfg.models)
    rows_b = _task_rows(baselines.tasks, baselines.limit)
    rows_s = _task_rows(sweeps.tasks, sweeps.limit)
    patches = len(swept) - 1 - len(cfg.swept)
    lines = [f"baselines: {n_base} models x {rows_b} items ({', '.join(baselines.tasks)}, limit "
             f"{baselines.limit}); backend {baselines_backend(study)}",
             f"sweeps: {patches} patch variants + {1 + len(cfg.swept)} baselines over "
             f"{', '.join(cfg.swept)}, {rows_s} items each ({', '.join(sweeps.tasks)}, limit "
             f"{sweeps.limit}), batch {sweeps.batch_size}, {sweeps.generate_together} variants "
             "per engine pass"]
    by_site: dict[str, int] = {}
    for variant in swept:
        if variant.site:
            by_site[variant.site] = by_site.get(variant.site, 0) + 1
    lines.append("    per site: " + ", ".join(f"{k} {v}" for k, v in by_site.items()))
    need = sweep_need(facts.params, facts.dtype_bytes, facts.kv_per_token, sweeps.batch_size,
                      sweeps.generate_together, new_tokens(sweeps.tasks, sweeps.gen_kwargs))
    lines += [f"    {describe(need)}", f"    here: {placement(need, devices_here())[0]}"]
    return lines, (n_base * rows_b + len(swept) * rows_s) * SAMPLE_BYTES


def judge_lines(study: Study) -> tuple[list[str], float]:
    """The judge block checked offline (model shape, chat template where the files are here,
    which tasks it will read), and the bytes a first run downloads."""
    judge = study.config.judge
    if judge is None:
        return [], 0.0
    from transformers import AutoTokenizer

    from harness_ext.judge.answers import JudgeError
    from harness_ext.judge.prompts import check_chat_template

    facts = model_facts(judge.model, role="judge")
    download = 0.0
    if "not in the local hub cache" in facts.source:
        download = facts.params * facts.dtype_bytes
        template = f"; the first run downloads it ({gb(download)})"
    else:
        try:
            check_chat_template(AutoTokenizer.from_pretrained(judge.model,
                                                              local_files_only=True),
                                judge.model)
        except (OSError, ValueError) as err:  # JudgeError is a ValueError
            why = err if isinstance(err, JudgeError) else str(err).splitlines()[0]
            raise PlanError(f"judge {judge.model}: {why}") from None
        template = "; chat template present"
    loaded = {t for spec in (study.config.baselines, study.config.sweeps)
              for t in load_tasks(spec.tasks)}
    judged = sorted(t for t in loaded if any(fnmatch.fnmatchcase(t, p) for p in judge.tasks))
    return [f"judge: {facts.source}: {facts.params / 1e6:,.1f} M parameters{template}",
            f"    backend {judge.backend}, unscored below {judge.threshold:g} number mass; "
            f"judges {', '.join(judged) or 'NO task of the baselines or sweeps'}"], download


def dry_run(study: Study) -> list[str]:
    """The plan as printable lines; raises ``PlanError`` on anything that would fail."""
    try:
        return _plan(study)
    except TaskListError as err:
        raise PlanError(str(err)) from None


def _plan(study: Study) -> list[str]:
    base = study.config.base
    base_ready = base.random_init is None and not study.retrain
    if not base_ready and (base.random_init is not None or base.pretrain_config):
        from transformers import Qwen3Config

        from finetune.tiny import TinyModelConfig

        if base.random_init is not None:
            shape = TinyModelConfig(**base.random_init.get("model", {}))
            name = f"a random tiny model (seed {base.random_init.get('seed', 0)})"
        else:
            from finetune.pretrain import PretrainConfig

            shape = PretrainConfig.from_yaml(base.pretrain_config).model
            name = f"{base.model}, rebuilt by --retrain ({base.pretrain_config})"
        facts = _facts(Qwen3Config(**asdict(shape), tie_word_embeddings=True), name)
    else:
        if study.retrain:
            raise PlanError("--retrain: base.pretrain_config is not set")
        hint = f"; --retrain builds it ({base.pretrain_config})" if base.pretrain_config else ""
        facts = model_facts(study.base_model(), hint)
        name = f"{base.model} - {facts.source}"
    lines = [f"base: {name}: {facts.layers} layers, {facts.heads} heads, "
             f"{facts.params / 1e6:,.1f} M parameters"]
    tune_lines, tune_disk = finetune_lines(study, facts, base_ready)
    run_lines, eval_disk = eval_lines(study, facts)
    judge_plan, judge_download = judge_lines(study)
    disk = tune_disk + eval_disk + judge_download
    if study.config.repair is not None:
        from leaderboard.variants import expand
        from repair.dryrun import dry_run_lines

        from .repair_stage import repair_job

        cfg = study.config
        swept = expand(study.sweep_config("sweeps", cfg.sweeps, cfg.swept, cfg.sweeps.patches),
                       facts.layers, facts.heads)
        try:
            repair_lines, scored = dry_run_lines(repair_job(study), swept, facts.layers,
                                                 facts.heads)
            _repair_items_left(study)
        except InputError as err:
            raise PlanError(str(err)) from None
        run_lines += repair_lines
        disk += scored * _task_rows(study.config.repair.tasks, study.config.repair.limit) \
            * SAMPLE_BYTES
    if "not in the local hub cache" in facts.source:
        download = facts.params * facts.dtype_bytes
        disk += download
        lines.append(f"    the first run downloads it: {gb(download)} into the hub cache")
    root = study.work
    while not root.exists():
        root = root.parent
    free = shutil.disk_usage(root).free
    stages = [s.name for s in stage_list(study.config)]
    return [*lines, *tune_lines, *run_lines, *judge_plan,
            f"stages: {' -> '.join(stages)}",
            f"disk estimate: {gb(disk)} in all, outputs under {study.work} ({gb(free)} free "
            "there)"
            + ("" if disk < free else "  <-- NOT ENOUGH SPACE")]


def _repair_items_left(study: Study) -> None:
    """Repair scores only the items its ranking did not read; the ranking reads the sweep's
    first ``sweeps.limit`` items (all of them with no limit). Fail here, not after the sweeps,
    when a repair task would have none left."""
    from harness_ext.paths import TASKS_DIR
    from repair.variants import eval_samples

    cfg = study.config
    read = {task: list(range(docs))
            for task, (docs, _) in _docs_read(cfg.sweeps.tasks, cfg.sweeps.limit).items()}
    try:
        eval_samples(cfg.repair.tasks, read, cfg.repair.limit, TASKS_DIR)
    except InputError as err:
        raise PlanError(f"repair: {err}; give sweeps.limit a count below the task's size "
                        f"(now {cfg.sweeps.limit})") from None
