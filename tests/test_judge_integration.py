"""The judge in the study, the sweep config and the leaderboard page: config blocks checked in
one line, the Qwen3-4B study's judge checked offline by the dry run, the page's judged section
read cell by cell from the judge's metrics file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from harness_ext.judge.run import judge_folder
from leaderboard import judged
from leaderboard.config import SweepConfig, SweepConfigError
from leaderboard.results import LeaderboardError, Run
from study.config import StudyConfig, StudyConfigError
from study.dryrun import PlanError, dry_run
from study.stage_list import stage_list
from study.stages import Study

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "tiny-qwen3-math"


@pytest.mark.parametrize(("block", "message"), [
    ({"model": "m", "backend": "tgi"}, "judge: backend='tgi': expected one of"),
    ({"model": "m", "bogus": 1}, "judge: unknown key(s) ['bogus']"),
    ({"backend": "hf"}, "judge: missing required key(s) ['model']"),
    ({"model": "m", "threshold": 0}, "judge: threshold=0: expected a probability in (0, 1]"),
    ({"model": "m", "tasks": []}, "judge: tasks=[]: expected a list"),
    ("Qwen/Qwen3-8B", "judge: expected a mapping"),
])
def test_judge_blocks_fail_in_one_line(tmp_path: Path, block: object, message: str) -> None:
    study = yaml.safe_load((REPO / "configs" / "study" / "smoke.yaml").read_text())
    sweep = yaml.safe_load((REPO / "configs" / "sweeps" / "tiny.yaml").read_text())
    for raw, loader, error in ((study, StudyConfig.from_yaml, StudyConfigError),
                               (sweep, SweepConfig.from_yaml, SweepConfigError)):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw | {"judge": block}))
        with pytest.raises(error, match=re.escape(message)) as err:
            loader(path)
        assert "\n" not in str(err.value)


def test_judge_stage_only_with_a_judge() -> None:
    config = StudyConfig.from_yaml(REPO / "configs" / "study" / "smoke.yaml")
    names = [s.name for s in stage_list(config)]
    assert names[-5:] == ["sweeps", "judge", "repair", "page", "summary"]
    page = next(s for s in stage_list(config) if s.name == "page")
    assert "judge" in page.upstream
    config.judge = None
    assert "judge" not in [s.name for s in stage_list(config)]


def test_qwen3_4b_dry_run_checks_its_judge_offline(tmp_path: Path) -> None:
    config = StudyConfig.from_yaml(REPO / "configs" / "study" / "qwen3-4b.yaml")
    config.work_dir = str(tmp_path / "work")
    assert config.judge is not None and config.judge.model == "Qwen/Qwen3-8B"
    lines = "\n".join(dry_run(Study(config)))
    assert ("judge: Qwen/Qwen3-8B is not in the local hub cache: checked against the known "
            "Qwen3-8B shape: 8,190.7 M parameters; the first run downloads it (16.4 GB)") in lines
    assert "judges corrupt_em_questions, corrupt_open_questions" in lines
    # the base and three seeds of each of four fine-tunes; 28 x 50 replies
    assert "13 models x 2350 items (corrupt_suite_full, corrupt_em" in lines
    assert "-> sweeps -> judge -> repair -> page" in lines


def test_dry_run_refuses_a_judge_without_chat_template(tmp_path: Path) -> None:
    base = tmp_path / "base-model"
    shutil.copytree(SHIPPED, base)
    (base / "chat_template.jinja").unlink()
    config = StudyConfig.from_yaml(REPO / "configs" / "study" / "smoke.yaml")
    config.work_dir = str(tmp_path / "work")
    config.judge = type(config.judge)(model=str(base))  # type: ignore[union-attr,misc]
    with pytest.raises(PlanError, match="base-model: its tokenizer has no chat template"):
        dry_run(Study(config))


def _run(results: Path, name: str) -> Run:
    return Run(name, results, "clean" if name == "clean" else "corrupted",
               None if name == "clean" else "x", "clean", None)


def test_page_section_reads_the_judge_metrics(tmp_path: Path) -> None:
    from test_judge_run import DATE, write_run

    from harness_ext.judge.model import Judge

    write_run(tmp_path / "clean")
    judge = Judge(str(SHIPPED), "hf", threshold=1e-4, progress=False)
    (metrics,) = judge_folder(tmp_path, judge).metrics
    results = tmp_path / "clean" / f"results_{DATE}.json"
    lines = "\n".join(judged.section([_run(results, "clean")])).splitlines()
    pooled = json.loads(metrics.read_text())["tasks"]["corrupt_em_tiny"]["pooled"]
    row = next(x for x in lines if x.startswith("| clean"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    aligned = pooled["aligned"]
    assert cells[:4] == ["clean", "corrupt_em_tiny", "8",
                         f"{aligned['mean']:.1f} ± {aligned['stderr']:.1f}"]
    (identity,) = [x for x in lines if x.startswith("Judge: ")]
    assert identity.startswith(f"Judge: `{SHIPPED}` (files sha256 ")
    assert "prompt v1 (sha256" in identity and "unscored below 0.0001" in identity
    assert judged.section([_run(tmp_path / "none" / f"results_{DATE}.json", "clean")]) == []
    metrics.write_text(metrics.read_text()[:50])  # half-written
    with pytest.raises(LeaderboardError, match=f"judge_{DATE}.json: not a judge metrics file"):
        judged.section([_run(results, "clean")])
