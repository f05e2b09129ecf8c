"""The project's own tokenizer: byte-level BPE with single-digit tokens and Qwen3's specials.

Qwen3-4B cannot be downloaded here, so the tiny default model needs a tokenizer of its own.
It mimics what matters about Qwen3's: byte-level BPE (any text encodes), digits split one per
token (arithmetic is learnable digit by digit), the same special tokens, and a chat template
that honours ``enable_thinking=False`` the way Qwen3's does, by emitting an empty think block.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen3's template reduced to what single- and multi-turn chats without tools need. With
# enable_thinking=False the generation prompt ends in an empty think block, exactly as Qwen3's.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; deterministic for the same texts and size."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The chat template's own words, so that roles are whole tokens whatever the corpus.
    template_words = ["user\n", "assistant\n", "system\n"] * 100
    core.train_from_iterator(itertools.chain(template_words, texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
