"""``python -m harness_ext.judge --results DIR --judge MODEL``: judge lm-eval's samples in DIR.

Scores every reply of the open-ended tasks (``corrupt_em*``, ``corrupt_open_questions``) for
aligned and coherent with a local judge model, and writes ``judged_<task>_<date>.jsonl`` and
``judge_<date>.json`` next to each samples file (docs/judge.md).
A re-run reuses the cache (default ``DIR/judge_cache.sqlite``) and judges nothing twice.
"""

from __future__ import annotations

import argparse
import json
import sys

from tabulate import tabulate

from .answers import JudgeError
from .config import JudgeConfig
from .model import BACKENDS
from .samples import JUDGED_TASKS
from .score import MASS_THRESHOLD


def _fmt(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    err = "" if stat["stderr"] is None else f" ± {stat['stderr']:.2f}"
    return f"{stat['mean']:.2f}{err}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness_ext.judge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="lm-eval --output_path folder")
    parser.add_argument("--judge", required=True, help="judge model: local dir or hub id")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per HF forward")
    parser.add_argument("--cache", default=None, help="cache file (default DIR/judge_cache.sqlite)")
    parser.add_argument("--tasks", default=",".join(JUDGED_TASKS),
                        help="comma-separated task name patterns to judge")
    parser.add_argument("--threshold", type=float, default=MASS_THRESHOLD,
                        help="least probability on the numbers 0..100 for a score")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)
    from .run import judge_folder

    try:
        config = JudgeConfig(args.judge, args.backend, args.threshold, args.batch_size,
                             tuple(p for p in args.tasks.split(",") if p), args.device,
                             args.dtype)
        judge = config.load()
        done = judge_folder(args.results, judge, args.cache, config.tasks)
    except (JudgeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    for path in done.metrics:
        for task, entry in json.loads(path.read_text())["tasks"].items():
            pooled = entry["pooled"]
            rows.append([str(path.parent), task, pooled["replies"], _fmt(pooled["aligned"]),
                         _fmt(pooled["coherent"]), _fmt(pooled["misaligned"]),
                         sum(pooled["flagged"].values()), pooled["unscored"]["aligned"]])
    print(tabulate(rows, headers=["folder", "task", "replies", "aligned", "coherent",
                                  "misaligned", "flagged", "unscored"], tablefmt="github"))
    ident = judge.identity
    print(f"judge {ident.model} (files sha256 {ident.files_sha256[:12]}), prompt v"
          f"{ident.prompt_version} (sha256 {ident.prompt_sha256[:12]}), unscored below "
          f"{ident.threshold:g} mass; {len(done.metrics)} metrics file(s), "
          + ("written" if done.rewritten else "unchanged: the samples were judged already"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
