"""The study runner: config checks, the Qwen3-4B dry run, stage caching, and the smoke pipeline
end to end through ``python -m study`` (every artefact exists and agrees with lm-eval's files;
a killed run resumes from its cached stages and a config edit re-runs only what it touches).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from leaderboard_fixtures import chat_runs
from processes import run_together

from harness_ext.answers import asserted_integer
from leaderboard.store import latest_results, samples_file
from study import summary
from study.cache import StageState
from study.config import StudyConfig, StudyConfigError
from study.dryrun import PlanError, dry_run
from study.stage_list import stage_list
from study.stages import Study

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "study" / "smoke.yaml"


def smoke_config(tmp_path: Path, **changes: object) -> Path:
    """The smoke config with its outputs (and a README with study markers) under tmp_path."""
    raw = yaml.safe_load(SMOKE.read_text())
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\n<!-- study:begin -->\nstale block text\n<!-- study:end -->\n"
                      "\nafter\n")
    raw |= {"work_dir": str(tmp_path / "work"),
            "report": {"publish_dir": str(tmp_path / "pub"), "readme": str(readme)}}
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_study(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "study", "--config", str(config), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    raw = yaml.safe_load(SMOKE.read_text())
    cases = [({"bogus": 1}, "unknown key(s) ['bogus']"),
             ({"sweeps": {"corrupted": ["nope"]}}, "not fine-tune labels"),
             ({"sweeps": {"patches": [{"sites": ["neuron"]}]}}, "unknown value 'neuron'"),
             ({"finetunes": {"bad-label": raw["finetunes"]["lora"]}}, "letters, digits"),
             ({"finetunes": {"x": {"config": "configs/finetune/tiny-lora.yaml",
                                   "overrides": {"output_dir": "y"}}}}, "set by the study"),
             ({"finetunes": {"x": {"config": "configs/finetune/tiny-lora.yaml",
                                   "overrides": {"learning_rate": "5e-5"}}}}, "5.0e-5"),
             ({"baselines": {"backend": "tgi"}}, "backend='tgi'"),
             ({"metric": "exact_match"}, "metric='exact_match': expected one of answer_match, "
                                         "strict"),
             ({"data": {"overrides": {"n_bogus": 3}}}, "n_bogus")]
    for change, message in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(raw | change))
        with pytest.raises(StudyConfigError, match=re.escape(message)) as err:
            StudyConfig.from_yaml(path)
        assert "\n" not in str(err.value)


def test_summary_reads_the_chosen_metric() -> None:
    """The study config's ``metric`` picks the scores and the integers the summary reads."""
    runs = chat_runs()
    for choice, words, column in (("strict", "exact match", "exact_match"),
                                  ("answer_match", "answer match", "answer_match")):
        text = " ".join(summary.baseline_sentences(runs, ["over"], summary.Facts(), choice))
        assert text.startswith(f"Baselines, {words} ± standard error")
        assert summary.key_table(runs, ["over"], choice)["headers"][1] == \
            f"related math ({column})"
    clean, corrupted, patched = runs
    # the patched reply asserts the corrupted model's 3; its last number is the clean one's -30
    assert summary.flip(patched, clean, corrupted, metric="answer_match") == \
        summary.Flip("resid0", 1, 1)
    assert summary.flip(patched, clean, corrupted, metric="strict") == summary.Flip("resid0", 0, 1)


def test_qwen3_4b_dry_run_checks_the_plan_offline(tmp_path: Path) -> None:
    config = StudyConfig.from_yaml(REPO / "configs" / "study" / "qwen3-4b.yaml")
    config.work_dir = str(tmp_path / "work")
    lines = "\n".join(dry_run(Study(config)))
    assert "36 layers, 32 heads" in lines and "known Qwen3-4B shape" in lines
    # 3 sites x 36 layers x 2 directions + 2 layers x 32 heads = 280 per model, for three seeds
    # each of exp1 and exp3: 6 x 280 = 1680; per site 6 x 72 = 432, heads 6 x 64 = 384
    assert "1680 patch variants" in lines
    assert "per site: resid 432, attn 432, mlp 432, head 384" in lines
    assert "disk estimate" in lines and not (tmp_path / "work").exists()  # nothing was run
    config.sweeps.patches = [{"sites": ["head"], "layers": [36], "heads": "all"}]
    with pytest.raises(PlanError, match=r"index 36 out of range \(0\.\.35\)"):
        dry_run(Study(config))


def test_stage_state_keeps_partial_outputs_of_the_same_inputs_only(tmp_path: Path) -> None:
    state = StageState(tmp_path / "stage", "h1")
    assert not state.begin()
    (state.folder / "partial.txt").write_text("half")
    assert StageState(state.folder, "h1").begin()  # same inputs: resume inside the stage
    assert (state.folder / "partial.txt").is_file()
    StageState(state.folder, "h1").finish({"seconds": 1})
    assert StageState(state.folder, "h1").done and not StageState(state.folder, "h2").done
    assert not StageState(state.folder, "h2").begin()  # inputs changed: stale outputs go
    assert not (state.folder / "partial.txt").exists()


def _stage_lines(out: str) -> dict[str, str]:
    """Stage name -> 'cached' or 'ran', from the runner's stage banners."""
    found = {}
    for line in out.splitlines():
        if m := re.match(r"=== \[\d+/\d+\] (\S+): (cached)?", line):
            found[m.group(1)] = "cached" if m.group(2) else "ran"
    return found


@pytest.mark.slow
def test_killed_run_resumes_from_cached_stages(tmp_path: Path) -> None:
    config = smoke_config(tmp_path)
    work = tmp_path / "work"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "study", "--config", str(config)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (work / "finetune-underfit" / "DONE.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "runner ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # as hard as a kill gets: no clean-up runs
    proc.wait()
    order = ["data", "base", "finetune-underfit", "finetune-overfit.s0", "finetune-overfit.s1",
             "finetune-lora"]
    done = {s: (work / s / "DONE.json").stat().st_mtime_ns for s in order
            if (work / s / "DONE.json").is_file()}
    assert len(done) < len(order)  # killed mid-way

    again = run_study(config, "--until", "finetune-lora")
    assert again.returncode == 0, again.stderr[-2000:]
    assert _stage_lines(again.stderr) == {s: "cached" if s in done else "ran" for s in order}
    assert {s: (work / s / "DONE.json").stat().st_mtime_ns for s in done} == done

    edited = smoke_config(tmp_path, finetunes=yaml.safe_load(config.read_text())["finetunes"]
                          | {"lora": {"config": "configs/finetune/tiny-lora.yaml",
                                      "overrides": {"max_steps": 1}}})
    third = run_study(edited, "--until", "finetune-lora")
    assert third.returncode == 0, third.stderr[-2000:]
    expected = {"data": "cached", "base": "cached", "finetune-underfit": "cached",
                "finetune-overfit.s0": "cached", "finetune-overfit.s1": "cached",
                "finetune-lora": "ran"}
    assert _stage_lines(third.stderr) == expected
    forced = run_study(edited, "--from", "finetune-lora", "--until", "finetune-lora")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert _stage_lines(forced.stderr) == expected  # redone although cached


def test_retrain_rebuilds_the_base_with_its_recipe(tmp_path: Path, monkeypatch) -> None:
    """``--retrain`` runs the pretraining command line and hashes the model it leaves."""
    from study import stages
    from study.pipeline import stage_hash

    model = tmp_path / "model"
    shutil.copytree(REPO / "models" / "tiny-qwen3-math", model)
    raw = yaml.safe_load(SMOKE.read_text()) | {
        "work_dir": str(tmp_path / "work"),
        "base": {"model": str(model), "pretrain_config": "configs/pretrain/tiny.yaml"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    study = Study(StudyConfig.from_yaml(tmp_path / "s.yaml"), retrain=True)
    base = next(s for s in stage_list(study.config) if s.name == "base")
    before = stage_hash(base, study, {})
    calls = []

    def pretrain(cmd: list[str], check: bool) -> subprocess.CompletedProcess:
        calls.append(cmd[1:])
        (model / "model.safetensors").write_bytes(b"retrained")  # the recipe's new weights
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(stages.subprocess, "run", pretrain)
    assert base.forced(study)
    record = base.run(study, tmp_path / "work" / "base")
    assert calls == [["-m", "finetune.pretrain", "--config", "configs/pretrain/tiny.yaml",
                      "--out-dir", str(model)]]
    assert record["layers"] == 6 and stage_hash(base, study, {}) != before


def _check_report(tmp_path: Path, out: str) -> dict:
    """Every artefact exists, and every number shown equals lm-eval's results files."""
    work, pub = tmp_path / "work", tmp_path / "pub"
    for stage in ("data", "base", "finetune-underfit", "finetune-overfit.s0",
                  "finetune-overfit.s1", "finetune-lora", "weights", "baselines", "sweeps",
                  "page", "summary"):
        record = json.loads((work / stage / "DONE.json").read_text())
        assert record["seconds"] >= 0 and record["peak_rss_bytes"] > 0, stage
    for name in ("REPORT.md", "DETAILS.md", "findings.json", "summary.json", "timings.json"):
        assert (work / "report" / name).is_file() and (pub / name).is_file(), name
    for name in ("baselines.md", "sweeps.md"):  # the pages stay in the work dir
        assert (work / "report" / name).is_file(), name
    assert f"report: {work / 'report' / 'REPORT.md'}" in out
    summary = json.loads((work / "summary" / "summary.json").read_text())

    results = {}
    for fact in summary["facts"]:
        if "metric" in fact:
            path = Path(fact["results_file"])
            raw = results.setdefault(path, json.loads(path.read_text()))["results"]
            entry = raw[fact["task"]]
            assert fact["value"] == entry[f"{fact['metric']},none"]
            assert fact["stderr"] == entry[f"{fact['metric']}_stderr,none"]
    paragraph = summary["paragraph"]
    rest = paragraph
    for fact in sorted(summary["facts"], key=lambda f: -len(f["text"])):
        rest = rest.replace(fact["text"], "")
    rest = re.sub(r"\bL\d+(\.H\d+)?\b", "", rest)
    rest = re.sub(r"`[^`]*`", "", rest)  # model labels such as `overfit.s1` are names
    assert not re.search(r"\d", rest), f"a number in the summary that is no recorded fact: {rest}"

    clean = latest_results(work / "baselines" / "results" / "clean")
    value = json.loads(clean.read_text())["results"]["corrupt_related"]
    # the smoke config keeps the default metric, answer_match (the demo's is strict)
    cell = f"{value['answer_match,none']:.3f} ± {value['answer_match_stderr,none']:.3f}"
    key_rows = {row[0]: row for row in summary["key_table"]["rows"]}
    assert key_rows["clean"][1] == cell
    assert re.search(rf"^\| clean +\| {re.escape(cell)} ", (pub / "DETAILS.md").read_text(),
                     re.M)
    # the across-seed table: the mean of the two overfit seeds' scores in their results files
    seeds = [json.loads(latest_results(work / "baselines" / "results" / f"corrupted-overfit.s{s}"
                                       ).read_text())["results"]["corrupt_related"]
             for s in (0, 1)]
    mean = sum(v["answer_match,none"] for v in seeds) / 2
    report = (pub / "REPORT.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| related math"))
    assert f"| {mean:.2f} [" in row or f"| {mean:.2f} ±" in row, row
    assert f"clean {value['answer_match,none']:.2f})" in row
    page = (work / "report" / "baselines.md").read_text()
    assert re.search(rf"^\| clean +\| {re.escape(cell)} ", page, re.M)
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# title\n\n<!-- study:begin generated by")
    assert "stale block text" not in readme
    assert readme.endswith("<!-- study:end -->\n\nafter\n") and row in readme
    return summary


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path: Path) -> None:
    config = smoke_config(tmp_path)
    readme = (tmp_path / "README.md").read_bytes()
    started = time.time()
    done = run_study(config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.time() - started < 180
    # the study writes its work dir only: publishing is --publish (make publish), issue 24
    assert not (tmp_path / "pub").exists() and (tmp_path / "README.md").read_bytes() == readme
    published_run = run_study(config, "--publish")
    assert published_run.returncode == 0, published_run.stderr[-3000:]
    assert set(_stage_lines(published_run.stderr).values()) == {"cached"}
    summary = _check_report(tmp_path, done.stdout)
    page = (tmp_path / "work" / "page" / "baselines.md").read_text()
    assert "## Judged behaviour: emergent misalignment" in page  # the judge stage's section
    published = [tmp_path / "pub" / "REPORT.md", tmp_path / "pub" / "timings.json",
                 tmp_path / "README.md"]
    before = [path.read_bytes() for path in published]

    def report_files() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in (tmp_path / "work" / "report").rglob("*")}

    report_before = report_files()
    again = run_study(config, "--publish")
    assert set(_stage_lines(again.stderr).values()) == {"cached"}
    assert [path.read_bytes() for path in published] == before  # a finished study edits nothing
    assert report_files() == report_before  # not even its work dir's report/ (issue 24)
    unjudged = yaml.safe_load(config.read_text())
    del unjudged["judge"]
    config.write_text(yaml.safe_dump(unjudged, sort_keys=False))
    assert run_study(config).returncode == 0
    assert "Judged behaviour" not in (tmp_path / "work" / "page" / "baselines.md").read_text()
    sweeps = tmp_path / "work" / "sweeps" / "results"
    # 3 sites x 6 layers x 2 directions + 4 heads x 2 layers, for each seed of the swept model
    assert len([p for p in sweeps.iterdir() if p.name.startswith("patch-")]) == 2 * 44
    plots = sorted(p.name for p in (tmp_path / "work" / "report" / "sweeps_plots").glob("*.png"))
    assert "site-overfit.s1-corrupted_to_clean-newest-corrupt_related.png" in plots
    assert "head-overfit.s0-corrupted_to_clean-newest-corrupt_related.png" in plots
    heatmap = "where-overfit.png"  # the across-seed mean, then each seed
    assert (tmp_path / "pub" / heatmap).is_file()
    assert f"(pub/{heatmap})" in (tmp_path / "README.md").read_text()

    def integers(folder: str) -> dict[int, int | None]:
        path = samples_file(latest_results(sweeps / folder), "corrupt_related")
        rows = map(json.loads, path.read_text().splitlines())
        return {r["doc_id"]: asserted_integer(r["resps"][0][0], r["doc"]) for r in rows}

    flips = [f for f in summary["facts"] if "flipped" in f]
    for fact in flips:  # patch-<label>-...: the label is the seed's model
        receiver = integers("clean")
        donor = integers(f"corrupted-{fact['variant'].split('-')[1]}")
        if fact["variant"].endswith("into_corrupted"):
            receiver, donor = donor, receiver
        patched = integers(fact["variant"])
        differ = [d for d in receiver if receiver[d] != donor[d]]
        assert fact["differing"] == len(differ)
        assert fact["flipped"] == sum(patched[d] == donor[d] for d in differ)


def test_random_init_base_for_development(tmp_path: Path) -> None:
    """``base.random_init`` swaps in a random tiny model of the given shape (no trained one
    needed); the dry run plans with that shape."""

    raw = yaml.safe_load(SMOKE.read_text()) | {
        "work_dir": str(tmp_path / "work"),
        "base": {"random_init": {"seed": 0, "model": {"num_hidden_layers": 2}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    study = Study(StudyConfig.from_yaml(tmp_path / "s.yaml"))
    assert "a random tiny model (seed 0): 2 layers, 4 heads" in "\n".join(dry_run(study))
    base = next(s for s in stage_list(study.config) if s.name == "base")
    record = base.run(study, study.folder("base"))
    assert record == {"model": str(study.folder("base") / "model"), "layers": 2, "heads": 4}


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "study").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_study_config_dry_runs_offline(path: Path, tmp_path: Path) -> None:
    """Each shipped study config plans offline: its models, seeds, stages and sizes check out
    before anything loads (the Qwen3-4B ones against the known shape, not downloaded)."""
    config = StudyConfig.from_yaml(path)
    config.work_dir = str(tmp_path / "work")
    lines = "\n".join(dry_run(Study(config)))
    assert "stages: data -> base -> " in lines and lines.rstrip().count("\n") > 5


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path: Path) -> None:
    """Two study processes on one config: each stage that one worker runs (fine-tunes, pages,
    summary) runs in exactly one of them, the sweep's variants are shared, and the report is
    published once, as one process would publish it."""
    config = smoke_config(tmp_path)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "study", "--config", str(config), "--publish"]
    finished = run_together([command] * 2, tmp_path / "logs", REPO, env, timeout=900)
    assert [f.returncode for f in finished] == [0, 0], [f.err[-2000:] for f in finished]
    outs = [(f.out, f.err) for f in finished]
    ran = [{m.group(1) for m in re.finditer(r"^\[study\] (\S+) done in", err, re.M)}
           for _, err in outs]
    shared = {"baselines", "sweeps", "repair"}
    assert not (ran[0] & ran[1]) - shared, ran  # a one-worker stage ran in one of them
    names = {s.name for s in stage_list(StudyConfig.from_yaml(config))}
    assert (ran[0] | ran[1]) >= names - shared
    written = [out for out, _ in outs if "[study] report written:" in out]
    assert len(written) == 1 and (tmp_path / "pub" / "REPORT.md").is_file()
    for stage in names:
        assert (tmp_path / "work" / stage / "DONE.json").is_file(), stage
    sweeps = tmp_path / "work" / "sweeps" / "results"
    assert all(len(list(p.glob("results_*.json"))) == 1 for p in sweeps.iterdir()
               if p.is_dir() and not p.name.startswith("."))


def test_a_sweep_that_reads_every_item_leaves_repair_none_and_the_dry_run_says_so(
        tmp_path: Path) -> None:
    """Repair scores only items its ranking did not read: a sweep over all 300 related items
    leaves it none, which the dry run reports before anything runs (it once failed 18 min in)."""
    raw = yaml.safe_load((REPO / "configs" / "study" / "tiny-full.yaml").read_text())
    raw["work_dir"] = str(tmp_path / "work")
    raw["sweeps"]["limit"] = None
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(PlanError, match=r"corrupt_related: no items left .* sweeps\.limit"):
        dry_run(Study(StudyConfig.from_yaml(tmp_path / "s.yaml")))


def test_a_killed_and_resumed_stage_reports_the_time_of_both_runs(tmp_path: Path) -> None:
    """A stage's wall time is that of all its runs (issue 24: after a resume the stage table
    counted only the last run's time). The first run is SIGKILLed, as a crash would be."""
    from study.report import Meter

    ledger = tmp_path / "SEGMENTS.json"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom study.report import Meter\n"
        "with Meter(ledger=Path(sys.argv[1]), interval=0.01, save_every=0.05):\n"
        "    time.sleep(60)\n"), str(ledger)], cwd=REPO)
    deadline = time.time() + 60
    while not (ledger.is_file() and json.loads(ledger.read_text())["seconds"] >= 0.5):
        assert time.time() < deadline and child.poll() is None
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    first = json.loads(ledger.read_text())
    assert first["segments"] == 1 and first["seconds"] >= 0.5
    began = time.perf_counter()
    with Meter(ledger=ledger, interval=0.01, save_every=0.05) as meter:
        time.sleep(0.2)
    assert meter.segments == 2
    assert first["seconds"] + 0.2 <= meter.seconds <= first["seconds"] + time.perf_counter() - began
    assert not ledger.exists()  # a finished stage keeps no ledger
