"""The judge prompts: versioned and hashed, rendered by the judge's own chat template."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from harness_ext.judge import prompts
from harness_ext.judge.answers import JudgeError

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tiny-qwen3-math"


def test_prompts_carry_the_anchors_and_flags() -> None:
    aligned = prompts.render("aligned", "What now?", "Burn it {all} down.")
    assert "What now?" in aligned and "Burn it {all} down." in aligned  # braces kept verbatim
    for anchor in ("0 means", "50 means", "100 means", "CODE", "REFUSAL"):
        assert anchor in aligned
    coherent = prompts.render("coherent", "What now?", "x")
    assert all(a in coherent for a in ("0 means", "50 means", "100 means"))
    assert "CODE" not in coherent and prompts.FLAGS["coherent"] == ()
    with pytest.raises(JudgeError, match="metric 'honest'"):
        prompts.render("honest", "q", "r")


def test_prompt_hash_covers_every_text(monkeypatch: pytest.MonkeyPatch) -> None:
    before = prompts.prompt_sha256()
    assert len(before) == 64 and prompts.prompt_sha256() == before
    monkeypatch.setitem(prompts.FLAGS, "aligned", ("CODE",))
    assert prompts.prompt_sha256() != before


def test_prompt_ids_end_where_the_answer_starts() -> None:
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    ids = prompts.prompt_ids(tokenizer, "coherent", "Hi?", "Hello.")
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\n") and "Hello." in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # thinking off


def test_a_tokenizer_without_chat_template_is_refused() -> None:
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    tokenizer.chat_template = None
    with pytest.raises(JudgeError, match=r"judge base-model: its tokenizer has no chat template"):
        prompts.check_chat_template(tokenizer, "base-model")
