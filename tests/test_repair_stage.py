"""The study's repair stage on tiny random models: bad input is one line before anything is
scored or trained, and (slow) the stage end to end, its numbers against lm-eval's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from leaderboard_fixtures import perturbed

from finetune.tiny import TinyModelConfig, build_tiny_model_dir
from leaderboard.tables import RELATED
from repair.measures import common_items
from repair.record import load
from repair.run import Models, RepairError, plan, run_repair
from study.config import StudyConfig, StudyConfigError
from study.repair_stage import repair_job
from study.stages import Study

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def study_for(tmp_path: Path, base: Path, corrupted: Path, **repair: object) -> Study:
    """A study whose fine-tune 'over' already finished with ``corrupted`` as its model."""
    work = tmp_path / "work"
    model = work / "finetune-over" / "run" / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(corrupted, model)
    spec = {"corrupted": ["over"], "select": [{"site": "mlp", "k": [1],
                                               "rank_by": "attribution"}],
            "random_seeds": [0], "methods": ["restore"], "limit": 2, "batch_size": 4,
            "gen_kwargs": {"max_gen_toks": 4}, "device": "cpu", "resamples": 200} | repair
    raw = {"name": "t", "work_dir": str(work), "threads": 1, "metric": "strict",
           "base": {"model": str(base)},
           "finetunes": {"over": {"config": "configs/finetune/tiny-overfit.yaml"}},
           "sweeps": {"corrupted": ["over"]}, "repair": spec}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Study(StudyConfig.from_yaml(path))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repair")
    base = build_tiny_model_dir(root / "base", seed=0)
    other = build_tiny_model_dir(root / "wide", seed=0,
                                 config=TinyModelConfig(intermediate_size=256))
    return {"base": base, "over": perturbed(base, root / "over", seed=1, std=0.05),
            "other": perturbed(base, root / "other", seed=2, std=0.05), "wide": other}


def test_bad_repair_input_is_one_line_before_anything_runs(tmp_path: Path, models) -> None:
    good = study_for(tmp_path / "good", models["base"], models["over"])
    job = repair_job(good)
    plan(job, Models(job))  # writes the selection file of this pair
    written = good.folder("repair") / "selection-over.json"
    lacking = tmp_path / "lacking.json"
    record = json.loads(written.read_text())
    record["choices"][0]["located"][0]["component"] = "mlp:L9"
    lacking.write_text(json.dumps(record))
    cases = [
        ({"selection_files": {"over": str(lacking)}}, models["over"],
         "component mlp:L9: layer 9 is out of range for a 6-layer model (0..5)"),
        ({"select": [{"site": "mlp", "k": [7], "rank_by": "attribution"}]}, models["over"],
         "site mlp: k=7 is larger than the 6 components the attribution ranked"),
        ({}, models["wide"], "over: parameter model.layers.0.mlp.gate_proj.weight is (256, 128) "
                             "in the corrupted model, (512, 128) in the clean one"),
        ({"selection_files": {"over": str(written)}}, models["other"],
         f"{written} was made for clean {models['base']} and corrupted over"),
    ]
    for i, (change, corrupted, message) in enumerate(cases):
        study = study_for(tmp_path / f"case{i}", models["base"], corrupted, **change)
        job = repair_job(study)
        with pytest.raises(RepairError) as err:
            plan(job, Models(job))
        text = str(err.value)
        assert message in text and "\n" not in text and text.startswith("repair: "), text
        assert not (study.folder("repair") / "results").exists()


@pytest.mark.slow
def test_repair_stage_end_to_end(tmp_path: Path, models) -> None:
    """Restore and retrain with controls; every recovery in repair.json is the formula on the
    samples lm-eval logged; a second run scores nothing again."""
    study = study_for(tmp_path, models["base"], models["over"], methods=["restore", "retrain"],
                      retrain={"config": "configs/finetune/tiny-repair.yaml",
                               "overrides": {"max_steps": 1, "per_device_batch_size": 4,
                                             "eval_batch_size": 64}},
                      limit=3, restore_each=["block"])
    folder = study.folder("repair")
    folder.mkdir(parents=True)
    record = run_repair(repair_job(study, folder))
    # clean, corrupted, (located, random, lowest) x 2 methods, full retrain; 6 blocks alone
    assert record["scored"] == 9 + 6
    report = json.loads((folder / "repair.json").read_text())["labels"]["over"]
    runs = {run.name: run for run in load(folder / "results")}
    clean, bad = runs["clean-over"], runs["corrupted-over"]
    selection = json.loads((folder / "selection-over.json").read_text())
    held_out = set(selection["used_items"][RELATED])
    for row in report["rows"]:
        docs, values = common_items([clean, bad, runs[row["name"]]], RELATED, "exact_match")
        assert docs and not held_out & set(docs)  # scored on items the ranking did not read
        gap = values[0].mean() - values[1].mean()
        expected = None if gap == 0 else (values[2].mean() - values[1].mean()) / gap
        assert row["recovery"]["value"] == (pytest.approx(expected) if expected is not None
                                            else None)
        assert row["touched"] <= row["total"] and (row["control"] == "full") == (
            row["touched"] == row["total"])
    assert {r["control"] for r in report["rows"]} == {"located", "random", "lowest", "full"}
    assert [a["component"] for a in report["alone"]] == [f"block:L{i}" for i in range(6)]
    for item in report["alone"]:  # the restore sweep: the same formula, related math only
        run = runs[f"over-alone-{item['component'].replace(':', '')}"]
        assert list(run.output_types) == [RELATED]
        docs, values = common_items([clean, bad, run], RELATED, "exact_match")
        gap = values[0].mean() - values[1].mean()
        expected = None if gap == 0 else (values[2].mean() - values[1].mean()) / gap
        assert item["recovery"]["value"] == (pytest.approx(expected) if expected is not None
                                             else None)
    assert (folder / "repair.png").is_file() and "| restore " in (folder / "repair.md").read_text()
    assert run_repair(repair_job(study, folder))["scored"] == 0


def test_repair_config_errors_are_one_line(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "configs" / "study" / "smoke.yaml").read_text())
    cases = [({"select": [{"site": "neuron", "k": [1]}]}, "site='neuron': expected one of"),
             ({"select": [{"site": "mlp", "k": [0]}]}, "k=[0]: expected a list of distinct"),
             ({"select": [{"site": "mlp", "k": [1], "rank_by": "luck"}]}, "rank_by='luck'"),
             ({"corrupted": ["nope"]}, "repair.corrupted: ['nope'] are not fine-tune labels"),
             ({"corrupted": ["lora"]}, "['lora'] are not swept (sweeps.corrupted)"),
             ({"methods": ["retrain"], "retrain": None}, "methods has retrain: set retrain"),
             ({"direction": "sideways"}, "direction='sideways': expected one of"),
             ({"tasks": ["corrupt_suite"]}, "expected task names with data files"),
             ({"random_seeds": []}, "random_seeds=[]: expected a non-empty list")]
    for change, message in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(raw | {"repair": raw["repair"] | change}))
        with pytest.raises(StudyConfigError) as err:
            StudyConfig.from_yaml(path)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_qwen3_4b_dry_run_plans_the_repair(tmp_path: Path) -> None:
    from study.dryrun import PlanError, dry_run

    config = StudyConfig.from_yaml(REPO / "configs" / "study" / "qwen3-4b.yaml")
    config.work_dir = str(tmp_path / "work")
    lines = "\n".join(dry_run(Study(config)))
    # per model (exp1, exp3 x 3 seeds): 7 choices x (located, 3 random, lowest) x 2 methods +
    # full retrain + 36 blocks alone + 2 baselines
    assert ("654 models scored (210 restored, 216 retrained, 216 restored alone, 12 baselines)"
            in lines)
    assert "retraining: 250 steps" in lines and "-> repair -> page" in lines
    config.repair.select = [{"site": "mlp", "k": [40]}]  # type: ignore[union-attr]
    with pytest.raises(PlanError, match="k=40 is larger than the 36 components the sweep ranked"):
        dry_run(Study(config))
    config.repair.select = [{"site": "mlp", "k": [20]}]  # type: ignore[union-attr]
    with pytest.raises(PlanError, match=r"k=20: the 20 ranked lowest would overlap the 20 "
                                        r"located \(36 ranked by the sweep\)"):
        dry_run(Study(config))
    config.repair.select = [{"site": "head", "k": [4]}]  # heads are swept the other way only
    with pytest.raises(PlanError, match=r"k=4 is larger than the 0 components the sweep ranked "
                                        r"\(direction clean_to_corrupted\)"):
        dry_run(Study(config))
