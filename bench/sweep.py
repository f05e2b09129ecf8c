"""Sweep runner: each patch variant generating alone vs variants sharing engine passes.

    .venv/bin/python bench/sweep.py [--limit 50] [--together 1 4 8 22] [--threads 1]

One ``leaderboard.sweep.run_sweep`` per setting of ``generate_together``, each into a fresh
folder, on the shipped tiny model (clean) and the calibrated underfit fine-tune (corrupted;
``make demo`` or ``python -m finetune --config configs/finetune/tiny-underfit.yaml`` writes
it): the study's sweep (resid, attn, mlp at every layer) plus every head of the last layer,
on the three generative tasks (the multiple-choice task is scored by log-likelihood, which
sharing does not touch). Times are whole sweeps: model loading, the two baselines and every
``simple_evaluate`` included, in process CPU time (robust to other work on the shared cores)
and wall time. Every setting's metrics and replies are checked against ``together=1``, so a
ratio is never quoted for runs that did different work. Writes bench/results/sweep.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ itself would shadow the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from leaderboard import shared_generation  # noqa: E402
from leaderboard.config import SweepConfig  # noqa: E402
from leaderboard.results import Run, load_runs  # noqa: E402
from leaderboard.sweep import run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sweep.md"
TASKS = ["corrupt_related", "corrupt_unrelated_math", "corrupt_general"]
PATCHES = [{"sites": ["resid", "attn", "mlp"], "layers": "all"},
           {"sites": ["head"], "layers": "last", "heads": "all"}]


def _count_engine_calls() -> list[int]:
    """Record the number of specs of every shared engine call."""
    calls: list[int] = []
    real = shared_generation.sweep_generate

    def counting(receiver, donor, input_ids, specs, *args, **kwargs):  # noqa: ANN001, ANN002
        calls.append(len(specs))
        return real(receiver, donor, input_ids, specs, *args, **kwargs)

    shared_generation.sweep_generate = counting
    return calls


def _same_work(a: dict[str, Run], b: dict[str, Run]) -> bool:
    return sorted(a) == sorted(b) and all(
        a[n].metrics == b[n].metrics and all(a[n].replies(t) == b[n].replies(t) for t in TASKS)
        for n in a
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", default=str(ROOT / "models" / "tiny-qwen3-math"))
    parser.add_argument("--corrupted", default=str(ROOT / "runs" / "tiny-underfit" / "model"))
    parser.add_argument("--limit", type=int, default=50, help="items per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--together", type=int, nargs="+", default=[1, 4, 8, 22])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not (Path(args.corrupted) / "config.json").is_file():
        print(f"error: --corrupted {args.corrupted} is not a model dir; run make demo or "
              "python -m finetune --config configs/finetune/tiny-underfit.yaml first",
              file=sys.stderr)
        return 2
    if args.together[0] != 1:
        args.together.insert(0, 1)
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    calls = _count_engine_calls()
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for together in args.together:
            out = Path(tmp) / f"together-{together}"
            config = SweepConfig(clean=args.clean, corrupted={"underfit": args.corrupted},
                                 output_dir=str(out), tasks=TASKS, patches=PATCHES,
                                 limit=args.limit, batch_size=args.batch_size, device="cpu",
                                 dtype="float32", bootstrap_iters=0,
                                 generate_together=together)
            calls.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            outcome = run_sweep(config, progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if outcome.failed:
                print(f"error: together={together}: {outcome.failed}", file=sys.stderr)
                return 1
            runs[together] = {r.name: r for r in load_runs(out)}
            same = together == 1 or _same_work(runs[1], runs[together])
            rows.append([together, len(outcome.ran), len(calls) or "—", round(wall, 1),
                         round(cpu, 1), "yes" if same else "NO"])
            print(f"together={together}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    base_cpu, base_wall = rows[0][4], rows[0][3]
    for row in rows:
        row += [f"{base_cpu / row[4]:.2f}×", f"{base_wall / row[3]:.2f}×"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    table = tabulate(rows, headers=["generate_together", "variants", "shared engine calls",
                                    "wall s", "CPU s", "same scores and replies as 1",
                                    "speed-up (CPU)", "speed-up (wall)"], tablefmt="github")
    text = f"""# Sweep runner: shared generation

`python bench/sweep.py --limit {args.limit} --together {' '.join(map(str, args.together))} \
--threads {args.threads}` at {commit}, {platform.processor() or platform.machine()}, \
torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores (shared).

Clean `{Path(args.clean).name}`, corrupted `{args.corrupted}` (underfit); patches: resid, attn
and mlp at every layer, and every head of the last layer, positions newest, into the clean
model; tasks {', '.join(TASKS)}, {args.limit} items each, batch size {args.batch_size}, float32.
Each row is one whole sweep into a fresh folder (model loading, the two baselines and every
`simple_evaluate` included). `generate_together=1` is one engine pass per variant and prompt
batch; N shares each pass among up to N variants of the model pair. Speed-ups are against the
first row of this one run.

{table}
"""
    tmp_file = RESULTS.with_suffix(".md.tmp")
    tmp_file.write_text(text)
    tmp_file.replace(RESULTS)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
