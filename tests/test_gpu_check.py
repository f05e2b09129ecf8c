"""The prepared GPU check rehearses on the CPU, so that a lent GPU is never its first run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_rehearsal_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    # as the shell script runs it: a script whose folder (bench/) holds a patching.py
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--rehearse", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:] + out.read_text()[-3000:]
    text = out.read_text()
    assert "FAILED" not in text
    assert "float32: 18/18 site x position cases equal to the reference" in text
    assert "| Qwen3-8B (2 layers, narrow) |" in text and "replies scored in" in text


def test_gpu_check_refuses_to_run_without_a_gpu_unless_rehearsing(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", str(tmp_path / "x.md")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no GPU here; run with --rehearse" in done.stderr
    assert not (tmp_path / "x.md").exists()
