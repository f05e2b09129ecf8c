"""Choosing what to repair (``repair.select``) and measuring a repair
(``repair.measures``), on hand-made runs whose answers are known."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from leaderboard_fixtures import synthetic

from leaderboard import tables
from leaderboard.results import Run
from repair.measures import Paired, change
from repair.select import (
    Ranked,
    SelectionError,
    attribution_ranking,
    choose,
    model_ids,
    read_selection,
    sweep_ranking,
    write_selection,
)

R = tables.RELATED
CONFIG = SimpleNamespace(model_type="qwen3", num_hidden_layers=3, num_attention_heads=4)


def sweep_runs() -> list[Run]:
    """Clean answers 1..6, corrupted 0 everywhere; patches of mlp L0-L2 (into the clean model,
    corrupted_to_clean) give the corrupted 0 on 1, 4 and 2 of the 6 items; resid L2 is the last
    layer (by construction)."""
    clean = [str(i) for i in range(1, 7)]
    runs = [synthetic("clean", "clean", {R: clean}),
            synthetic("corrupted-over", "corrupted", {R: ["0"] * 6})]
    for layer, zeros in ((0, 1), (1, 4), (2, 2)):
        runs.append(synthetic(f"mlp{layer}", "patch", {R: ["0"] * zeros + clean[zeros:]},
                              "mlp", layer))
    runs.append(synthetic("resid2", "patch", {R: ["0"] * 6}, "resid", 2))
    return runs


def test_sweep_ranking_is_the_flip_rate_and_skips_by_construction() -> None:
    runs = sweep_runs()
    ranking = sweep_ranking(runs, "over", "mlp", "corrupted_to_clean", "strict")
    assert [(r.component, r.score) for r in ranking] == [
        ("mlp:L1", 4 / 6), ("mlp:L2", 2 / 6), ("mlp:L0", 1 / 6)]
    assert ranking[0].reason["flipped"] == 4 and ranking[0].reason["differing"] == 6
    assert sweep_ranking(runs, "over", "resid", "corrupted_to_clean", "strict") == []
    assert sweep_ranking(runs, "over", "mlp", "clean_to_corrupted", "strict") == []


def test_choose_takes_the_top_the_lowest_and_seeded_draws_among_the_rest() -> None:
    ranking = [Ranked(f"head:L{layer}.H{h}", float(10 - 4 * layer - h), {})
               for layer in range(3) for h in range(4)][:8]
    choice = choose(ranking, "head", 2, "sweep", CONFIG, [0, 1])
    assert [r.component for r in choice.located] == ["head:L0.H0", "head:L0.H1"]
    assert [r.component for r in choice.lowest] == ["head:L1.H2", "head:L1.H3"]
    assert choice.pool == 12
    for names in choice.random.values():
        assert len(names) == 2 and not set(names) & {"head:L0.H0", "head:L0.H1"}
    again = choose(ranking, "head", 2, "sweep", CONFIG, [0, 1])
    assert again.random == choice.random and choice.random["0"] != choice.random["1"]


def test_attribution_ranking_is_signed_towards_the_donor() -> None:
    pairs = [(("mlp", 0, None), 3.0), (("mlp", 1, None), -5.0)]
    scores = SimpleNamespace(metric="logprob_diff", positions="all", ranked=lambda site: pairs)
    towards_corrupted = attribution_ranking(scores, "mlp", "corrupted_to_clean")
    towards_clean = attribution_ranking(scores, "mlp", "clean_to_corrupted")
    assert [r.component for r in towards_corrupted] == ["mlp:L0", "mlp:L1"]
    assert [(r.component, r.score) for r in towards_clean] == [("mlp:L1", 5.0), ("mlp:L0", -3.0)]


def scored(name: str, role: str, values: list[float], task: str = R) -> Run:
    """A run whose per-item metric values are ``values``."""
    run = Run(name, Path(name), role, None if role == "clean" else "over", "clean", None)
    run._samples[task] = [{"doc_id": i, "exact_match": v, "resps": [[""]], "filtered_resps": [""]}
                          for i, v in enumerate(values)]
    return run


def test_recovery_is_paired_over_items() -> None:
    clean = [1, 1, 1, 1, 0, 1, 1, 1, 1, 1]
    bad = [0, 0, 1, 0, 0, 0, 1, 0, 0, 1]
    half = [1, 1, 1, 0, 0, 0, 1, 0, 0, 1]  # two of the six lost items back
    runs = [scored("same-as-clean", "repair", clean), scored("same-as-bad", "repair", bad),
            scored("half", "repair", half)]
    paired = Paired(scored("c", "clean", clean), scored("x", "corrupted", bad), runs, R,
                    "exact_match", resamples=500)
    # equal to a model item by item, a repair is that model in every resample: no spread
    full, none = paired.recovery("same-as-clean"), paired.recovery("same-as-bad")
    assert (full.value, full.low, full.high) == (1.0, 1.0, 1.0)
    assert (none.value, none.low, none.high) == (0.0, 0.0, 0.0)
    got = paired.recovery("half")
    assert got.value == pytest.approx((np.mean(half) - np.mean(bad)) /
                                      (np.mean(clean) - np.mean(bad))) == pytest.approx(2 / 6)
    assert got.low <= got.value <= got.high and got.items == 10
    contrast = paired.contrast("same-as-clean", ["half", "same-as-bad"])
    assert contrast.value == pytest.approx(1 - (2 / 6 + 0) / 2)
    tied = Paired(scored("c", "clean", bad), scored("x", "corrupted", bad), runs[:1], R,
                  "exact_match")
    assert tied.recovery("same-as-clean").value is None  # clean = corrupted: undefined


def test_collateral_change_is_the_paired_difference() -> None:
    bad = scored("x", "corrupted", [1, 1, 0, 1], tables.UNRELATED)
    worse = scored("r", "repair", [0, 0, 0, 0], tables.UNRELATED)
    item = change(bad, worse, tables.UNRELATED, "exact_match")
    diffs = np.array([-1, -1, 0, -1])
    assert item.delta == pytest.approx(diffs.mean())
    assert item.stderr == pytest.approx(diffs.std(ddof=1) / 2)
    assert item.flag == -1 and change(bad, bad, tables.UNRELATED, "exact_match").flag == 0


def test_bad_selections_are_one_line(tmp_path: Path) -> None:
    """k larger than the components ranked, controls that cannot be drawn, a selection file of
    another model pair: one line each."""
    ranking = [Ranked(f"mlp:L{i}", 1.0 - i, {}) for i in range(3)]
    pair = model_ids(("clean", "c1"), ("over", "bad", "b1"))
    path = write_selection(tmp_path / "sel.json", pair, "clean_to_corrupted", "strict",
                           [choose(ranking, "mlp", 1, "sweep", CONFIG, [0])], {R: [0]},
                           {"sweep": "x"})
    other = model_ids(("clean", "c1"), ("over", "bad", "b2"))
    cases = [
        (lambda: choose(ranking, "mlp", 4, "sweep", CONFIG, [0]),
         "site mlp: k=4 is larger than the 3 components the sweep ranked"),
        (lambda: choose(ranking, "mlp", 2, "sweep", CONFIG, [0]),
         "the 2 ranked lowest would overlap the 2 located"),
        (lambda: choose([Ranked(f"mlp:L{i}", 0.0, {}) for i in range(3)] * 2, "mlp", 3,
                        "sweep", CONFIG, [0]),
         "k=3 leaves only 0 other mlp components to draw random controls from"),
        (lambda: read_selection(path, other), "was made for clean clean and corrupted over bad"),
        (lambda: read_selection(tmp_path / "none.json", pair), "not a selection file"),
    ]
    for call, message in cases:
        with pytest.raises(SelectionError) as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    record, choices = read_selection(path, pair)
    assert choices[0].located[0].component == "mlp:L0" and record["used_items"] == {R: [0]}
