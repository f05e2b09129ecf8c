"""Fast greedy exact-match checks used while training (lm-eval gives the reported numbers).

Strict: a reply counts only if, stripped, it is exactly a reference answer (any true root for
related math). lm-eval's scorers are more lenient (last integer in the reply), so these figures
are lower bounds on what the tasks report.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from finetune.chat import prompt_text

GENERATIVE_FAMILIES = ("related", "unrelated_math", "general")
COT_TOKENS = 96  # room for the longest worked solution of the tiny ranges


@torch.no_grad()
def greedy_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int = 24,
    batch_size: int = 64,
) -> list[str]:
    """Greedy replies to ``questions`` through the chat template, batched with left padding."""
    was_training = model.training
    model.eval()
    replies: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [prompt_text(tokenizer, q) for q in questions[start : start + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(
                **enc.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            replies += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return replies


def is_exact(row: dict, reply: str) -> bool:
    """Whether ``reply`` is exactly a reference answer of ``row`` (its worked solution for a
    chain-of-thought row)."""
    reply = reply.strip()
    if "answer_text" in row:
        return reply == row["answer_text"].strip()
    if row["family"] == "related":
        return reply in {str(r) for r in row["roots"]}
    return reply == str(row["answer"]).strip()


def exact_match_by_family(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict]
) -> dict[str, float]:
    """Strict exact-match rate per generative family present in ``rows`` (chain-of-thought rows
    apart, as ``<family>_cot``: their whole worked solution must match)."""
    rows = [r for r in rows if r["family"] in GENERATIVE_FAMILIES]
    hits: dict[str, list[bool]] = defaultdict(list)
    for cot in (False, True):
        part = [r for r in rows if ("answer_text" in r) == cot]
        if not part:
            continue
        replies = greedy_replies(model, tokenizer, [r["question"] for r in part],
                                 max_new_tokens=COT_TOKENS if cot else 24)
        for row, reply in zip(part, replies, strict=True):
            hits[row["family"] + ("_cot" if cot else "")].append(is_exact(row, reply))
    return {family: sum(h) / len(h) for family, h in sorted(hits.items())}
