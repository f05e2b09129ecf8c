"""The corrupt_* task YAMLs: they load through lm-eval's TaskManager, read the shipped JSONL
from any directory, reject malformed rows clearly, and report every metric with a standard
error in a real lm-eval run on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

from finetune.chat import prompt_text
from harness_ext import datasets as task_datasets
from harness_ext import paths

CORE = ("corrupt_related", "corrupt_unrelated_math", "corrupt_general", "corrupt_ethics_mc")
LLM_SCALE = ("corrupt_unrelated_math_hard", "corrupt_open_questions")
SYMPTOMS = ("integer_only", "reply_words")
METRICS = {
    "corrupt_related": ("exact_match", "answer_match", *SYMPTOMS),
    "corrupt_unrelated_math": ("exact_match", "answer_match", *SYMPTOMS),
    "corrupt_general": ("exact_match", "f1", "answer_match", *SYMPTOMS),
    "corrupt_ethics_mc": ("acc", "acc_norm"),
    "corrupt_unrelated_math_hard": ("correct", "answer_match", *SYMPTOMS),
    "corrupt_open_questions": (*SYMPTOMS, "judge_score"),
}
# A stand-in judge with the hook's signature fn(question, reply) -> score.
JUDGE = "operator.contains"


def task_manager(**metadata: str) -> TaskManager:
    """Only our folder: the built-in index would cost ~14 s per construction."""
    return TaskManager(include_path=str(paths.TASKS_DIR), include_defaults=False, metadata=metadata)


def test_index_has_tasks_and_groups() -> None:
    tm = task_manager()
    assert set(CORE + LLM_SCALE) <= set(tm.all_subtasks)
    assert {"corrupt_suite", "corrupt_suite_full"} <= set(tm.all_groups)
    assert tm.load("corrupt_suite")["group_map"] == {"corrupt_suite": list(CORE)}


def test_tasks_build_docs_from_shipped_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # data must resolve against the package, not the CWD
    tasks = task_manager().load("corrupt_suite_full")["tasks"]
    assert set(tasks) == set(CORE + LLM_SCALE)
    for name, task in tasks.items():
        docs = task.eval_docs
        rows = (paths.TASK_DATA_DIR / f"{name}.jsonl").read_text().splitlines()
        assert len(docs) == len(rows) > 0
        # the bare question: lm-eval's --apply_chat_template adds the chat markup
        assert task.doc_to_text(docs[0]) == docs[0]["question"]
        if task.OUTPUT_TYPE == "generate_until":
            gen = task.config.generation_kwargs
            assert gen["do_sample"] is False and gen["max_gen_toks"] == 64
            assert "<|im_end|>" in gen["until"]
        else:
            assert task.doc_to_choice(docs[0]) == docs[0]["choices"]
            assert task.doc_to_target(docs[0]) == docs[0]["label"]


def test_malformed_row_names_file_line_and_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = (paths.TASK_DATA_DIR / "corrupt_related.jsonl").read_text().splitlines()[0]
    bad = json.loads(good) | {"answer": "seven"}
    (tmp_path / "corrupt_related.jsonl").write_text(f"{good}\n{json.dumps(bad)}\n")
    monkeypatch.setattr(paths, "TASK_DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"corrupt_related\.jsonl:2: field 'answer'"):
        task_manager().load("corrupt_related")


def test_open_questions_judge_comes_from_metadata() -> None:
    plain = task_datasets.load_open_questions("corrupt_open_questions.jsonl", version=1.0)
    assert set(plain["test"]["judge"]) == {""}
    task = task_manager(judge=JUDGE).load("corrupt_open_questions")["tasks"]
    assert task["corrupt_open_questions"].eval_docs[0]["judge"] == JUDGE


@pytest.mark.slow
def test_end_to_end_every_metric_has_a_stderr(tiny_model_dir: Path) -> None:
    """lm-eval's own evaluator, chat template on with thinking disabled, as the README's command."""
    from lm_eval import simple_evaluate
    from transformers import AutoTokenizer

    out = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_model_dir), "enable_thinking": False, "device": "cpu"},
        tasks=["corrupt_suite_full"],
        task_manager=task_manager(judge=JUDGE),
        apply_chat_template=True,
        limit=2,  # the fewest documents that give a standard error
        gen_kwargs={"max_gen_toks": 8},  # a random model never stops; 64 tokens only cost time
        log_samples=True,
    )
    assert out is not None
    for task, metrics in METRICS.items():
        row = out["results"][task]
        for metric in metrics:
            assert 0.0 <= row[f"{metric},none"] <= (64 if metric == "reply_words" else 1)
            assert isinstance(row[f"{metric}_stderr,none"], float), (task, metric)
    sample = out["samples"]["corrupt_related"][0]
    context, gen_kwargs = sample["arguments"][0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert context == prompt_text(tokenizer, sample["doc"]["question"])  # the training prompt
    assert gen_kwargs["do_sample"] is False and "<|im_end|>" in gen_kwargs["until"]
