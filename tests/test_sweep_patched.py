"""The issue's "done when": a tiny sweep with patch variants end to end, resumable, with the
page and PNGs; and the shared-generation path scores every variant exactly as running each
variant alone does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from leaderboard_fixtures import tiny_config, tiny_pair

from leaderboard import build, store
from leaderboard.results import load_runs
from leaderboard.sweep import run_sweep

PATCHES = [{"sites": ["resid", "attn", "mlp"], "layers": "all"},
           {"sites": "head", "layers": "last", "heads": "all"},
           {"sites": "attn", "layers": "all", "positions": "all",
            "directions": "clean_to_corrupted"},
           {"specs": ["attn:L0 + mlp:L1@steps[0:2]"]}]
# baselines, 3 sites x 2 layers, 2 heads of L1, 2 reverse attn, one multi-part spec
N_VARIANTS = 2 + 3 * 2 + 2 + 2 + 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_pair(tmp_path_factory.mktemp("models"))


def test_tiny_patched_sweep_end_to_end(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    clean, over = pair
    out = tmp_path / "out"
    cfg = tiny_config(clean, over, out, patches=PATCHES)
    outcome = run_sweep(cfg, progress=False)
    assert not outcome.failed, outcome.failed
    # generative tasks of 9 into-clean variants (8 together, generate_together's bound, then
    # 1), then of 2 into-corrupted ones: one engine call per prompt batch and group
    assert outcome.shared_calls and set(outcome.shared_calls) == {8, 1, 2}, outcome.shared_calls
    assert len(outcome.ran) == N_VARIANTS

    runs = {r.name: r for r in load_runs(out)}
    corrupted = runs["corrupted-over"]
    last = runs["patch-over-resid-L1-newest-into_clean"]
    assert last.by_construction
    for task, kind in last.output_types.items():
        if kind == "generate_until":  # true by construction: the donor's replies exactly
            assert last.replies(task) == corrupted.replies(task), task

    page_path = build.build(out, tmp_path / "LEADERBOARD.md")
    page = page_path.read_text()
    assert "| resid:L1 into_clean † " in page and "True by construction" in page
    assert "### Where does the corruption live" in page
    assert "| attn:L0 + mlp:L1@steps[0:2] into_clean " in page
    plots = sorted(p.name for p in (tmp_path / "LEADERBOARD_plots").glob("*.png"))
    tasks = ["corrupt_ethics_mc", "corrupt_general", "corrupt_related", "corrupt_unrelated_math"]
    groups = ["head-over-corrupted_to_clean-newest", "site-over-corrupted_to_clean-newest",
              "site-over-clean_to_corrupted-all"]
    assert plots == sorted(f"{group}-{t}.png" for group in groups for t in tasks)
    raw = json.loads(store.latest_results(out / "patch-over-mlp-L0-newest-into_clean").read_text())
    row = next(line for line in page.split("#### corrupt_related\n")[1].splitlines()
               if line.startswith("| mlp:L0 into_clean "))
    entry = raw["results"]["corrupt_related"]
    assert f"{entry['exact_match,none']:.3f} ± {entry['exact_match_stderr,none']:.3f}" in row
    assert raw["config"]["model_args"]["spec"] == "mlp:L0"  # the CLI args that reproduce it

    again = run_sweep(cfg, progress=False)
    assert not again.ran and len(again.skipped) == len(outcome.ran)


@pytest.mark.parametrize("decoding", ["greedy", "sampled"])
def test_shared_generation_scores_as_one_variant_at_a_time(tmp_path: Path,
                                                           pair: tuple[Path, Path],
                                                           decoding: str) -> None:
    """Every results number and every logged reply is the same on both paths, greedy or
    sampled with the sweep's seed."""
    clean, over = pair
    gen = {"max_gen_toks": 4} | ({"do_sample": True, "temperature": 1.0} if decoding == "sampled"
                                 else {})
    runs = {}
    for together in (1, 3):  # 3: groups of 8 split into engine calls of 3, 3 and 2 specs
        out = tmp_path / f"together-{together}"
        cfg = tiny_config(clean, over, out, patches=PATCHES, generate_together=together,
                          gen_kwargs=gen, seed=3)
        assert not run_sweep(cfg, progress=False).failed
        runs[together] = {r.name: r for r in load_runs(out)}
    alone, shared = runs[1], runs[3]
    assert sorted(alone) == sorted(shared) and len(alone) == N_VARIANTS
    differs = 0
    for name, run in alone.items():
        assert shared[name].metrics == run.metrics, name
        for task in run.output_types:
            assert shared[name].replies(task) == run.replies(task), (name, task)
            differs += run.replies(task) != alone["clean"].replies(task)
    assert differs, "no patch changed any reply: the comparison would be vacuous"
