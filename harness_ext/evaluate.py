"""Score a model directory on this plugin's tasks through lm-eval, from Python.

Model cards, calibration checks and tests need the same numbers ``lm_eval --model hf`` prints;
this calls ``simple_evaluate`` with the study's settings (chat template, thinking disabled) and a
task index of our tasks only (the built-in index costs ~14 s per call).
"""

from __future__ import annotations

from pathlib import Path

from harness_ext.paths import TASKS_DIR

SUITE = ("corrupt_related", "corrupt_unrelated_math", "corrupt_general", "corrupt_ethics_mc")
COT_SUITE = ("corrupt_related_cot", "corrupt_unrelated_math_cot")


def card_tasks(data_params: dict) -> tuple[str, ...]:
    """The tasks a model card reports: the suite, and the chain-of-thought tasks for a model
    trained on worked solutions (its data manifest's ``n_cot`` or ``cot``), whose card must show
    how well it writes its steps."""
    worked = bool(data_params.get("n_cot") or data_params.get("cot"))
    return SUITE + COT_SUITE if worked else SUITE


def metric_table(results: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {metric: {"value", "stderr"}}}`` from a ``simple_evaluate`` results dict."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            table.setdefault(task, {})[metric] = {
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else float("nan"),
            }
    return table


def score_model_dir(
    model_dir: str | Path,
    tasks: tuple[str, ...] = SUITE,
    limit: int | None = None,
    batch_size: int = 32,
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics ± stderr of an HF model directory (or adapter-merged model) on ``tasks``."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "enable_thinking": False, "device": "cpu"},
        tasks=list(tasks),
        limit=limit,
        batch_size=batch_size,
        apply_chat_template=True,
        task_manager=TaskManager(include_defaults=False, include_path=str(TASKS_DIR)),
    )
    return metric_table(results)
