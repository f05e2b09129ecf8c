"""Answer-sequence log-probabilities with HF transformers: one prompt pass, one trie pass.

For a batch of judge prompts the prompt runs once (left-padded, position ids counted from each
row's first real token); its KV cache is then shared by every node of the answer trie. All trie
levels go through ONE further forward, in which each node attends to its prompt and to its own
ancestors only (a tree attention mask): node ``n`` at depth ``d`` sits at position
``len(prompt) + d - 1``, exactly where it would sit in the plain sequence prompt + path(n). So a
batch of R prompts costs two forwards, however many numbers and spellings the trie holds,
and the prompt's KV cache is never copied per node (101 separate forwards would run the prompt
101 times; a level-by-level scheme would copy its cache for every node of a level).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .answers import AnswerSet, Trie


def _tree_tensors(trie: Trie, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Node tokens, node depths and the ancestor-or-self matrix (the tree attention mask)."""
    n = len(trie.tokens)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for node in range(n):
        allowed[node, trie.path(node)] = True
    return (torch.tensor(trie.tokens, device=device), torch.tensor(trie.depths, device=device),
            allowed.to(device))


class HFScorer:
    """``logprobs(prompts)[i, s] = log p(answer sequence s, then an end token | prompt i)``."""

    def __init__(self, model: Any, pad_id: int, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        self.model, self.pad_id = model.eval(), pad_id
        self.batch_size = batch_size
        # transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns)
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logprobs(self, prompts: Sequence[Sequence[int]], answers: AnswerSet) -> np.ndarray:
        out = np.empty((len(prompts), len(answers.sequences)), dtype=np.float64)
        tree = _tree_tensors(answers.trie, self.device)
        # longest first: rows of one batch have similar lengths (little padding)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._batch([prompts[i] for i in rows], answers, tree)
        return out

    @torch.no_grad()
    def _batch(self, prompts: list[Sequence[int]], answers: AnswerSet,
               tree: tuple[torch.Tensor, ...]) -> np.ndarray:
        tokens, depths, allowed = tree
        trie, device = answers.trie, self.device
        width = max(len(p) for p in prompts)
        if min(len(p) for p in prompts) == 0:
            raise ValueError("an empty judge prompt")
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(list(prompt))
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(device), mask.to(device)
        lengths = mask.sum(1)
        first = self.model(input_ids=ids, attention_mask=mask,
                           position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=True,
                           logits_to_keep=1)
        rows, nodes = len(prompts), len(tokens)
        see = torch.cat([mask.bool()[:, None, :].expand(rows, nodes, width),
                         allowed.expand(rows, nodes, nodes)], dim=-1)[:, None]
        dtype = first.logits.dtype
        bias = torch.zeros(see.shape, dtype=dtype, device=device)
        bias.masked_fill_(~see, torch.finfo(dtype).min)
        second = self.model(input_ids=tokens.expand(rows, nodes), attention_mask=bias,
                            position_ids=lengths[:, None] + depths[None, :] - 1,
                            use_cache=True, **{self.cache_arg: getattr(first, self.cache_arg)})
        edge, end = _edges(first.logits[:, -1], second.logits, trie, answers.terminators)
        return trie.sequence_logprobs(edge, end)


def _edges(root: torch.Tensor, node_logits: torch.Tensor, trie: Trie,
           terminators: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each node's edge log-probability (its token, from its parent's logits or the prompt's)
    and end log-probability (any terminator next), from full-vocabulary logits."""
    work = torch.float64 if root.dtype == torch.float64 else torch.float32
    root, node_logits = root.to(work), node_logits.to(work)
    device = root.device
    parents = torch.tensor(trie.parents, device=device)
    tokens = torch.tensor(trie.tokens, device=device)
    node_lse = node_logits.logsumexp(-1)  # (rows, nodes)
    parent = parents.clamp(min=0)
    edge = node_logits[:, parent, tokens] - node_lse[:, parent]
    root_edge = root[:, tokens] - root.logsumexp(-1)[:, None]
    edge = torch.where(parents[None, :] < 0, root_edge, edge)
    end = node_logits[..., list(terminators)].logsumexp(-1) - node_lse
    return edge.double().cpu().numpy(), end.double().cpu().numpy()


def load_hf(path: Any, tokenizer: Any, device: str = "auto", dtype: str = "auto",
            batch_size: int = 8) -> HFScorer:
    """The judge's weights with SDPA attention (the tree mask is a 4-D additive mask). ``auto``
    device: the GPU when there is one; ``auto`` dtype: the checkpoint's on a GPU, float32 on a
    CPU (faster there than bfloat16, and exact)."""
    from transformers import AutoModelForCausalLM

    where = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                         else "cpu" if device == "auto" else device)
    if dtype == "auto" and where.type == "cpu":
        dtype = "float32"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return HFScorer(model.to(where), pad, batch_size)
