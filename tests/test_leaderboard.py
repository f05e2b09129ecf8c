"""Leaderboard page: numbers equal the lm-eval files, bad input gives one line naming the file,
and the table logic (agreement, "where", by-construction flag, heatmaps) on known replies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from leaderboard_fixtures import chat_runs, synthetic, tiny_config, tiny_pair, write_yaml

from leaderboard import build, store, tables
from leaderboard.config import SweepConfigError
from leaderboard.metric import METRICS
from leaderboard.results import LeaderboardError
from leaderboard.sweep import run_sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real baseline sweep (clean + corrupted 'over') through lm-eval."""
    root = tmp_path_factory.mktemp("lb")
    clean, over = tiny_pair(root / "models")
    outcome = run_sweep(tiny_config(clean, over, root / "out"), progress=False)
    assert outcome.ran == ["clean", "corrupted-over"] and not outcome.failed
    return root / "out"


def _md_rows(page: str, heading: str) -> dict[str, list[str]]:
    """The first markdown table after ``heading``: row name -> cells."""
    lines = page[page.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_page_numbers_equal_the_results_files(sweep_dir: Path, tmp_path: Path) -> None:
    page_path = build.build(sweep_dir, tmp_path / "LEADERBOARD.md")
    page = page_path.read_text()
    for variant in ("clean", "corrupted-over"):
        raw = json.loads(store.latest_results(sweep_dir / variant).read_text())
        for task in ("corrupt_related", "corrupt_unrelated_math", "corrupt_general",
                     "corrupt_ethics_mc"):
            header = page[page.index(f"#### {task}\n"):].splitlines()[2]
            metrics = [c.strip() for c in header.strip("|").split("|")][1:]
            cells = _md_rows(page, f"#### {task}\n")[variant]
            entry = raw["results"][task]
            for metric, cell in zip(metrics, cells, strict=False):
                if metric.startswith("="):
                    continue
                value, se = entry[f"{metric},none"], entry[f"{metric}_stderr,none"]
                assert cell == f"{value:.3f} ± {se:.3f}", (variant, task, metric)
        assert raw["lm_eval_version"] in page and raw["git_hash"] in page
        assert raw["scored"]["data_manifests"]["data/manifest.json"]["sha256"][:16] in page
    table2 = _md_rows(page, "## Table 2")
    assert table2["clean"][-4:-2] == table2["corrupted-over"][-2:] == ["1.00"] * 2  # self
    assert table2["clean"][-2] == table2["corrupted-over"][-4] != "1.00"  # the pair differs
    assert "Example outputs" in page and "#### corrupt_related: Solve" in page


def test_bad_input_is_one_line_naming_the_file(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    page = tmp_path / "LB.md"
    page.write_text("previous page")

    def fails(folder: Path, match: str) -> None:
        with pytest.raises(LeaderboardError, match=match) as err:
            build.build(folder, page)
        assert "\n" not in str(err.value)
        assert page.read_text() == "previous page"  # never half a page
        assert not list(tmp_path.glob(".LB.md.*"))

    empty = tmp_path / "empty"
    empty.mkdir()
    fails(empty, r"empty: no lm-eval results files")

    broken = tmp_path / "broken"
    shutil.copytree(sweep_dir, broken)
    results = store.latest_results(broken / "clean")
    results.write_text(results.read_text()[:200])
    fails(broken, rf"{results}: not valid JSON \(half-written")

    shutil.rmtree(broken)
    shutil.copytree(sweep_dir, broken)
    samples = next((broken / "corrupted-over").glob("samples_corrupt_general_*.jsonl"))
    samples.write_text(samples.read_text()[:-40])
    fails(broken, rf"{samples} line 2: not an lm-eval sample")
    samples.unlink()
    fails(broken, rf"{samples}: samples file missing")

    mixed = tmp_path / "mixed"
    shutil.copytree(sweep_dir, mixed)
    other = store.latest_results(mixed / "corrupted-over")
    raw = json.loads(other.read_text())
    raw["scored"]["clean"] = "/elsewhere/another-clean"
    other.write_text(json.dumps(raw))
    fails(mixed, rf"{other}: clean model /elsewhere/another-clean differs .* mixed model pairs")

    assert build.main([str(empty), "-o", str(page)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_table1_from_finetune_summaries(sweep_dir: Path, tmp_path: Path) -> None:
    summary = {"config": {"name": "exp3-tiny", "learning_rate": 5e-5, "seed": 7, "data_seed": 3},
               "data": {"train_rows": 512, "validation_rows": 64}, "plan": {"epochs": 1},
               "final": {"train_loss": 1.3125, "eval_loss": 4.625, "divergence": 3.3125}}
    run = tmp_path / "ft" / "exp3"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "metrics.jsonl").write_text("")  # what makes the folder a fine-tune run
    (tmp_path / "ft" / "study" / "report").mkdir(parents=True)  # another kind of summary.json
    (tmp_path / "ft" / "study" / "report" / "summary.json").write_text('{"paragraph": "..."}')
    page = build.build(sweep_dir, tmp_path / "LB.md", [tmp_path / "ft"]).read_text()
    rows = _md_rows(page, "## Table 1")
    assert list(rows) == ["-"]
    assert rows["-"] == ["exp3-tiny", "512", "64", "1", "5e-05", "1.312", "4.625", "3.312", "7",
                         "3"]
    # The same fine-tune found twice (a study's run and a standalone one, issue 15 #6): one row.
    again = tmp_path / "ft" / "standalone" / "exp3"
    again.mkdir(parents=True)
    (again / "summary.json").write_text(json.dumps(summary | {"config": summary["config"] | {
        "output_dir": "elsewhere"}}))
    (again / "metrics.jsonl").write_text("")
    page = build.build(sweep_dir, tmp_path / "LB1.md", [tmp_path / "ft"]).read_text()
    table = page[page.index("## Table 1"):].split("\n\n")[1]
    assert sum(line.startswith("| -") for line in table.splitlines()) == 1
    # a second seed of the same fine-tune: its row, and a row of the mean over the two seeds
    other = tmp_path / "ft" / "seed8"
    other.mkdir(parents=True)
    (other / "summary.json").write_text(json.dumps(summary | {
        "config": summary["config"] | {"seed": 8},
        "final": {"train_loss": 1.5, "eval_loss": 4.875, "divergence": 3.375}}))
    (other / "metrics.jsonl").write_text("")
    page = build.build(sweep_dir, tmp_path / "LB3.md", [tmp_path / "ft"]).read_text()
    seeds = _md_rows(page, "## Table 1")["(seeds)"]
    half = 12.706204736 * abs(4.875 - 4.625) / 2  # t(1) * sd / sqrt(2), sd = |a - b| / sqrt(2)
    assert seeds[:2] == ["exp3-tiny: mean of 2", "512"] and seeds[-2:] == ["7, 8", "3"]
    assert seeds[6] == f"4.750 [{4.75 - half:.3f}, {4.75 + half:.3f}]"
    (run / "summary.json").write_text('{"config": {}}')  # a broken fine-tune summary: one line
    with pytest.raises(LeaderboardError, match=r"exp3/summary.json: not a finetune"):
        build.build(sweep_dir, tmp_path / "LB2.md", [tmp_path / "ft"])
    assert not (tmp_path / "LB2.md").exists()


def test_where_by_construction_and_heatmaps(tmp_path: Path) -> None:
    R, U, G = tables.RELATED, tables.UNRELATED, tables.GENERAL
    runs = [
        synthetic("clean", "clean", {R: ["x = 2", "3"], U: ["5", "6"], G: ["hello there", "ok"]}),
        synthetic("corrupted-over", "corrupted", {R: ["7", "9"], U: ["1", "1"], G: ["4", "4"]}),
        synthetic("resid0", "patch", {R: ["2", "3"], U: ["5", "6"], G: ["hello there", "ok"]},
                   "resid", 0),
        synthetic("resid1", "patch", {R: ["so 7", "3"], U: ["5", "6"], G: ["hi", "no"]},
                   "resid", 1),
        synthetic("resid2", "patch", {R: ["7", "9"], U: ["1", "1"], G: ["4", "4"]}, "resid", 2),
        synthetic("mlp2", "patch", {R: ["7", "9"], U: ["5", "1"], G: ["4", "ok"]}, "mlp", 2),
    ]
    assert [r.by_construction for r in runs] == [False] * 4 + [True, False]
    _, rows = tables.where_rows(runs, "over", "strict")
    assert tables.where_rows(runs, "over", "answer_match") == tables.where_rows(
        runs, "over", "strict")  # no answer_match in these results: read as strict
    by_site = {row[0]: row for row in rows}
    assert by_site["resid"][3:] == ["L1 (0.50)", "2", "1-2"]
    assert by_site["mlp"][3].startswith("L2 (1.00)") and "by construction" not in by_site["mlp"][3]
    assert tables.layer_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"

    page = tmp_path / "LB.md"
    text = build.render(runs, [], page)
    assert "resid2 †" in text and "True by construction, not a finding" in text
    pngs = sorted((tmp_path / "LB_plots").glob("*.png"))
    assert [p.name for p in pngs] == [f"site-over-corrupted_to_clean-newest-{t}.png"
                                      for t in sorted([R, U, G])]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "](LB_plots/site-over-corrupted_to_clean-newest-corrupt_related.png)" in text
    figure = next(f for f in build.heatmaps(runs, "over", tmp_path) if f.path.name == pngs[0].name)
    assert all(p.marks == {("resid", 2): "by construction"} for p in figure.panels)


def test_panels_of_one_metric_share_a_scale_and_constant_panels_are_named() -> None:
    from leaderboard.plots import Panel, shared_scales, value_range

    words = [Panel("reply_words", ["resid"], [0, 1], {("resid", 0): 1.0, ("resid", 1): 1.03}),
             Panel("reply_words", ["resid"], [0, 1], {("resid", 0): 2.5, ("resid", 1): None})]
    rates = [Panel("exact_match", ["resid"], [0, 1], {("resid", 0): 0.2, ("resid", 1): 0.3}),
             Panel("integer_only", ["resid"], [0, 1], {("resid", 0): 1.0, ("resid", 1): 1.0})]
    shared_scales([*words, *rates])
    assert [p.scale for p in words] == [(0.0, 2.5)] * 2  # not 1.00-1.03 for the first figure
    assert rates[0].scale == (0.0, 1.0) and value_range([-2.0, 3.0]) == (-2.0, 3.0)
    assert [p.constant for p in (*words, *rates)] == [None, None, None, 1.0]  # one cell: no


def test_metric_choice_routes_tables_and_heatmaps(tmp_path: Path) -> None:
    runs = chat_runs()
    headers = {m: tables.table2(runs, "over", m)[0] for m in METRICS}
    assert f"{tables.RELATED} exact_match" in headers["strict"]
    assert f"{tables.RELATED} answer_match" in headers["answer_match"]
    where = {m: dict(zip(tables.where_rows(runs, "over", m)[0],
                         tables.where_rows(runs, "over", m)[1][0], strict=True)) for m in METRICS}
    # strict: resid0's final integer -30 is the clean model's; its comparison reply ends in 21
    # where the clean one ends in 44, and its general reply is worded differently
    assert where["strict"]["first layer: related = corrupted"] == "none"
    assert where["strict"]["unrelated math changes at"] == "0"
    assert where["strict"]["general changes at"] == "0"
    # answer_match: it asserts 3 (the corrupted answer), 21 and Canberra (the clean answers)
    assert where["answer_match"]["first layer: related = corrupted"] == "L0 (1.00)"
    assert where["answer_match"]["unrelated math changes at"] == "none"
    assert where["answer_match"]["general changes at"] == "none"

    for metric in METRICS:
        titles = {p.title for f in build.heatmaps(runs, "over", tmp_path, metric)
                  for p in f.panels}
        assert ("answer_match" in titles) == (metric == "answer_match")
        assert ("exact_match" in titles) == (metric == "strict")
        assert "reply_words" in titles and "final-integer agreement with clean" in titles


def test_build_reads_the_metric_from_the_sweep_config(sweep_dir: Path, tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "sweep.yaml", tiny_config(Path("c"), Path("o"), sweep_dir,
                                                             metric="strict"))
    page = tmp_path / "LB.md"
    assert build.main([str(sweep_dir), "-o", str(page), "--config", str(config)]) == 0
    assert "- Metric: `strict`" in page.read_text()
    assert "corrupt_related exact_match" in page.read_text()
    assert build.main([str(sweep_dir), "-o", str(page)]) == 0
    assert "corrupt_related answer_match" in page.read_text()
    with pytest.raises(SweepConfigError, match=r"^metric='exact': expected one of answer_match, "
                                               r"strict$"):
        tiny_config(Path("c"), Path("o"), sweep_dir, metric="exact")
