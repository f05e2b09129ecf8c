"""Cooperating sweep workers: N processes on one config and one output folder, no ``--shard``,
against one process doing the same sweep.

    .venv/bin/python bench/cooperating.py [--workers 2 3] [--limit 30]

Each setting runs ``python -m leaderboard.sweep`` N times at once into a fresh folder, on the
shipped tiny model (clean) and the calibrated underfit fine-tune (corrupted; ``python -m
finetune --config configs/finetune/tiny-underfit.yaml`` writes it), over the study's sweep
(resid, attn, mlp at every layer, both directions; every head of the last two layers) on the
three generative tasks. CPU time is
the processes' own user + system time (``RUSAGE_CHILDREN``), start-up and model loading
included, so the ratio to one process is the whole cost of running N workers: each worker's
start-up, the machine's contention and the claims, with no variant run twice (the runs' metrics
and replies are checked equal to one process's). On 2 cores N workers cannot be faster in
wall time than 2.

The CPU beyond one process is broken down by controls measured in the same run: the start-up
of one worker (imports and planning: a worker started on the finished folder, which has
nothing left to run; then loading the two models and lm-eval's environment report, in a
process of their own), which every extra process pays once, and the machine's contention (N
independent one-worker sweeps, each into its own folder, run at once), which inflates the CPU
time of the same work done beside other work. What is left after both is what cooperating
itself costs: claims, polls, re-reading finished results. A one-worker warm-up on a tiny limit
runs first, uncounted, so that no row pays for filling the datasets cache. Writes
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


# What each worker does once beyond its imports, in a process of its own: loading the two
# models and lm-eval's environment report (collected once per process:
# leaderboard.runner.env_info_once). Prints its CPU seconds, subprocesses included.
FIXED = """
import resource, sys
from transformers import AutoModelForCausalLM
from lm_eval.loggers.utils import add_env_info
def cpu():
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
start = cpu()
for path in sys.argv[1:]:
    AutoModelForCausalLM.from_pretrained(path)
add_env_info({})
print(cpu() - start)
"""


def fixed_cpu(models: list[str]) -> float:
    """CPU seconds of ``FIXED`` on ``models``."""
    done = subprocess.run([sys.executable, "-c", FIXED, *models], cwd=ROOT, env=os.environ | ENV,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the start-up control failed: {done.stderr.strip()[-300:]}")
    return float(done.stdout)


def run_workers(configs: list[Path]) -> tuple[float, float, list[int]]:
    """(wall s, CPU s of all, variants each ran) of one sweep process per config, at once."""
    cpu, wall = children_cpu(), time.perf_counter()
    # Each worker prints to its own file: pipes read one after another can fill and block a
    # worker that holds a claim the others wait for.
    with tempfile.TemporaryDirectory() as logs:
        files = [open(Path(logs) / f"worker{i}.out", "w+") for i in range(len(configs))]
        procs = [subprocess.Popen([sys.executable, "-m", "leaderboard.sweep", "--config",
                                   str(config)], cwd=ROOT, env=os.environ | ENV,
                                  stdout=out, stderr=subprocess.DEVNULL, text=True)
                 for config, out in zip(configs, files, strict=True)]
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


def sweep_config(folder: Path, name: str, args: argparse.Namespace, limit: int | None = None
                 ) -> Path:
    """The bench's sweep config, writing into ``folder/name``."""
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "clean": args.clean, "corrupted": {"underfit": args.corrupted},
        "output_dir": str(folder / name), "tasks": TASKS, "patches": PATCHES,
        "limit": limit or args.limit, "batch_size": 50, "device": "cpu", "dtype": "float32",
        "bootstrap_iters": 0}))
    return config


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
    rows, runs, beside = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Warm-up, not counted: the first sweep on a machine also fills the datasets cache and
        # compiles bytecode, which would be charged to whichever row ran first.
        run_workers([sweep_config(folder, "warm-up", args, limit=1)])
        for workers in [1, *args.workers]:
            config = sweep_config(folder, f"w{workers}", args)
            wall, cpu, ran = run_workers([config] * workers)
            runs[workers] = {r.name: (r.metrics, [r.replies(t) for t in TASKS])
                             for r in load_runs(folder / f"w{workers}")}
            rows.append([workers, "+".join(map(str, ran)), sum(ran), round(wall, 1),
                         round(cpu, 1)])
            print(f"{workers} worker(s): {wall:.1f} s wall, {cpu:.1f} s CPU, ran {ran}",
                  flush=True)
        _, startup, ran = run_workers([folder / "w1.yaml"])  # all finished: start-up only
        assert ran == [0], ran
        print(f"start-up of one worker: {startup:.1f} s CPU", flush=True)
        for n in args.workers:  # the contention control: n whole sweeps, n folders, at once
            _, cpu, _ = run_workers([sweep_config(folder, f"apart{n}-{i}", args)
                                     for i in range(n)])
            beside[n] = cpu / n
            print(f"{n} separate sweeps at once: {beside[n]:.1f} s CPU each", flush=True)
        # One worker again, last: the machine's speed can drift over the run (another tenant of
        # the host), and the baseline is then the mean of the first and the last.
        last_wall, last_cpu, _ = run_workers([sweep_config(folder, "w1-last", args)])
        print(f"1 worker, last: {last_wall:.1f} s wall, {last_cpu:.1f} s CPU", flush=True)
    fixed = fixed_cpu([args.clean, args.corrupted])
    print(f"model loads and environment report: {fixed:.1f} s CPU", flush=True)
    one = rows[0]
    base_cpu, base_wall = (one[4] + last_cpu) / 2, (one[3] + last_wall) / 2
    drift = abs(one[4] - last_cpu) / base_cpu
    for row in rows:
        same = runs[row[0]] == runs[1]
        row += [f"{row[4] / base_cpu:.2f}×", f"{base_wall / row[3]:.2f}×",
                "yes" if same else "NO"]
    parts, aside = [], []
    for row in rows[1:]:
        workers, cpu = row[0], row[4]
        contention = beside[workers] / base_cpu
        expected = contention * (base_cpu + (workers - 1) * (startup + fixed))
        left = cpu - expected
        aside.append((base_cpu + left) / base_cpu)
        parts.append([workers, cpu, f"{beside[workers]:.1f} ({contention:.2f}×)",
                      round(expected, 1), round(left, 1), f"{aside[-1]:.2f}×"])
    worst = max(row[4] / base_cpu for row in rows)
    verdict = (f"The most any setting spent is {worst:.2f}× one worker's CPU: "
               + (f"within the aim of {AIM}×." if worst <= AIM else f"over the aim of {AIM}×."))
    command = " ".join(sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    table = tabulate(rows, headers=["workers", "variants each ran", "variants in all", "wall s",
                                    "CPU s (all workers)", "CPU vs one", "wall speed-up",
                                    "same metrics and replies"], tablefmt="github")
    breakdown = tabulate(parts, headers=[
        "workers", "CPU s (all workers)", "one sweep's CPU s beside N−1 others (vs alone)",
        "expected s: that factor × (one + N−1 start-ups)", "left s", "one + left, vs one"],
        tablefmt="github")
    text = f"""# Cooperating sweep workers

`python bench/cooperating.py {command}`
at git {commit}, {time.strftime('%Y-%m-%d')}, on {platform.processor() or platform.machine()}
with {os.cpu_count()} cores, one thread per worker. The sweep: resid, attn and mlp at each
layer of the tiny model, both directions, and every head of its last two layers ({one[2]}
variants, baselines included), at most {args.limit} items of each generative task. Each row
starts its workers at once on one config and one output folder (no `--shard`); CPU is every
worker's user + system time, start-up included.

{table}

One worker ran first and again last: {one[4]:.1f} s and {last_cpu:.1f} s of CPU, a drift of
{drift:.0%} in the machine's speed over the run; every ratio is to their mean ({base_cpu:.1f} s),
and is uncertain by about that drift.

{verdict}

Every variant ran once in each setting (the counts add up to the one-worker run's), and every
setting's metrics and replies equal the one-worker run's, so no variant was scored twice.

## Where the extra CPU goes

Controls measured in the same run:
- **Start-up.** One worker started on the finished folder, with nothing left to run, spent
  {startup:.1f} s of CPU: importing torch, transformers and lm-eval and planning the sweep.
  Loading the two models and lm-eval's environment report (pip and system probes), which a
  worker does once when it starts scoring, took {fixed:.1f} s more in a process of their own.
  Every extra worker pays these once: {(startup + fixed) / base_cpu:.1%} of the one-worker sweep.
- **Contention.** N whole one-worker sweeps, each into its own folder, run at once: the CPU
  time of each, against one sweep run alone, is what the same work costs beside N−1 others on
  this machine, whoever schedules it.

{breakdown}

"Left" is what remains after both: what cooperating itself costs (claims, polls, re-reading
finished results), within the noise of the controls. Without the start-ups and the
contention, the workers would spend at most {max(aside):.2f}× one worker's CPU. The start-up
costs do not grow with the sweep (one worker needs {base_cpu:.0f} s of CPU for this one), so
their share falls as the work per worker grows.
"""
    RESULTS.write_text(text)
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
