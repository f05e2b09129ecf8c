"""The study's stages in run order: one list, built from the stage functions of
`study.stages` and the repair stage of `repair.run` (kept apart so that neither imports the
other)."""

from __future__ import annotations

from .config import StudyConfig
from .repair_stage import repair_inputs, run_repair
from .stages import (
    Stage,
    base_inputs,
    baselines_inputs,
    data_inputs,
    finetune_stage,
    judge_inputs,
    page_inputs,
    run_base,
    run_baselines,
    run_data,
    run_judge,
    run_page,
    run_summary,
    run_sweeps,
    run_weights,
    summary_inputs,
    sweeps_inputs,
    weights_inputs,
)


def stage_list(config: StudyConfig) -> list[Stage]:
    """Every stage in run order; fine-tunes are one stage each, so editing one re-runs it
    alone (and what depends on it)."""
    tunes = [finetune_stage(label) for label in config.models]
    tune_names = tuple(t.name for t in tunes)
    swept = tuple(f"finetune-{label}" for label in config.swept)
    judge = [Stage("judge", "judge of the open-ended replies (aligned, coherent, misaligned)",
                   ("baselines", "sweeps"), judge_inputs, run_judge)] if config.judge else []
    after_sweeps: tuple[str, ...] = ()
    repair = []
    if config.repair is not None:
        after_sweeps = ("repair",)
        repair = [Stage("repair", "targeted repair of the located components, against controls",
                        ("base", *(f"finetune-{label}" for label in config.repaired), "sweeps"),
                        repair_inputs, run_repair, shared=True)]
    return [
        Stage("data", "corrupting data: " + ", ".join(f"{p} (seed {s}{', CoT' if c else ''})"
                                                      for p, s, c in config.datasets), (),
              data_inputs, run_data),
        Stage("base", "clean base model", (), base_inputs, run_base,
              forced=lambda study: study.retrain and study.config.base.random_init is None),
        *tunes,
        Stage("weights", "where each fine-tune moved the weights, per component",
              ("base", *tune_names), weights_inputs, run_weights),
        Stage("baselines", "clean and corrupted models on the baseline tasks",
              ("base", *tune_names), baselines_inputs, run_baselines,
              shared=config.baselines.backend == "hf"),  # vLLM's run one subprocess each
        Stage("sweeps", "CMAP sweeps over sites, layers and heads", ("base", *swept),
              sweeps_inputs, run_sweeps, shardable=True, shared=True),
        *judge,
        *repair,
        Stage("page", "leaderboard pages and heatmaps",
              (*tune_names, "baselines", "sweeps", *(s.name for s in judge), *after_sweeps),
              page_inputs, run_page),
        Stage("summary", "summary from the measured numbers",
              ("weights", "baselines", "sweeps", *after_sweeps), summary_inputs, run_summary),
    ]
