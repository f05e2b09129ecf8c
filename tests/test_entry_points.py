"""Fail fast, everywhere: every entry point x bad input ends with exit status 2 and one
``error: ...`` line, before any weights load or work starts, never a traceback.

``python -m X`` entry points run their ``main(argv)`` in this process (what ``python -m`` runs;
an escaping exception would fail the test as a traceback would); ``lm_eval`` runs as the literal
command. Rows marked "(issue 15 #N)" are the failures a new user met; each failed on the main of
2026-11-30 (a traceback, or work done and then a failure, or silently accepted input).
"""

from __future__ import annotations

import atexit
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "tiny-qwen3-math"
LM_EVAL = Path(sys.executable).parent / "lm_eval"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def config_only(tmp: Path) -> Path:
    """A model folder holding config.json and tokenizer, no weights (issue 15 #4)."""
    folder = tmp / "config-only"
    shutil.copytree(SHIPPED, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


def truncated(tmp: Path) -> Path:
    """A model folder whose safetensors file was cut short (a killed copy)."""
    folder = tmp / "truncated"
    shutil.copytree(SHIPPED, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return folder


def foreign_adapter(tmp: Path) -> Path:
    """A LoRA adapter trained over a model of another shape (3 layers, not 6)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.tiny import TinyModelConfig, build_tiny_model_dir

    other = build_tiny_model_dir(tmp / "other-base", config=TinyModelConfig(num_hidden_layers=3))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(other),
                           LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp / "adapter")
    return tmp / "adapter"


def yaml_file(tmp: Path, name: str, raw: dict) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def sft(tmp: Path, **over) -> Path:
    raw = yaml.safe_load((REPO / "configs/finetune/tiny-underfit.yaml").read_text())
    raw |= {"data_dir": str(tmp / "data"), "output_dir": str(tmp / "out")} | over
    return yaml_file(tmp, "sft.yaml", raw)


def sweep(tmp: Path, **over) -> Path:
    raw = {"clean": str(SHIPPED), "corrupted": {"over": str(SHIPPED)},
           "output_dir": str(tmp / "out"), "tasks": ["corrupt_related"], "limit": 2,
           "patches": [{"sites": ["resid"], "layers": "last"}]} | over
    return yaml_file(tmp, "sweep.yaml", raw)


def pretrain_more(tmp: Path, **over) -> Path:
    """The CoT base's second stage, writing under ``tmp``."""
    raw = yaml.safe_load((REPO / "configs/pretrain/tiny-cot-more.yaml").read_text())
    raw |= {"work_dir": str(tmp / "work"), "out_dir": str(tmp / "out")} | over
    return yaml_file(tmp, "pretrain.yaml", raw)


def study(tmp: Path, drop: tuple[str, ...] = (), **over) -> Path:
    raw = yaml.safe_load((REPO / "configs/study/smoke.yaml").read_text())
    raw |= {"work_dir": str(tmp / "work")} | over
    for key in drop:
        raw.pop(key)
    return yaml_file(tmp, "study.yaml", raw)


def study_sweeps(tmp: Path, **over) -> Path:
    """The smoke study with keys of its ``sweeps:`` block replaced."""
    raw = yaml.safe_load((REPO / "configs/study/smoke.yaml").read_text())
    return study(tmp, sweeps=raw["sweeps"] | over)


def truncated_config(tmp: Path) -> Path:
    """A model folder whose config.json was cut short."""
    folder = tmp / "cut-config"
    shutil.copytree(SHIPPED, folder)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[: len(text) // 2])
    return folder


def patched(tmp: Path, name: str = "patched_hf", **args) -> list[str]:
    model_args = {"pretrained": str(SHIPPED), "corrupted": str(SHIPPED), "site": "resid",
                  "layers": "[1]"} | args
    return [str(LM_EVAL), "--model", name, "--tasks", "corrupt_related", "--limit", "2",
            "--model_args", ",".join(f"{k}={v}" for k, v in model_args.items())]


def patched_spec(tmp: Path, **args) -> list[str]:
    """``patched_hf`` given its spec as text (quoted for lm-eval's comma split)."""
    model_args = {"pretrained": str(SHIPPED), "corrupted": str(SHIPPED)} | args
    return [str(LM_EVAL), "--model", "patched_hf", "--tasks", "corrupt_related", "--limit", "2",
            "--model_args", ",".join(f"{k}={v}" for k, v in model_args.items())]


def read_only_results() -> Path:
    """A judge results folder that the user running the row may read but not write. Root
    writes anywhere, so as root the row runs as ``nobody`` (``as_other_user``), on a path in
    /tmp that nobody can reach (pytest's own tmp folders are root's alone)."""
    from judge_helpers import write_run

    base = Path(tempfile.mkdtemp(prefix="corrupt-cmap-read-only-"))
    atexit.register(shutil.rmtree, base, True)
    write_run(base / "results")
    for folder in (base, base / "results"):
        folder.chmod(0o555)
    return base / "results"


def renamed_samples(tmp: Path, name: str) -> Path:
    """A results folder of corrupt_related whose samples file was renamed to ``name``."""
    from judge_helpers import DATE, write_run

    folder = tmp / "renamed"
    write_run(folder, task="corrupt_related").rename(folder / name.format(date=DATE))
    return folder


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_other_user(command: list[str]) -> list[str]:
    """``python -m ...`` run as a user who does not own the read-only folders. As root, the
    row needs a checkout and venv that ``nobody`` can read (a clone in a 0700 mktemp folder
    is not): the row is skipped there, not failed."""
    python = [sys.executable, *command]
    if os.geteuid() != 0:
        return python
    probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import formats"], cwd=REPO,
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("user nobody cannot read this checkout or its venv")
    return [*AS_NOBODY, *python]


def py(module: str, *args: str | Path) -> list[str]:
    return ["-m", module, *map(str, args)]


def run_main(module: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``python -m module argv`` as its ``main(argv)`` in this process: (status, stderr)."""
    package = importlib.import_module(module)
    main = getattr(package, "main", None) or importlib.import_module(f"{module}.__main__").main
    status = main(argv)
    return status, capsys.readouterr().err


Case = Callable[[Path], list[str]]
CASES: dict[str, tuple[Case, str]] = {
    "finetune: unknown key": (
        lambda t: py("finetune", "--config", sft(t, epoch=2)),
        r"unknown key\(s\) \['epoch'\]"),
    "finetune: base without weights (issue 15 #4)": (
        lambda t: py("finetune", "--config", sft(t, base_model=str(config_only(t)))),
        r"base_model .*config-only: holds config.json but no weights"),
    "finetune: truncated base weights": (
        lambda t: py("finetune", "--config", sft(t, base_model=str(truncated(t)))),
        r"model.safetensors is truncated: \d+ bytes where its header needs \d+"),
    "finetune.pretrain: max_steps 0": (
        lambda t: py("finetune.pretrain", "--config", "configs/pretrain/tiny.yaml",
                     "--max-steps", "0", "--out-dir", t / "m"),
        r"max_steps=0: must be an integer >= 1"),
    "finetune.pretrain: init_from holds no model": (
        lambda t: py("finetune.pretrain", "--config", pretrain_more(t, init_from=str(t / "no"))),
        r"init_from=.*/no: no model directory there \(config.json\)"),
    "finetune.pretrain: init_from of another shape": (
        lambda t: py("finetune.pretrain", "--config", pretrain_more(t, init_from=str(SHIPPED))),
        r"init_from=.*tiny-qwen3-math: its shape \{'num_hidden_layers': 6\} differs from model:"),
    "finetune.data: unknown preset": (
        lambda t: py("finetune.data", "--preset", "tiny-corupt", "--out", t / "d"),
        r"tiny-corupt"),
    "leaderboard.sweep: heads on site mlp (issue 15 #2)": (
        lambda t: py("leaderboard.sweep", "--config",
                     sweep(t, patches=[{"sites": ["mlp"], "heads": [0]}])),
        r"heads=\[0\] is only for sites \['head', 'q', 'k', 'v'\]; this block's sites are "
        r"\['mlp'\]"),
    "leaderboard.sweep: corrupted without weights (issue 15 #4)": (
        lambda t: py("leaderboard.sweep", "--config",
                     sweep(t, corrupted={"over": str(config_only(t))})),
        r"corrupted\[over\] .*config-only: holds config.json but no weights"),
    "leaderboard.build: no results folder": (
        lambda t: py("leaderboard.build", t / "nothing", "-o", t / "page.md"),
        r"nothing"),
    "study: no base (issue 15 #3)": (
        lambda t: py("study", "--config", study(t, drop=("base",))),
        r"base: missing; name the clean model .* or write base: default"),
    "study: heads on site mlp": (
        lambda t: py("study", "--config", study(t, sweeps={
            "patches": [{"sites": ["mlp"], "heads": [0]}]})),
        r"heads=\[0\] is only for sites"),
    "study: base without weights": (
        lambda t: py("study", "--config", study(t, base={"model": str(config_only(t))})),
        r"base.model .*config-only: holds config.json but no weights"),
    "study: a base folder that does not exist (issue 24)": (
        lambda t: py("study", "--config", study(t, base={"model": str(t / "no-base")})),
        r"base.model .*/no-base: no such model directory"),
    "study: a judge folder that does not exist (issue 24)": (
        lambda t: py("study", "--config", study(t, judge={"model": str(t / "no-judge"),
                                                          "backend": "hf"})),
        r"judge.model .*/no-judge: no such model directory"),
    "study: a judge without weights (issue 24)": (
        lambda t: py("study", "--config", study(t, judge={"model": str(config_only(t)),
                                                          "backend": "hf"})),
        r"judge.model .*config-only: holds config.json but no weights"),
    "lm_eval patched_hf: corrupted without weights (issue 15 #4)": (
        lambda t: patched(t, corrupted=str(config_only(t))),
        r"corrupted='.*config-only': holds config.json but no weights"),
    "leaderboard.sweep: adapter over another base": (
        lambda t: py("leaderboard.sweep", "--config",
                     sweep(t, corrupted={"lora": str(foreign_adapter(t))})),
        r"corrupted\[lora\] .*adapter: was trained over .*other-base \(num_hidden_layers 3\)"),
    "lm_eval patched_hf: a dangling + in spec=": (
        lambda t: patched_spec(t, spec="'mlp:L1 + '"),
        r"spec 'mlp:L1 \+ ' has a dangling '\+' at the end; join parts as attn:L3 \+ mlp:L5"),
    "lm_eval patched_hf: a key head past the KV groups": (
        lambda t: patched_spec(t, spec="'k:L1.H0,5@all'"),
        r"head 5 of part k:L1.H0,5 is out of range: k heads are the model's 2 KV groups"),
    "lm_eval patched_hf: a reversed steps window": (
        lambda t: patched_spec(t, spec="'head:L1.H0@steps[4:2]'"),
        r"steps\[4:2\]: an empty or reversed window"),
    "leaderboard.sweep: a spec part out of range": (
        lambda t: py("leaderboard.sweep", "--config",
                     sweep(t, patches=[{"specs": ["attn:L1 + mlp:L9@all"]}])),
        r"specs: layer 9 of part mlp:L9 is out of range for a 6-layer model \(0\.\.5\)"),
    "leaderboard.sweep: a specs block with layers": (
        lambda t: py("leaderboard.sweep", "--config",
                     sweep(t, patches=[{"specs": ["attn:L1"], "layers": [2]}])),
        r"a specs block takes only specs and directions"),
    "lm_eval patched_hf: layers=[30,31] on 6 layers (issue 15 #5)": (
        lambda t: patched(t, layers="[30,31]"),
        r"layer 30 of part resid:L30 is out of range for a 6-layer model \(0\.\.5\)"),
    "lm_eval patched_qwen: a misspelled argument (issue 15 #5)": (
        lambda t: patched(t, name="patched_qwen", layer=1),
        r"unknown patched_hf argument layer=1; did you mean layers=\? patched_hf's own "
        r"arguments: corrupted, spec, spec_file, donor, alpha, site, layers, heads, positions, "
        r"direction, seed$"),
    "patching.attribution_check: clean without weights": (
        lambda t: py("patching.attribution_check", "--clean", config_only(t),
                     "--corrupted", SHIPPED, "--out", t / "a"),
        r"--clean .*config-only: holds config.json but no weights"),
    "leaderboard.sweep: limit .nan (issue 24)": (
        lambda t: py("leaderboard.sweep", "--config", sweep(t, limit=float("nan"))),
        r"limit=nan: expected a positive number \(a count, or a fraction below 1\) or null"),
    "study: limit .nan (issue 24)": (
        lambda t: py("study", "--config", study_sweeps(t, limit=float("nan"))),
        r"limit=nan: expected a positive number"),
    "study --dry-run: limit .nan (issue 24)": (
        lambda t: py("study", "--config", study_sweeps(t, limit=float("nan")), "--dry-run"),
        r"limit=nan: expected a positive number"),
    "leaderboard.sweep: temperature nan (issue 24)": (
        lambda t: py("leaderboard.sweep", "--config",
                     sweep(t, gen_kwargs={"do_sample": True, "temperature": float("nan")})),
        r"gen_kwargs: temperature must be > 0 when sampling, got nan"),
    "study: temperature -1 (issue 24)": (
        lambda t: py("study", "--config", study_sweeps(t, gen_kwargs={"temperature": -1.0})),
        r"gen_kwargs: temperature must be a finite number >= 0, got -1.0"),
    "leaderboard.sweep: top_p 0 (issue 24)": (
        lambda t: py("leaderboard.sweep", "--config", sweep(t, gen_kwargs={"top_p": 0})),
        r"gen_kwargs: top_p must be in \(0, 1\], got 0"),
    "study: max_gen_toks -1 (issue 24)": (
        lambda t: py("study", "--config", study_sweeps(t, gen_kwargs={"max_gen_toks": -1})),
        r"gen_kwargs: max_gen_toks=-1: expected an integer >= 1"),
    "leaderboard.sweep: an unknown task (issue 24)": (
        lambda t: py("leaderboard.sweep", "--config", sweep(t, tasks=["corrupt_relatd"])),
        r"tasks: unknown task 'corrupt_relatd'; did you mean 'corrupt_related'\?"),
    "lm_eval patched_hf: a truncated config.json (issue 24)": (
        lambda t: patched(t, pretrained=str(truncated_config(t))),
        r"pretrained='.*cut-config': config.json is not valid JSON"),
    "harness_ext.judge: --batch-size -1 (issue 24)": (
        lambda t: py("harness_ext.judge", "--results", t, "--judge", SHIPPED, "--batch-size", "-1"),
        r"batch_size=-1: expected an integer >= 1"),
    "harness_ext.judge: a read-only results folder (issue 24)": (
        lambda t: as_other_user(py("harness_ext.judge", "--results", read_only_results(),
                                   "--judge", SHIPPED, "--backend", "hf")),
        r"read-only-.*/results: not writable \(Permission denied\); the judge writes its cache"),
    "leaderboard.build: a read-only -o folder (issue 24)": (
        lambda t: as_other_user(py("leaderboard.build", read_only_results(), "-o",
                                   read_only_results() / "LEADERBOARD.md")),
        r"read-only-.*/results: not writable \(Permission denied\); -o names the page"),
    "harness_ext.judge: another task's samples, renamed (issue 24)": (
        lambda t: py("harness_ext.judge", "--results",
                     renamed_samples(t, "samples_corrupt_em_tiny_{date}.jsonl"), "--judge", SHIPPED,
                     "--backend", "hf"),
        r"has no task 'corrupt_em_tiny' \(it lists \['corrupt_related'\]\); was the samples "),
    "harness_ext.judge: a samples name without a date (issue 24)": (
        lambda t: py("harness_ext.judge", "--results",
                     renamed_samples(t, "samples_corrupt_em_tiny.jsonl"), "--judge", SHIPPED,
                     "--backend", "hf"),
        r"samples_corrupt_em_tiny.jsonl: not named samples_<task>_<date>.jsonl with lm-eval's"),
    "harness_ext.judge: no such judge": (
        lambda t: py("harness_ext.judge", "--results", t, "--judge", t / "no-judge",
                     "--backend", "hf"),
        r"no-judge"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    build, pattern = CASES[case]
    command = build(tmp_path)
    if command[0] == "-m":
        for key, value in ENV.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(REPO)
        status, stderr = run_main(command[1], command[2:], capsys)
    else:
        env = os.environ | ENV
        if command[0] == "setpriv":  # nobody's home does not exist: caches go to /tmp
            env |= {"HOME": tempfile.gettempdir()}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                              text=True, check=False, timeout=600)
        status, stderr = done.returncode, done.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert lines[-1].startswith("error: ") and re.search(pattern, lines[-1]), lines[-1]
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()  # no work began
