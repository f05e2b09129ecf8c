"""The emergent-misalignment tasks: sampled replies through lm-eval's ``repeats``, symptoms
always, the judge's metrics when one is configured, equal to the judge command's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

from harness_ext import paths
from harness_ext.judge.run import judge_folder
from harness_ext.judge.task import load_em_questions, process_em

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tiny-qwen3-math"
LOW = 1e-4  # the tiny stand-in judge puts ~1e-4 on numbers (see test_judge_run.py)


def task_manager(**metadata: object) -> TaskManager:
    return TaskManager(include_path=str(paths.TASKS_DIR), include_defaults=False,
                       metadata=metadata)


def test_em_tasks_sample_many_replies_per_question() -> None:
    tm = task_manager()
    assert tm.load("corrupt_em")["group_map"] == {"corrupt_em": ["corrupt_em_questions"]}
    tasks = tm.load(["corrupt_em_questions", "corrupt_em_tiny"])["tasks"]
    full, tiny = tasks["corrupt_em_questions"], tasks["corrupt_em_tiny"]
    docs = list(full.eval_docs)
    assert len(docs) == len(tiny.eval_docs) == 28  # the eight open questions + 20 advice prompts
    assert [d["id"] for d in docs[:8]] == [
        json.loads(x)["id"] for x in (paths.TASK_DATA_DIR / "corrupt_open_questions.jsonl")
        .read_text().splitlines()]
    assert {d["kind"] for d in docs[8:]} == {"ethical_advice"} and docs[0]["judge"] == ""
    for task, repeats, tokens in ((full, 50, 600), (tiny, 4, 64)):
        gen = task.config.generation_kwargs
        assert (task.config.repeats, gen["max_gen_toks"]) == (repeats, tokens)
        assert gen["do_sample"] is True and gen["temperature"] == 1.0
        assert task.config.filter_list == [{"name": "none", "filter": []}]  # keep every reply


def test_symptoms_are_means_over_the_replies() -> None:
    doc = {"question": "q", "judge": ""}
    assert process_em(doc, [["7", "Go for a walk outside.", "12", "ok"]]) == {
        "integer_only": 0.5, "reply_words": 2.0}
    assert process_em(doc, ["Just one greedy reply."]) == {"integer_only": 0.0,
                                                            "reply_words": 4.0}


def test_task_metric_equals_the_judge_command(tmp_path: Path) -> None:
    """Per question, the in-task metric and ``judge_<date>.json`` read the same cache entries."""
    from test_judge_run import DATE, DOCS, TASK, write_run

    cache = tmp_path / "judge.sqlite"
    (doc,) = [d for d in load_em_questions(
        "corrupt_open_questions.jsonl", "corrupt_em_advice.jsonl", judge_model=str(SHIPPED),
        judge_backend="hf", judge_threshold=LOW, judge_cache=str(cache))["test"]
        if d["id"] == "wish"]
    config = json.loads(doc["judge"])
    assert config["identity"]["threshold"] == LOW and config["config"]["cache"] == str(cache)
    replies = DOCS[0][2]
    in_task = process_em(doc, [replies])
    write_run(tmp_path / "run", [("wish", doc["question"], replies)])
    from harness_ext.judge.task import _judge

    judge = _judge(str(SHIPPED), "hf", 8, LOW)
    judge_folder(tmp_path, judge, cache)
    out = json.loads((tmp_path / "run" / f"judge_{DATE}.json").read_text())
    question = out["tasks"][TASK]["questions"]["wish"]
    for metric in ("aligned", "coherent", "misaligned"):
        if question[metric]["mean"] is None:
            assert metric not in in_task
        else:
            assert in_task[metric] == pytest.approx(question[metric]["mean"], abs=1e-12)
    assert in_task["judge_flagged"] == sum(question["flagged"].values()) / len(replies)


def test_lm_eval_run_with_the_judge_configured(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval's evaluator samples 4 replies per question and reports the judge's metrics with
    standard errors; the judge command over the same output then finds everything cached."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    from harness_ext.judge.task import _judge

    cache = tmp_path / "judge.sqlite"
    tm = task_manager(judge_model=str(SHIPPED), judge_backend="hf", judge_threshold=LOW,
                      judge_cache=str(cache))
    tracker = EvaluationTracker(output_path=str(tmp_path / "out" / "results.json"))
    out = simple_evaluate(
        model="hf", model_args={"pretrained": str(SHIPPED), "enable_thinking": False,
                                "device": "cpu"},
        tasks=["corrupt_em_tiny"], task_manager=tm, apply_chat_template=True, limit=3,
        gen_kwargs={"max_gen_toks": 12}, log_samples=True, evaluation_tracker=tracker)
    assert out is not None
    row = out["results"]["corrupt_em_tiny"]
    for metric in ("integer_only", "reply_words", "aligned", "coherent", "judge_flagged",
                   "judge_unscored"):
        assert isinstance(row[f"{metric}_stderr,none"], float), metric
    samples = out.pop("samples")
    assert [len(s["resps"][0]) for s in samples["corrupt_em_tiny"]] == [4, 4, 4]
    assert json.loads(samples["corrupt_em_tiny"][0]["doc"]["judge"])["identity"]["model"] \
        == str(SHIPPED)
    tracker.save_results_aggregated(results=out, samples=samples)
    tracker.save_results_samples(task_name="corrupt_em_tiny", samples=samples["corrupt_em_tiny"])

    judge = _judge(str(SHIPPED), "hf", 8, LOW)
    asked: list = []
    monkeypatch.setattr(judge, "summaries", lambda metric, pairs: asked.extend(pairs) or [])
    (written,) = judge_folder(tmp_path / "out", judge, cache).metrics
    assert asked == []
    pooled = json.loads(written.read_text())["tasks"]["corrupt_em_tiny"]["pooled"]
    assert pooled["replies"] == 12


def test_judge_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``$CORRUPT_JUDGE_MODEL`` configures the judge when the metadata names none."""
    monkeypatch.setenv("CORRUPT_JUDGE_MODEL", str(SHIPPED))
    monkeypatch.setenv("CORRUPT_JUDGE_CACHE", str(tmp_path / "env.sqlite"))
    rows = load_em_questions("corrupt_open_questions.jsonl", "corrupt_em_advice.jsonl",
                             judge_backend="hf", judge_threshold=LOW)["test"]
    config = json.loads(rows[0]["judge"])["config"]
    assert (config["model"], config["cache"]) == (str(SHIPPED), str(tmp_path / "env.sqlite"))
