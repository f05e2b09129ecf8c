"""The study's findings across seeds (``study.findings``) on hand-made runs: each number of
the compact table against a hand computation, for two seeds and for a seed set of one."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from leaderboard.results import Run
from leaderboard.tables import RELATED
from study.findings import bullets, condition_table, gather, where_table

T_975_1 = 12.706204736  # Student t, 1 degree of freedom


def run(name: str, role: str, label: str | None, score: float, replies: list[str],
        spec: str | None = None, site: str | None = None, layer: int | None = None) -> Run:
    out = Run(name, Path(name), role, label, "clean", label, site=site,
              layers=() if layer is None else (layer,), positions="newest" if site else None,
              direction="corrupted_to_clean" if site else None, spec=spec, n_layers=3)
    out.metrics[RELATED] = {"exact_match": (score, 0.05)}
    out.output_types[RELATED] = "generate_until"
    out._samples[RELATED] = [{"doc_id": i, "doc": {"question": f"q{i}"}, "resps": [[r]],
                              "filtered_resps": [r]} for i, r in enumerate(replies)]
    return out


def recovery(value: float, half: float) -> dict:
    return {"value": value, "low": value - half, "high": value + half, "items": 10}


def inputs() -> dict:
    clean = run("clean", "clean", None, 0.9, ["1", "2", "3", "4"])
    base = [clean, run("corrupted-over.s0", "corrupted", "over.s0", 0.4, ["9"] * 4),
            run("corrupted-over.s1", "corrupted", "over.s1", 0.6, ["9"] * 4),
            run("corrupted-one", "corrupted", "one", 0.7, ["9"] * 4)]
    sweeps = [clean, *base[1:3]]
    for seed, (flips0, flips1) in enumerate(((2, 4), (1, 3))):
        for layer, flipped in ((0, flips0), (1, flips1)):
            replies = ["9"] * flipped + ["1", "2", "3", "4"][flipped:]
            sweeps.append(run(f"p{seed}{layer}", "patch", f"over.s{seed}", 0.5, replies,
                              f"resid:L{layer}", "resid", layer))
        sweeps.append(run(f"last{seed}", "patch", f"over.s{seed}", 0.0, ["9"] * 4, "resid:L2",
                          "resid", 2))  # the last layer: by construction
    weights = {"over.s0": {"block:L0": 0.3, "block:L1": 0.1, "block:L2": 0.2},
               "over.s1": {"block:L0": 0.5, "block:L1": 0.1, "block:L2": 0.2},
               "one": {"block:L0": 0.1, "block:L1": 0.2, "block:L2": 0.3}}
    repair = {f"over.s{s}": {
        "rows": [{"method": "restore", "site": "resid", "k": 1, "control": "located",
                  "seed": None, "recovery": recovery(0.2 + 0.2 * s, 0.196)}],
        "contrasts": [], "alone": [{"component": f"block:L{i}",
                                    "recovery": recovery(v, 0.1)}
                                   for i, v in enumerate((0.8, 0.1 + 0.2 * s, 0.0))]}
        for s in (0, 1)}
    return {"conditions": {"over": ["over.s0", "over.s1"], "one": ["one"]},
            "seeds": {"over.s0": 0, "over.s1": 1, "one": None}, "base_runs": base,
            "sweep_runs": sweeps, "weights": weights, "repair": repair, "choice": "strict",
            "n_layers": 3}


def test_two_seeds_against_hand_computations() -> None:
    over, one = gather(**inputs())
    # related math: seeds 0.4 and 0.6 (s.e. 0.05 each); sd 0.1414, t(1) half-width 12.7 * 0.1
    related = over.behaviour[RELATED]
    assert related.mean == pytest.approx(0.5)
    assert related.interval == (0.0, 1.0)  # 0.5 ± 1.27, clipped to a score's range
    assert related.values == (0.4, 0.6)
    assert related.within == pytest.approx(math.sqrt(2 * 0.05**2) / 2)
    # flips: of the 4 differing items, resid L0 takes 2/4 and 1/4, L1 4/4 and 3/4
    assert over.flips[("resid", 0)].values == (0.5, 0.25)
    assert over.flips[("resid", 1)].mean == pytest.approx(0.875)
    assert over.by_construction == {("resid", 2)}
    rows = {row[0].split(":")[0]: row for row in condition_table(over, "strict")[1]}
    assert rows["related math (exact match; clean 0.90)"][1] == related.text()
    top = rows["patching flips related math most"]
    assert "resid L1" in top[0] and top[2] == "≥ 0.5 in 2/2 seeds"  # L2 left out
    assert rows["weights moved most"][0].endswith("block:L0 (‖ΔW‖/‖W‖)")
    assert rows["weights moved most"][1].startswith("0.400 [") and \
        rows["weights moved most"][2] == "top in 2/2 seeds"
    assert rows["restoring alone helps most"][1].startswith("0.80 [0.80, 0.80] ±0.04")
    # a recovery's within-run error: the bootstrap half-width / 1.96, pooled over the seeds
    located = over.repair["restore resid top 1 located"]
    assert located.mean == pytest.approx(0.3) and located.within == pytest.approx(
        math.sqrt(2 * 0.1**2) / 2)
    assert where_table(over)[1][0][:2] == ["resid", "L1"]


def test_a_seed_set_of_one_and_the_bullets() -> None:
    over, one = gather(**inputs())
    assert one.n == 1 and one.behaviour[RELATED].interval is None
    assert one.behaviour[RELATED].text() == "0.70 ±0.05 (1 seed)"
    said = bullets([over, one], "strict")
    assert len(said) <= 5 and all(line.endswith(".") for line in said)
    assert said[0].startswith("`over` (2 seeds): related math stays at 0.50 [0.00, 1.00]")
    assert "weights moved most and restoring the clean weights helps most at L0" in said[1]
    assert "(these top layers hold in 2/2, 2/2, 2/2 seeds)" in said[1]
    assert any(s.startswith("`one` (1 seed): related math falls to 0.70") for s in said)


def test_a_sweep_without_related_math_locates_nothing_and_does_not_fail() -> None:
    """The CoT study sweeps only corrupt_related_cot: no flip rates, the rest still read."""
    given = inputs()
    given["sweep_runs"] = [replace(r, metrics={"corrupt_related_cot": r.metrics[RELATED]},
                                   _samples={"corrupt_related_cot": r._samples[RELATED]})
                           for r in given["sweep_runs"]]  # copies: base runs keep theirs
    over, one = gather(**given)
    assert over.flips == {} and one.flips == {}
    assert over.behaviour[RELATED].mean == pytest.approx(0.5)  # (0.4 + 0.6) / 2
