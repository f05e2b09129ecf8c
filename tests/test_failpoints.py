"""Crash consistency: every long-running path crashes at each of its failpoints
(formats.failpoints: ``os._exit``, no clean-up), the same command is run again, and its final
artefacts must equal an uninterrupted run's (weights bit for bit, metrics, samples, page
bytes); a further rerun of the finished job must change nothing at all (no file written).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from judge_helpers import LOW, write_run
from leaderboard_fixtures import tiny_config, tiny_pair, write_yaml

from formats.failpoints import ENV, FAILPOINT_EXIT, FAILPOINTS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "tiny-qwen3-math"
BASE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def run(*args: str | Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV} | BASE_ENV
    if failpoint:
        env[ENV] = failpoint
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)


def crashed(done: subprocess.CompletedProcess, point: str) -> None:
    assert done.returncode == FAILPOINT_EXIT, done.stderr[-2000:]
    assert f"failpoint {point.split('@')[0]}" in done.stderr


def ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-2000:]


def files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def idempotent(rerun, folder: Path) -> None:
    """A rerun of the finished job writes nothing."""
    before = files(folder)
    ok(rerun())
    assert files(folder) == before


def test_every_failpoint_sits_in_the_code() -> None:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    source = "\n".join((REPO / p).read_text() for p in tracked if not p.startswith("tests/"))
    placed = set(re.findall(r'failpoint\("([a-z_.]+)"\)', source))
    assert placed == set(FAILPOINTS)


# -- fine-tune ---------------------------------------------------------------------------------

def sft_config(tmp: Path, out: Path, data: Path) -> Path:
    raw = yaml.safe_load((REPO / "configs/finetune/tiny-underfit.yaml").read_text()) | {
        "base_model": str(SHIPPED), "data_dir": str(data), "output_dir": str(out),
        "max_steps": 4, "save_steps": 2, "eval_steps": 2, "per_device_batch_size": 8}
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def sft_outputs(out: Path) -> dict[str, object]:
    """What a fine-tune leaves, less its wall time and its own folder's name."""
    summary = json.loads((out / "summary.json").read_text().replace(str(out), "OUT"))
    summary.pop("wall_seconds")
    return {"summary": summary, "metrics": (out / "metrics.jsonl").read_bytes(),
            "table1": (out / "table1.md").read_bytes(),
            "weights": (out / "model" / "model.safetensors").read_bytes()}


@pytest.mark.slow
def test_fine_tune_crashes_resume_to_the_uninterrupted_result(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ref = sft_config(tmp_path, tmp_path / "ref", data)
    ok(run("finetune", "--config", ref))
    want = sft_outputs(tmp_path / "ref")
    for point in ("sft.step_end@3", "sft.before_final_save"):
        out = tmp_path / point.replace("@", "-")
        cfg = sft_config(tmp_path, out, data)
        crashed(run("finetune", "--config", cfg, failpoint=point), point)
        assert not (out / "summary.json").exists()
        ok(run("finetune", "--config", cfg, "--resume"))
        assert sft_outputs(out) == want, point
    idempotent(lambda: run("finetune", "--config", cfg, "--resume"), out)  # the last one


# -- sweep -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_crash_reruns_to_the_uninterrupted_page(tmp_path: Path) -> None:
    clean, over = tiny_pair(tmp_path / "models")
    patches = [{"sites": ["resid", "mlp"], "layers": "all"}]
    pages = {}
    for name, point in (("ref", None), ("crashed", "sweep.before_results@3")):
        out = tmp_path / name / "sweep"  # one folder name: the page is named after it
        cfg = write_yaml(tmp_path / f"{name}.yaml", tiny_config(clean, over, out, patches=patches))
        if point:
            crashed(run("leaderboard.sweep", "--config", cfg, failpoint=point), point)
        ok(run("leaderboard.sweep", "--config", cfg))
        page = tmp_path / name / "PAGE.md"  # one page name: the plots folder is named after it
        ok(run("leaderboard.build", out, "-o", page))
        pages[name] = page.read_text().replace(str(out), "OUT")
        pages[f"{name} samples"] = {str(p.relative_to(out)).split("/")[0]: p.read_bytes()
                                    for p in sorted(out.rglob("samples_*.jsonl"))}
    assert pages["crashed"] == pages["ref"]
    assert pages["crashed samples"] == pages["ref samples"]
    plots = [{p.name: p.read_bytes() for p in (tmp_path / n / "PAGE_plots").glob("*.png")}
             for n in ("ref", "crashed")]
    assert plots[0] == plots[1] and plots[0]
    cfg = tmp_path / "crashed.yaml"
    idempotent(lambda: run("leaderboard.sweep", "--config", cfg), tmp_path / "crashed")


# -- study -----------------------------------------------------------------------------------

def study_config(tmp: Path, name: str) -> Path:
    raw = yaml.safe_load((REPO / "configs/study/smoke.yaml").read_text())
    raw |= {"name": name, "work_dir": str(tmp / name), "report": {"publish_dir": None,
                                                                  "readme": None}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def stage_outputs(work: Path) -> dict[str, object]:
    """The data files, the base model and each stage's DONE hash."""
    done = {p.parent.name: json.loads(p.read_text())["hash"] for p in work.glob("*/DONE.json")}
    kept = {str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*"))
            if p.is_file() and p.suffix in (".jsonl", ".safetensors") and "/runs/" not in str(p)}
    return {"done": done, "files": kept}


@pytest.mark.slow
def test_study_crashes_at_stage_markers_resume_to_the_same_stages(tmp_path: Path) -> None:
    ref = study_config(tmp_path, "ref")
    ok(run("study", "--config", ref, "--until", "base"))
    want = stage_outputs(tmp_path / "ref")
    assert set(want["done"]) == {"data", "base"}
    for point in ("study.stage_started@2", "study.before_done@1"):
        name = point.replace("@", "-").replace(".", "_")
        cfg = study_config(tmp_path, name)
        crashed(run("study", "--config", cfg, "--until", "base", failpoint=point), point)
        ok(run("study", "--config", cfg, "--until", "base"))
        assert stage_outputs(tmp_path / name) == want, point
    idempotent(lambda: run("study", "--config", cfg, "--until", "base"), tmp_path / name)


# -- judge -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_judge_crash_after_a_cache_write_reruns_to_the_same_files(tmp_path: Path) -> None:
    outputs = {}
    for name, point in (("ref", None), ("crashed", "judge.cache_write@2")):
        write_run(tmp_path / name / "run")
        args = ("harness_ext.judge", "--results", tmp_path / name, "--judge", SHIPPED,
                "--backend", "hf", "--threshold", str(LOW), "--batch-size", "2")
        if point:
            crashed(run(*args, failpoint=point), point)
        ok(run(*args))
        outputs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name / "run").iterdir())
                         if p.name.startswith(("judged_", "judge_"))}
        if point:
            idempotent(lambda a=args: run(*a), tmp_path / name)
    assert outputs["crashed"] == outputs["ref"] and len(outputs["ref"]) == 2
    shutil.rmtree(tmp_path / "ref")
