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
ratio is never quoted for runs that did different work. The first row is the runner as it
was before sharing: one variant at a time, and lm-eval's environment report (torch's
``collect_env``, which spawns subprocesses) collected for every variant rather than once.
Writes bench/results/sweep.md.
"""

from __future__ import annotations

import argparse
import contextlib
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

from leaderboard import runner, sweep  # noqa: E402
from leaderboard.config import SweepConfig  # noqa: E402
from leaderboard.results import Run, load_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sweep.md"
TASKS = ["corrupt_related", "corrupt_unrelated_math", "corrupt_general"]
PATCHES = [{"sites": ["resid", "attn", "mlp"], "layers": "all"},
           {"sites": ["head"], "layers": "last", "heads": "all"}]


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
    settings = [("1, environment report per variant (before)", 1, False)]
    settings += [(str(n), n, True) for n in args.together]
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    real_env_once = runner.env_info_once
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, together, env_once) in enumerate(settings):
            out = Path(tmp) / f"setting-{i}"
            config = SweepConfig(clean=args.clean, corrupted={"underfit": args.corrupted},
                                 output_dir=str(out), tasks=TASKS, patches=PATCHES,
                                 limit=args.limit, batch_size=args.batch_size, device="cpu",
                                 dtype="float32", bootstrap_iters=0,
                                 generate_together=together)
            runner.env_info_once = real_env_once if env_once else contextlib.nullcontext
            wall, cpu = time.perf_counter(), time.process_time()
            outcome = sweep.run_sweep(config, progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if outcome.failed:
                print(f"error: together={together}: {outcome.failed}", file=sys.stderr)
                return 1
            runs[i] = {r.name: r for r in load_runs(out)}
            same = i == 0 or _same_work(runs[0], runs[i])
            rows.append([label, len(outcome.ran), len(outcome.shared_calls) or "—", round(wall, 1),
                         round(cpu, 1), "yes" if same else "NO"])
            print(f"{label}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    one_cpu, before_wall = rows[1][4], rows[0][3]
    for row in rows:
        row += [f"{one_cpu / row[4]:.2f}×", f"{before_wall / row[3]:.2f}×"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    corrupted = Path(args.corrupted).resolve()
    corrupted_name = corrupted.relative_to(ROOT) if corrupted.is_relative_to(ROOT) else corrupted
    table = tabulate(rows, headers=["generate_together", "variants", "shared engine calls",
                                    "wall s", "CPU s", "same scores and replies",
                                    "CPU speed-up vs 1", "wall speed-up vs before"],
                     tablefmt="github")
    text = f"""# Sweep runner: shared generation

`python bench/sweep.py --limit {args.limit} --together {' '.join(map(str, args.together))} \
--threads {args.threads}` at {commit}, {platform.processor() or platform.machine()}, \
torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores (shared).

Clean `{Path(args.clean).name}`, corrupted `{corrupted_name}` (underfit); patches: resid, attn
and mlp at every layer, and every head of the last layer, positions newest, into the clean
model; tasks {', '.join(TASKS)}, {args.limit} items each, batch size {args.batch_size}, float32.
Each row is one whole sweep into a fresh folder (model loading, the two baselines and every
`simple_evaluate` included). `generate_together=1` is one engine pass per variant and prompt
batch; N shares each pass among up to N variants of the model pair. The first row is the runner
before this change (also collecting lm-eval's environment report, ~0.5 s of subprocesses, for
every variant). CPU time leaves out those subprocesses, so the CPU ratio against row `1`
measures sharing alone; the wall ratio against the first row is what a user waits. All rows
come from this one run.

{table}
"""
    tmp_file = RESULTS.with_suffix(".md.tmp")
    tmp_file.write_text(text)
    tmp_file.replace(RESULTS)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
