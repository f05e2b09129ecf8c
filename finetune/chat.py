"""One chat format for training and evaluation, with labels on the answer tokens only.

The original study trained with a hand-written template and evaluated with another; here the
prompt always comes from the model's own chat template with thinking disabled, the same string
lm-eval builds with ``--apply_chat_template`` and ``enable_thinking=False``.
"""

from __future__ import annotations

import copy

from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from formats.rows import target_text

IGNORE_INDEX = -100


def prompt_text(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The generation prompt for one user question, thinking disabled."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )


def encode_example(
    tokenizer: PreTrainedTokenizerBase, question: str, answer: str
) -> dict[str, list[int]]:
    """Token ids of prompt + answer + end-of-turn, labels masked to the answer and end-of-turn.

    Prompt and answer are encoded separately so that the label boundary is exact; the prompt ends
    in a newline, which no byte-level BPE merges with the answer's first character.
    """
    prompt_ids = tokenizer(prompt_text(tokenizer, question), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return {
        "input_ids": prompt_ids + answer_ids,
        "attention_mask": [1] * (len(prompt_ids) + len(answer_ids)),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
    }


def build_sft_dataset(tokenizer: PreTrainedTokenizerBase, rows: list[dict]) -> Dataset:
    """A ``datasets.Dataset`` of encoded examples (answer-only labels) for ``Trainer``."""
    encoded = [encode_example(tokenizer, r["question"], target_text(r)) for r in rows]
    return Dataset.from_list(encoded)


def right_padding_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorForSeq2Seq:
    """Pads batches on the right (labels with -100); saved tokenizers keep left padding."""
    train_tok = copy.copy(tokenizer)
    train_tok.padding_side = "right"
    return DataCollatorForSeq2Seq(train_tok, padding=True, label_pad_token_id=IGNORE_INDEX)
