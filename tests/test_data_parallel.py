"""lm-eval's data parallel (``accelerate launch -m lm_eval --model patched_hf``) on CPU: two
ranks under ``torch.distributed.run`` with gloo, each with both models on its own device and
half of the requests, give rank 0 the same samples and metrics as one process."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
from model_pairs import perturbed_copy
from processes import run_together

REPO = Path(__file__).resolve().parents[1]
CLEAN = REPO / "models" / "tiny-qwen3-math"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_split_the_requests_and_gather_one_process_results(tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from harness_ext.patched_lm import PatchedLM
    from harness_ext.paths import TASKS_DIR

    corrupted = perturbed_copy(CLEAN, tmp_path / "corrupted", first_block=3, seed=0)
    out = tmp_path / "ranks"
    out.mkdir()
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
                        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(REPO / "tests" / "data_parallel_rank.py"), str(CLEAN), str(corrupted), str(out)]
    (finished,) = run_together([command], tmp_path / "logs", REPO, env, timeout=300)
    assert finished.returncode == 0, finished.err[-3000:]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, place in enumerate(ranks):
        assert (place["rank"], place["world_size"]) == (r, 2)
        assert place["receiver"] == place["donor"] == place["device"]
    shares = [set(place["answered"]) for place in ranks]
    assert len(shares[0]) == len(shares[1]) == 5 and not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(range(10))

    lm = PatchedLM.create_from_arg_string(
        f"pretrained={CLEAN},corrupted={corrupted},site=resid,layers=[3],"
        "enable_thinking=False,batch_size=5,device=cpu")
    alone = simple_evaluate(model=lm, tasks=["corrupt_related"], limit=10,
                            apply_chat_template=True, log_samples=True,
                            task_manager=TaskManager(include_defaults=False,
                                                     include_path=str(TASKS_DIR)))
    gathered = json.loads((out / "results.json").read_text())
    samples = sorted([s["doc_id"], s["resps"]] for s in alone["samples"]["corrupt_related"])
    assert gathered["samples"] == samples
    metrics = {k: v for k, v in alone["results"]["corrupt_related"].items()
               if isinstance(v, float)}
    assert gathered["metrics"] == pytest.approx(metrics)
