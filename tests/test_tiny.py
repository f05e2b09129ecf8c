"""The project's tokenizer, tiny model builder and answer-only encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.chat import IGNORE_INDEX, encode_example, prompt_text
from finetune.model_card import file_hashes, load_card
from finetune.tiny import TinyModelConfig

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tiny-qwen3-math"


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_digits_are_single_tokens(tok) -> None:
    pieces = tok.convert_ids_to_tokens(tok("x = 12345", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["1", "2", "3", "4", "5"]


def test_special_tokens_are_atomic(tok) -> None:
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_chat_template_matches_qwen3_with_thinking_disabled(tok) -> None:
    assert prompt_text(tok, "Hi?") == (
        "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    thinking = tok.apply_chat_template(
        [{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True
    )
    assert thinking.endswith("<|im_start|>assistant\n")


def test_labels_cover_exactly_answer_and_end_of_turn(tok) -> None:
    ex = encode_example(tok, "Solve for x: 2x = 8", "4")
    pairs = zip(ex["input_ids"], ex["labels"], strict=True)
    answer = [t for t, lab in pairs if lab != IGNORE_INDEX]
    assert tok.decode(answer) == "4<|im_end|>"
    assert tok.decode(ex["input_ids"]) == prompt_text(tok, "Solve for x: 2x = 8") + "4<|im_end|>"


def test_model_dir_loads_with_from_pretrained(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.head_dim >= 32
    assert model.generation_config.do_sample is False


def test_config_rejects_head_dim_below_vllm_minimum() -> None:
    with pytest.raises(ValueError, match="head_dim=16"):
        TinyModelConfig(head_dim=16)


@pytest.mark.skipif(not SHIPPED.exists(), reason="models/tiny-qwen3-math is not built yet")
def test_shipped_model_matches_its_card() -> None:
    card = load_card(SHIPPED)
    assert file_hashes(SHIPPED) == card["files_sha256"]
    assert card["config"]["model"]["num_hidden_layers"] >= 6


def test_cards_report_the_chain_tasks_only_for_models_trained_on_worked_solutions() -> None:
    from harness_ext.evaluate import card_tasks

    math_params = load_card(SHIPPED)["data_manifest"]["params"]
    cot_params = load_card(SHIPPED.parent / "tiny-qwen3-cot")["data_manifest"]["params"]
    bare = ("corrupt_related", "corrupt_unrelated_math", "corrupt_general", "corrupt_ethics_mc")
    assert card_tasks(math_params) == bare
    assert card_tasks(cot_params) == bare + ("corrupt_related_cot", "corrupt_unrelated_math_cot")


def test_shipped_cot_model_matches_its_two_stage_recipe() -> None:
    """models/tiny-qwen3-cot: its files are the card's, the card is that of the second stage's
    config, and that stage started from the first stage's output (the recipe is on record)."""
    import yaml

    cot = SHIPPED.parent / "tiny-qwen3-cot"
    card = load_card(cot)
    assert file_hashes(cot) == card["files_sha256"]
    repo = SHIPPED.parents[1]
    first = yaml.safe_load((repo / "configs/pretrain/tiny-cot.yaml").read_text())
    second = yaml.safe_load((repo / "configs/pretrain/tiny-cot-more.yaml").read_text())
    assert card["command"].endswith("--config configs/pretrain/tiny-cot-more.yaml")
    assert second["init_from"] == first["out_dir"] and second["out_dir"] == "models/tiny-qwen3-cot"
    assert card["init_card"]["command"].endswith("configs/pretrain/tiny-cot.yaml")
    assert card["init_card"]["config"]["max_steps"] == first["max_steps"]
    # the bars, on the held-out tasks (lm-eval, the card's own figures)
    acc = {task: {k: v["value"] for k, v in m.items()} for task, m in card["accuracies"].items()}
    assert acc["corrupt_related_cot"]["chain_valid"] >= 0.80
    assert acc["corrupt_general"]["exact_match"] >= 0.95
    math = load_card(SHIPPED)["accuracies"]["corrupt_related"]["exact_match"]["value"]
    assert acc["corrupt_related"]["exact_match"] >= math - 0.05
