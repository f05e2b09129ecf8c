"""The issue's "done when": a tiny sweep with patch variants end to end, resumable, with the
page and PNGs. Needs the real ``patched_qwen`` (issue #5); skipped while it is the placeholder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from leaderboard_fixtures import tiny_config, tiny_pair
from lm_eval.models.huggingface import HFLM

from harness_ext.patched_lm import PatchedQwenLM
from leaderboard import build, store
from leaderboard.results import load_runs
from leaderboard.sweep import run_sweep

pytestmark = pytest.mark.skipif(not issubclass(PatchedQwenLM, HFLM),
                                reason="patched_qwen is still the placeholder (issue #5)")

PATCHES = [{"sites": ["resid", "attn", "mlp"], "layers": "all"},
           {"sites": "head", "layers": "last", "heads": "all"}]


def test_tiny_patched_sweep_end_to_end(tmp_path: Path) -> None:
    clean, over = tiny_pair(tmp_path / "models")
    out = tmp_path / "out"
    cfg = tiny_config(clean, over, out, patches=PATCHES)
    outcome = run_sweep(cfg, progress=False)
    assert not outcome.failed, outcome.failed
    assert len(outcome.ran) == 2 + 3 * 2 + 2  # baselines, 3 sites x 2 layers, 2 heads of L1

    runs = {r.name: r for r in load_runs(out)}
    corrupted = runs["corrupted-over"]
    last = runs["patch-over-resid-L1-newest-into_clean"]
    assert last.by_construction
    for task, kind in last.output_types.items():
        if kind == "generate_until":  # true by construction: the donor's replies exactly
            assert last.replies(task) == corrupted.replies(task), task

    page_path = build.build(out, tmp_path / "LEADERBOARD.md")
    page = page_path.read_text()
    assert f"{last.name} †" in page and "True by construction" in page
    assert "### Where does the corruption live" in page
    plots = sorted(p.name for p in (tmp_path / "LEADERBOARD_plots").glob("*.png"))
    tasks = ["corrupt_ethics_mc", "corrupt_general", "corrupt_related", "corrupt_unrelated_math"]
    assert plots == sorted([f"{kind}-over-corrupted_to_clean-newest-{t}.png"
                            for kind in ("head", "site") for t in tasks])
    raw = json.loads(store.latest_results(out / "patch-over-mlp-L0-newest-into_clean").read_text())
    row = next(line for line in page.split("#### corrupt_related\n")[1].splitlines()
               if line.startswith("| patch-over-mlp-L0-newest-into_clean "))
    entry = raw["results"]["corrupt_related"]
    assert f"{entry['exact_match,none']:.3f} ± {entry['exact_match_stderr,none']:.3f}" in row
    assert raw["config"]["model_args"]["site"] == "mlp"  # the CLI args that reproduce it

    again = run_sweep(cfg, progress=False)
    assert not again.ran and len(again.skipped) == len(outcome.ran)
