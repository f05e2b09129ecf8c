"""Cooperating sweep workers: N processes on one config and one output folder, no ``--shard``,
against one process doing the same sweep.

    .venv/bin/python bench/cooperating.py [--workers 2 3] [--limit 30]

Each setting runs ``python -m leaderboard.sweep`` N times at once into a fresh folder, on the
shipped tiny model (clean) and the calibrated underfit fine-tune (corrupted; ``python -m
finetune --config configs/finetune/tiny-underfit.yaml`` writes it), over the study's sweep
(resid, attn, mlp at every layer, both directions; every head of the last two layers) on the
three generative tasks. CPU time is
the processes' own user + system time (``RUSAGE_CHILDREN``), start-up and model loading
included, so the ratio to one process is the whole cost of cooperating: each worker's start-up
and its claims, and no variant run twice (the runs' metrics and replies are checked equal to
one process's). On 2 cores N workers cannot be faster in wall time than 2. Writes
bench/results/cooperating.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ itself would shadow the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import yaml  # noqa: E402
from tabulate import tabulate  # noqa: E402

from leaderboard.results import load_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cooperating.md"
TASKS = ["corrupt_related", "corrupt_unrelated_math", "corrupt_general"]
# The tiny study's sweep (configs/study/tiny.yaml).
PATCHES = [{"sites": ["resid", "attn", "mlp"], "layers": "all",
            "directions": ["corrupted_to_clean", "clean_to_corrupted"]},
           {"sites": ["head"], "layers": [-2, -1], "heads": "all"}]
AIM = 1.1  # issue #23: N cooperating workers spend at most this times one worker's CPU
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def setting(config: Path, workers: int) -> tuple[float, float, list[int]]:
    """(wall s, CPU s, variants each worker ran) of ``workers`` processes on one config."""
    cpu, wall = children_cpu(), time.perf_counter()
    # Each worker prints to its own file: pipes read one after another can fill and block a
    # worker that holds a claim the others wait for.
    with tempfile.TemporaryDirectory() as logs:
        files = [open(Path(logs) / f"worker{i}.out", "w+") for i in range(workers)]
        procs = [subprocess.Popen([sys.executable, "-m", "leaderboard.sweep", "--config",
                                   str(config)], cwd=ROOT, env=os.environ | ENV,
                                  stdout=out, stderr=subprocess.DEVNULL, text=True)
                 for out in files]
        for proc in procs:
            proc.wait()
        outs = []
        for out in files:
            out.seek(0)
            outs.append(out.read())
            out.close()
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
    ran = [int(out.split(" ran,")[0].split()[-1]) for out in outs]
    return time.perf_counter() - wall, children_cpu() - cpu, ran


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", default=str(ROOT / "models" / "tiny-qwen3-math"))
    parser.add_argument("--corrupted", default=str(ROOT / "runs" / "tiny-underfit" / "model"))
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--limit", type=int, default=30)
    args = parser.parse_args()
    if not (Path(args.corrupted) / "config.json").is_file():
        print(f"error: {args.corrupted}: no model; run python -m finetune --config "
              "configs/finetune/tiny-underfit.yaml first", file=sys.stderr)
        return 2
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in [1, *args.workers]:
            out = Path(tmp) / f"w{workers}"
            config = Path(tmp) / f"w{workers}.yaml"
            config.write_text(yaml.safe_dump({
                "clean": args.clean, "corrupted": {"underfit": args.corrupted},
                "output_dir": str(out), "tasks": TASKS, "patches": PATCHES,
                "limit": args.limit, "batch_size": 50, "device": "cpu", "dtype": "float32",
                "bootstrap_iters": 0}))
            wall, cpu, ran = setting(config, workers)
            runs[workers] = {r.name: (r.metrics, [r.replies(t) for t in TASKS])
                             for r in load_runs(out)}
            rows.append([workers, "+".join(map(str, ran)), sum(ran), round(wall, 1),
                         round(cpu, 1)])
            print(f"{workers} worker(s): {wall:.1f} s wall, {cpu:.1f} s CPU, ran {ran}",
                  flush=True)
    one = rows[0]
    for row in rows:
        same = runs[row[0]] == runs[1]
        row += [f"{row[4] / one[4]:.2f}×", f"{one[3] / row[3]:.2f}×", "yes" if same else "NO"]
    worst = max(row[4] / one[4] for row in rows)
    verdict = (f"The most any setting spent is {worst:.2f}× one worker's CPU: "
               + (f"within the aim of {AIM}×." if worst <= AIM else f"over the aim of {AIM}×."))
    command = " ".join(sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    table = tabulate(rows, headers=["workers", "variants each ran", "variants in all", "wall s",
                                    "CPU s (all workers)", "CPU vs one", "wall speed-up",
                                    "same metrics and replies"], tablefmt="github")
    text = f"""# Cooperating sweep workers

`python bench/cooperating.py {command}`
at git {commit}, {time.strftime('%Y-%m-%d')}, on {platform.processor() or platform.machine()}
with {os.cpu_count()} cores, one thread per worker. The sweep: resid, attn and mlp at each
layer of the tiny model, both directions, and every head of its last two layers ({one[2]}
variants, baselines included), at most {args.limit} items of each generative task. Each row
starts its workers at once on one config and one output folder (no `--shard`); CPU is every
worker's user + system time, start-up included.

{table}

{verdict}

Every variant ran once in each setting (the counts add up to the one-worker run's), and every
setting's metrics and replies equal the one-worker run's, so no variant was scored twice. The
CPU beyond one process is each extra worker's start-up, its claims and its share of the two
cores; this bench does not break it down further.
"""
    RESULTS.write_text(text)
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
