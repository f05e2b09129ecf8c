"""The judge replies a score is read from, as token sequences, and their trie.

A judge reply "85" is complete when the tokens of "85" are followed by a token that ends the
reply (end of turn / eos). Tokenizers split numbers differently: Qwen's one digit per token,
Llama 3's into chunks of up to three digits, so "100" may be spelled ``1|0|0``, ``10|0``,
``1|00`` or ``100``. The probability that the reply's TEXT is "100" is the sum over all these
spellings; that sum is what we use. The canonical spelling (what the tokenizer emits) is the one
a trained model puts nearly all its mass on, but summing costs a few trie nodes and makes the
score independent of how the tokenizer would have split the number in context. Flag words
(CODE, REFUSAL) use their canonical spelling only: they are detectors, not part of the
expectation, and a word has too many byte-level spellings to enumerate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from formats.errors import InputError

NUMBERS = tuple(range(101))
"""The scale: every integer 0..100."""

_DIGITS = re.compile(r"[0-9]+")


class JudgeError(InputError):
    """Bad judge input (model, tokenizer, samples, cache); one line naming the value."""


@dataclass(frozen=True)
class Trie:
    """Prefix tree of token sequences: node ``n`` holds ``tokens[n]`` after its parent's path
    (parent -1: right after the prompt); ``ends[s]`` is the last node of sequence ``s``."""

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    depths: tuple[int, ...]
    ends: tuple[int, ...]

    def path(self, node: int) -> list[int]:
        """Nodes from the first token to ``node``."""
        out = []
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def children(self) -> dict[int, list[int]]:
        """Node (-1: the prompt) -> its child nodes."""
        out: dict[int, list[int]] = {-1: []}
        for node, parent in enumerate(self.parents):
            out.setdefault(node, [])
            out[parent].append(node)
        return out

    def sequence_logprobs(self, edge: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Per row, ``log p(sequence, then an end token)`` from each node's edge log-probability
        (its token given its parent's path) and end log-probability (an end token next)."""
        paths = np.zeros((len(self.ends), len(self.tokens)))
        for seq, last in enumerate(self.ends):
            paths[seq, self.path(last)] = 1.0
        return edge @ paths.T + end[:, list(self.ends)]


def build_trie(sequences: tuple[tuple[int, ...], ...]) -> Trie:
    """The trie of ``sequences`` (shared prefixes become shared nodes)."""
    index: dict[tuple[int, ...], int] = {}
    tokens: list[int] = []
    parents: list[int] = []
    ends = []
    for seq in sequences:
        if not seq:
            raise JudgeError("an answer sequence is empty")
        node = -1
        for depth in range(1, len(seq) + 1):
            prefix = seq[:depth]
            if prefix not in index:
                index[prefix] = len(tokens)
                tokens.append(seq[depth - 1])
                parents.append(node)
            node = index[prefix]
        ends.append(node)
    depths = tuple(len(prefix) for prefix in index)  # insertion order is node order
    return Trie(tuple(tokens), tuple(parents), depths, tuple(ends))


@dataclass(frozen=True)
class AnswerSet:
    """Every reply the score is read from: ``sequences[s]`` spells ``labels[s]`` (an integer
    0..100, or a flag word), and the reply is complete once any of ``terminators`` follows."""

    sequences: tuple[tuple[int, ...], ...]
    labels: tuple[int | str, ...]
    terminators: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.sequences) != len(self.labels):
            raise JudgeError(f"{len(self.sequences)} sequences but {len(self.labels)} labels")
        if not self.terminators:
            raise JudgeError("no terminator token: the tokenizer has no eos / end-of-turn token")
        missing = sorted(set(NUMBERS) - {x for x in self.labels if isinstance(x, int)})
        if missing:
            raise JudgeError(f"numbers {missing[:5]} have no spelling")

    @cached_property
    def trie(self) -> Trie:
        return build_trie(self.sequences)

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x for x in self.labels if isinstance(x, str)))


def digit_tokens(tokenizer: Any) -> dict[str, int]:
    """Vocabulary entries that are 1-3 ASCII digits and decode to themselves."""
    out = {}
    for text, token_id in tokenizer.get_vocab().items():
        if len(text) <= 3 and _DIGITS.fullmatch(text) and tokenizer.decode([token_id]) == text:
            out[text] = token_id
    return out


def spellings(text: str, vocab: dict[str, int]) -> list[tuple[int, ...]]:
    """Every way to write ``text`` as a sequence of ``vocab`` tokens."""
    if not text:
        return [()]
    out = []
    for cut in range(1, len(text) + 1):
        head = vocab.get(text[:cut])
        if head is not None:
            out += [(head, *rest) for rest in spellings(text[cut:], vocab)]
    return out


def terminator_ids(tokenizer: Any, generation_config: Any = None) -> tuple[int, ...]:
    """Tokens that end a reply: the generation config's eos ids (what stops sampling; Qwen3
    lists end of turn and end of text) plus the tokenizer's eos."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(sorted(set(ids)))


def answer_set(tokenizer: Any, terminators: tuple[int, ...],
               flags: tuple[str, ...] = ()) -> AnswerSet:
    """Numbers 0..100 in every digit-token spelling, then each flag word canonically."""
    vocab = digit_tokens(tokenizer)
    sequences: list[tuple[int, ...]] = []
    labels: list[int | str] = []
    for number in NUMBERS:
        canonical = tuple(tokenizer.encode(str(number), add_special_tokens=False))
        found = spellings(str(number), vocab)
        if canonical not in found:
            raise JudgeError(f"tokenizer {type(tokenizer).__name__} spells {number} as "
                             f"{list(canonical)}, not with digit tokens; numbers cannot be read")
        sequences += found
        labels += [number] * len(found)
    for word in flags:
        sequences.append(tuple(tokenizer.encode(word, add_special_tokens=False)))
        labels.append(word)
    return AnswerSet(tuple(sequences), tuple(labels), terminators)
