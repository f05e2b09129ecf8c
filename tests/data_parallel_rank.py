"""One rank of lm-eval's data parallel over ``patched_hf`` on CPU (tests/test_data_parallel.py).

Run by ``torch.distributed.run``: ``python -m torch.distributed.run --nproc_per_node 2
tests/data_parallel_rank.py CLEAN CORRUPTED OUT``. lm-eval engages data parallel only when it
counts more than one GPU, so this process is told it has ``WORLD_SIZE`` of them; everything
else is lm-eval's own path: accelerate's process group (gloo, as ``ACCELERATE_USE_CPU`` is set),
each rank building and answering its share of the requests, and the ranks' samples and metrics
gathered on rank 0. Each rank writes where its models sit and how many requests it answered to
``OUT/rank<r>.json``; rank 0 also writes the gathered results to ``OUT/results.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

torch.cuda.device_count = lambda: int(os.environ["WORLD_SIZE"])  # see the module docstring

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from harness_ext.patched_lm import PatchedLM  # noqa: E402
from harness_ext.paths import TASKS_DIR  # noqa: E402


def where(device: torch.device | str) -> str:
    """A device with its index spelled out (``cpu`` and ``cpu:0`` are one device)."""
    device = torch.device(device)
    return f"{device.type}:{device.index or 0}"


ARGS = "site=resid,layers=[3],parallelize=False,enable_thinking=False,batch_size=5"


def main(clean: str, corrupted: str, out: Path) -> None:
    lm = PatchedLM.create_from_arg_string(f"pretrained={clean},corrupted={corrupted},{ARGS}")
    answered = []
    generate_until = lm.generate_until

    def counted(requests, *args, **kwargs):  # type: ignore[no-untyped-def]
        answered.extend(r.doc_id for r in requests)
        return generate_until(requests, *args, **kwargs)

    lm.generate_until = counted  # type: ignore[method-assign]
    results = simple_evaluate(model=lm, tasks=["corrupt_related"], limit=10,
                              apply_chat_template=True, log_samples=True,
                              task_manager=TaskManager(include_defaults=False,
                                                       include_path=str(TASKS_DIR)))
    place = {
        "rank": lm.rank, "world_size": lm.world_size, "device": where(lm.device),
        "receiver": where(next(lm.receiver.parameters()).device),
        "donor": where(next(lm.donor.parameters()).device),
        "answered": sorted(answered),
    }
    (out / f"rank{lm.rank}.json").write_text(json.dumps(place))
    if results is not None:  # rank 0 only
        samples = [(s["doc_id"], s["resps"]) for s in results["samples"]["corrupt_related"]]
        metrics = {k: v for k, v in results["results"]["corrupt_related"].items()
                   if isinstance(v, float)}
        (out / "results.json").write_text(json.dumps({"samples": sorted(samples),
                                                      "metrics": metrics}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
