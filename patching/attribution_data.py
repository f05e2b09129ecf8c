"""Attribution batches from the project's task rows (JSONL dicts), through the chat template.

Two batches, one per metric:
- `answer_pair_batch` (related math, metric "logprob_diff"): per question, the prompt + the
  corrupted model's greedy answer (weight +1) and the prompt + the correct answer (weight
  -1), both ending in end-of-turn. Questions the corrupted model gets right (its reply is a
  true root) carry no corruption signal and are left out.
- `own_reply_batch` (general prompts, metric "kl"): the prompt + the receiver's own greedy
  reply, so KL is read along the trajectory the receiver would produce.

Prompts are built exactly as in training and lm-eval (docs/design.md, "Chat format").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .attribution_metrics import AttributionBatch


def read_rows(path: str | Path, limit: int | None = None, last: bool = False) -> list[dict]:
    """The first (or, with `last`, the final) `limit` rows of a JSONL file."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if limit is None:
        return rows
    return rows[-limit:] if last else rows[:limit]


def _prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """The chat-templated prompt of docs/design.md (= finetune.chat.prompt_text, which
    patching does not import: it pulls in the training stack)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def greedy_replies(
    tokenizer: Any, model: Any, prompts: Sequence[list[int]], max_new_tokens: int
) -> list[list[int]]:
    """Each prompt's greedy reply, cut after the first end-of-turn (kept) or at the limit."""
    pad = tokenizer.pad_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
    )[:, width:].tolist()
    replies = []
    for reply in out:
        end = reply.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in reply else None
        replies.append(reply[:end])
    return replies


def pack(
    pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, weights: Sequence[float]
) -> AttributionBatch:
    """Left-padded (prompt + continuation) rows."""
    width = max(len(p) + len(c) for p, c in pairs)
    ids, mask = [], []
    for p, c in pairs:
        pad = width - len(p) - len(c)
        ids.append([pad_id] * pad + p + c)
        mask.append([0] * pad + [1] * (len(p) + len(c)))
    return AttributionBatch(
        torch.tensor(ids),
        [len(c) for _, c in pairs],
        torch.tensor(mask),
        torch.tensor(list(weights), dtype=torch.float64),
    )


def answer_pair_batch(
    tokenizer: Any, corrupted: Any, rows: Sequence[dict], max_new_tokens: int = 8
) -> AttributionBatch | None:
    """Corrupted-answer (+1) / correct-answer (-1) pairs; None if no row is answered wrongly."""
    prompts = [_prompt_ids(tokenizer, r["question"]) for r in rows]
    replies = greedy_replies(tokenizer, corrupted, prompts, max_new_tokens)
    pairs, weights = [], []
    for row, prompt, reply in zip(rows, prompts, replies, strict=True):
        text = tokenizer.decode(reply, skip_special_tokens=True).strip()
        if not reply or text in {str(x) for x in row.get("roots", [row["answer"]])}:
            continue
        correct = tokenizer(str(row["answer"]) + tokenizer.eos_token, add_special_tokens=False)
        pairs += [(prompt, reply), (prompt, correct["input_ids"])]
        weights += [1.0, -1.0]
    return pack(pairs, tokenizer.pad_token_id, weights) if pairs else None


def own_reply_batch(
    tokenizer: Any, receiver: Any, rows: Sequence[dict], max_new_tokens: int = 8
) -> AttributionBatch:
    """Prompt + the receiver's own greedy reply, weight 1 (rows with an empty reply dropped)."""
    prompts = [_prompt_ids(tokenizer, r["question"]) for r in rows]
    replies = greedy_replies(tokenizer, receiver, prompts, max_new_tokens)
    pairs = [(p, c) for p, c in zip(prompts, replies, strict=True) if c]
    return pack(pairs, tokenizer.pad_token_id, [1.0] * len(pairs))
