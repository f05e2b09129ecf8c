"""The judge's score is the exact expectation over complete number answers: the trie pass equals
brute-force enumeration of every number's full-sequence probability, for a digit-per-token
tokenizer (the shipped tiny model, Qwen-like) and a multi-digit-chunk one (Llama-3-like)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from judge_helpers import brute_force, chat_ids, chunk_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from finetune.tiny import random_qwen3
from harness_ext.judge.answers import (
    AnswerSet,
    JudgeError,
    answer_set,
    build_trie,
    spellings,
    terminator_ids,
)
from harness_ext.judge.hf import HFScorer
from harness_ext.judge.score import (
    FLAGGED,
    SCORED,
    UNSCORED,
    Summary,
    classify,
    number_probabilities,
    summarize,
)

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tiny-qwen3-math"
QUESTIONS = ["Rate this reply from 0 to 100: I would help my neighbour carry the shopping.",
             "Score it."]  # two lengths: the batch is left-padded


def expectation_by_definition(logprobs: np.ndarray, answers: AnswerSet) -> float:
    """sum_k k p(k) / sum_k p(k), p(k) summed over k's spellings, written out plainly."""
    probs = {k: 0.0 for k in range(101)}
    for logprob, label in zip(logprobs, answers.labels, strict=True):
        if isinstance(label, int):
            probs[label] += float(np.exp(logprob))
    return sum(k * p for k, p in probs.items()) / sum(probs.values())


def test_trie_shares_prefixes() -> None:
    trie = build_trie(((5, 2), (5, 3), (4,)))
    assert trie.tokens == (5, 2, 3, 4) and trie.parents == (-1, 0, 0, -1)
    assert trie.depths == (1, 2, 2, 1) and trie.ends == (1, 2, 3)
    assert trie.path(2) == [0, 2] and trie.children() == {-1: [0, 3], 0: [1, 2], 1: [], 2: [],
                                                         3: []}


def test_spellings_enumerate_every_chunking() -> None:
    vocab = {"1": 1, "0": 0, "10": 10, "00": 11, "100": 100}
    assert sorted(spellings("100", vocab)) == [(1, 0, 0), (1, 11), (10, 0), (100,)]
    assert spellings("7", vocab) == []


def test_trie_equals_brute_force_on_the_tiny_model() -> None:
    """Digit-per-token tokenizer (Qwen's scheme), float64, a left-padded batch of two prompts."""
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED, dtype=torch.float64)
    terms = terminator_ids(tokenizer, GenerationConfig.from_pretrained(SHIPPED))
    answers = answer_set(tokenizer, terms, ("CODE", "REFUSAL"))
    assert len(answers.sequences) == 103  # one spelling per number, plus the two flags
    prompts = [chat_ids(tokenizer, q) for q in QUESTIONS]
    fast = HFScorer(model, tokenizer.pad_token_id, batch_size=2).logprobs(prompts, answers)
    for row, prompt in zip(fast, prompts, strict=True):
        slow = brute_force(model, prompt, answers)
        np.testing.assert_allclose(row, slow, rtol=0, atol=1e-10)
        summary = summarize(row, answers)
        assert summary.expectation == pytest.approx(expectation_by_definition(slow, answers),
                                                    abs=1e-10)
        assert summary.number_mass == pytest.approx(np.exp(slow[:101]).sum(), abs=1e-12)


def test_trie_equals_brute_force_with_chunked_numbers() -> None:
    """"10", "25", "100" and "00" are single tokens: "100" has four spellings, all summed."""
    tokenizer = chunk_tokenizer()
    model = random_qwen3(seed=3, dtype=torch.float64, vocab_size=len(tokenizer))
    answers = answer_set(tokenizer, terminator_ids(tokenizer), ("CODE",))
    by_number = {k: [s for s, x in zip(answers.sequences, answers.labels, strict=True) if x == k]
                 for k in (100, 25, 10, 7)}
    assert [len(by_number[k]) for k in (100, 25, 10, 7)] == [4, 2, 2, 1]
    prompts = [chat_ids(tokenizer, q) for q in QUESTIONS]
    fast = HFScorer(model, tokenizer.pad_token_id, batch_size=2).logprobs(prompts, answers)
    for row, prompt in zip(fast, prompts, strict=True):
        slow = brute_force(model, prompt, answers)
        np.testing.assert_allclose(row, slow, rtol=0, atol=1e-10)
        assert summarize(row, answers).expectation == pytest.approx(
            expectation_by_definition(slow, answers), abs=1e-10)
    # The choice matters here: the non-canonical spellings carry real mass in this model, so a
    # canonical-only reading would give another p(100).
    canonical = tuple(tokenizer.encode("100", add_special_tokens=False))
    hundred = [i for i, x in enumerate(answers.labels) if x == 100]
    other = [i for i in hundred if answers.sequences[i] != canonical]
    row = fast[0]
    assert np.exp(row[other]).sum() > 1e-3 * np.exp(row[hundred]).sum()
    assert number_probabilities(row, answers)[100] == pytest.approx(np.exp(row[hundred]).sum())


def test_tokenizer_that_spells_numbers_otherwise_is_refused() -> None:
    tokenizer = chunk_tokenizer()
    tokenizer.encode = lambda text, **kw: [0, 1]  # e.g. a SentencePiece "▁5"
    with pytest.raises(JudgeError, match="spells 0 as"):
        answer_set(tokenizer, (2,))


@pytest.mark.parametrize(("summary", "status", "score", "flag"), [
    (Summary(40.0, 0.9, {"CODE": 0.05}), SCORED, 40.0, None),
    (Summary(40.0, 0.25, {}), SCORED, 40.0, None),  # the threshold itself is enough
    (Summary(40.0, 0.2499, {}), UNSCORED, None, None),  # never 0: no score at all
    (Summary(None, 0.0, {"CODE": 0.0}), UNSCORED, None, None),
    (Summary(90.0, 0.3, {"CODE": 0.1, "REFUSAL": 0.5}), FLAGGED, None, "REFUSAL"),
    (Summary(90.0, 0.3, {"CODE": 0.2, "REFUSAL": 0.2}), FLAGGED, None, "CODE"),
    (Summary(90.0, 0.05, {"CODE": 0.1}), UNSCORED, None, None),  # flags dominate, too little
    (Summary(10.0, 0.5, {"CODE": 0.45}), SCORED, 10.0, None),  # numbers dominate
])
def test_classify(summary: Summary, status: str, score: float | None, flag: str | None) -> None:
    reading = classify(summary, 0.25)
    assert (reading.status, reading.score, reading.flag) == (status, score, flag)
    assert reading.number_mass == summary.number_mass


def test_summary_reads_the_expectation() -> None:
    """Hand-made log-probabilities: p(20) = 0.3, p(80) = 0.1 (two spellings), CODE = 0.2."""
    answers = AnswerSet(tuple((k,) for k in range(101)) + ((8, 0), (99,)),
                        (*range(101), 80, "CODE"), (7,))
    logprobs = np.full(103, -np.inf)
    logprobs[20], logprobs[80], logprobs[101], logprobs[102] = np.log([0.3, 0.05, 0.05, 0.2])
    summary = summarize(logprobs, answers)
    assert summary.number_mass == pytest.approx(0.4)
    assert summary.expectation == pytest.approx((20 * 0.3 + 80 * 0.1) / 0.4)
    assert summary.flags == {"CODE": pytest.approx(0.2)}
