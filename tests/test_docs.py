"""The documentation: the README is a front door, the site builds with ``--strict``, every path
it names exists, every command in a ``bash`` block of the README and ``docs/`` runs, and so does
every ``python`` block marked ``<!-- tested: tests/test_docs.py ... -->``.

Commands run in a sandbox shaped like the checkout after ``make demo``: it links the
checkout's ``models/``, ``configs/`` and ``tasks/`` and holds stand-ins for the demo's
fine-tunes at the demo's paths (``runs/study/tiny/finetune-overfit.s0/run/model``, ...). A
command runs as written, except that lm-eval calls score at most 3 items per task
(``--limit``). A command whose line (or whose block's first line) ends in a ``[gpu]``,
``[long]`` or ``[vllm]`` comment is not run: ``python -m study`` and ``python -m finetune``
ones run with ``--dry-run`` instead (which checks the whole config), the rest must name files
that exist. ``make`` targets must exist in the Makefile; what they run is tested where the
table ``MAKE_TARGETS`` says.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]  # docs/*/: study reports
BIN = Path(sys.executable).parent
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
PLACEHOLDERS = {"DIR": "models/tiny-qwen3-math", "CLEAN": "models/tiny-qwen3-math",
                "BASE": "models/tiny-qwen3-math",
                "CORRUPTED": "runs/study/tiny/finetune-overfit.s0/run/model",
                "CORR": "runs/study/tiny/finetune-overfit.s0/run/model",
                "ADAPTER": "runs/study/tiny/finetune-lora/run/adapter",
                "C.yaml": "configs/sweeps/tiny.yaml", "REPORT_DIR": "runs/report"}
# make targets the pages name, and the test that runs what each does
MAKE_TARGETS = {
    "demo": "tests/test_study.py::test_smoke_study_end_to_end (python -m study, smoke sizes)",
    "demo-cot": "tests/test_cot_report.py (the CoT study's report)",
    "publish": "tests/test_study.py::test_smoke_study_end_to_end (--publish)",
    "publish-cot": "tests/test_study.py::test_smoke_study_end_to_end (--publish)",
    "test": "this suite", "docs": "test_docs_build_with_strict_links",
    "lint": "ruff, in CI", "vllm-cpu": ".ci/run", "test-vllm": "tests/test_vllm.py",
    "bench-baselines": "bench/baselines.py (a benchmark, not a test)",
}
WRITTEN_LATER = {"bench/results/gpu.md"}  # what bench/gpu_check.sh writes on a GPU machine
MARK = "<!-- tested: tests/test_docs.py"
NOT_RUN = re.compile(r"#.*\[(gpu|long|vllm)\]\s*$")


@dataclass(frozen=True)
class Command:
    page: str
    text: str  # one logical line, continuations joined, comment kept
    skip: str | None  # "gpu" / "long" (a marker comment) or None: run it

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def blocks(page: Path) -> list[list[Command]]:
    """The logical lines of each of the page's ``bash`` blocks: a block runs in order (its
    later lines read what the earlier ones wrote)."""
    found, block, fence = [], [], None
    for line in page.read_text().splitlines():
        if fence is None and line.startswith("```"):
            fence, block = line[3:].strip(), []
        elif fence is not None and line.startswith("```"):
            if fence == "bash":
                found.append(_logical(page, block))
            fence = None
        elif fence is not None:
            block.append(line)
    return found


def _logical(page: Path, lines: list[str]) -> list[Command]:
    block_mark = NOT_RUN.search(lines[0]) if lines and lines[0].startswith("#") else None
    out, pending = [], ""
    for line in lines:
        if line.startswith("#") and not pending:
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        if pending.strip():
            mark = NOT_RUN.search(pending) or block_mark
            out.append(Command(str(page.relative_to(REPO)), " ".join(pending.split()),
                               mark.group(1) if mark else None))
        pending = ""
    return out


BLOCKS = [b for page in PAGES for b in blocks(page) if b]
ALL = [c for b in BLOCKS for c in b]


def test_readme_is_a_front_door() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme.count("\n") <= 300
    for page in sorted((REPO / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"(docs/{page.name})" in readme, f"README does not link {page.name}"
    assert "source .venv/bin/activate" in readme and "runs/study/tiny/report/REPORT.md" in readme


def test_docs_build_with_strict_links(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "patching" / "index.html").is_file()


def test_every_path_the_pages_name_exists() -> None:
    """Code spans that look like a checked-in path (configs/..., bench/results/..., tests/...)."""
    roots = ("configs/", "bench/", "tests/", "models/", "tasks/", "docs/", "requirements/")
    missing = []
    for page in PAGES:
        for span in re.findall(r"`([^`\s]+)`", page.read_text()):
            path = span.split("::")[0].rstrip(".,:;)")
            if path.startswith(roots) and not any(c in path for c in "<>*{}$") \
                    and path not in WRITTEN_LATER:
                if not (REPO / path).exists():
                    missing.append(f"{page.name}: {span}")
    assert not missing, missing


def test_the_pages_have_commands_and_few_are_not_run() -> None:
    assert len(ALL) >= 25
    skipped = [c for c in ALL if c.skip]
    assert len(skipped) <= len(ALL) // 3, [c.text for c in skipped]


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shaped like the checkout after ``make demo``, built once per worker: the
    checkout's models, configs and tasks, and stand-ins for the demo's fine-tunes at the
    demo's paths (perturbed copies of the clean model; a LoRA adapter over it)."""
    from leaderboard_fixtures import perturbed
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("docs-sandbox")
    for name in ("models", "configs", "tasks"):
        (root / name).symlink_to(REPO / name)
    demo, clean = root / "runs/study/tiny", REPO / "models/tiny-qwen3-math"
    for seed, label in enumerate(("overfit", "underfit")):
        perturbed(clean, demo / f"finetune-{label}.s0/run/model", seed, std=0.05)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(clean),
                          LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(demo / "finetune-lora/run/adapter")
    return root


def _runnable(words: list[str]) -> list[str]:
    """The command as run: placeholders filled, lm-eval capped at 3 items per task."""
    words = [PLACEHOLDERS.get(w, w) for w in words]
    words = [re.sub(r"(?<=[=,])(CLEAN|CORRUPTED|CORR|BASE|DIR|ADAPTER)(?=,|$|')",
                    lambda m: PLACEHOLDERS[m.group(1)], w) for w in words]
    if Path(words[0]).name == "lm_eval" and words[1:2] != ["ls"]:
        if "--limit" in words:
            at = words.index("--limit") + 1
            words[at] = str(min(3, int(words[at])))
        else:
            words += ["--limit", "3"]
    return words


@functools.cache
def _dry_run(module: str, config: str, cwd: Path) -> tuple[int, str]:
    """One dry run per config (several pages plan the same Qwen3-4B study)."""
    done = subprocess.run([sys.executable, "-m", module, "--config", config, "--dry-run"],
                          cwd=cwd, env=os.environ | ENV, capture_output=True, text=True,
                          check=False)
    return done.returncode, done.stderr[-3000:]


def _check_not_run(command: Command, sandbox: Path) -> None:
    words = command.words
    if words[:3] in (["python", "-m", "study"], ["python", "-m", "finetune"]):
        status, stderr = _dry_run(words[2], words[words.index("--config") + 1], sandbox)
        assert status == 0, stderr
        return
    named = [w for w in words if re.match(r"(configs|tasks|models)/", w)]
    assert all((REPO / w).exists() for w in named), named


def _run_one(command: Command, sandbox: Path) -> None:
    words = command.words
    if words[0] == "make":
        assert words[1] in MAKE_TARGETS, f"make {words[1]}: which test covers it?"
        assert re.search(rf"^{re.escape(words[1])}:", (REPO / "Makefile").read_text(), re.M)
        return
    if words[0] in ("source", "pip"):
        return  # set-up, done by make setup
    plain_dry_run = words[:2] == ["python", "-m"] and len(words) == 6 \
        and words[3] == "--config" and words[5] == "--dry-run"
    if command.skip or plain_dry_run:
        _check_not_run(command, sandbox)  # a plain dry run too: once per config
        return
    run = _runnable(words)
    if run[0] == "python":
        run[0] = sys.executable
    done = subprocess.run(run, cwd=sandbox, env=os.environ | ENV, capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, f"{' '.join(run)}\n{done.stderr[-3000:]}"


def _grouped(block: list[Command]) -> object:
    """The blocks that run the tiny sweep share one xdist worker (``--dist loadgroup``), and
    so one sandbox: the first scores the sweep, the others find it done."""
    marks = [pytest.mark.xdist_group("tiny-sweep")] if any(
        "configs/sweeps/tiny.yaml" in c.text for c in block) else []
    return pytest.param(block, marks=marks, id=f"{block[0].page}: {block[0].text[:60]}")


@pytest.mark.slow
@pytest.mark.parametrize("block", [_grouped(b) for b in BLOCKS])
def test_documented_commands_run(block: list[Command], sandbox: Path) -> None:
    for command in block:
        _run_one(command, sandbox)


def marked_python_blocks() -> list[str]:
    """The python block after each ``tested`` marker of the pages."""
    blocks = []
    for part in "\n".join(p.read_text(encoding="utf-8") for p in PAGES).split(MARK)[1:]:
        match = re.search(r"```python\n(.*?)```", part, re.S)
        assert match, "a tested marker without a python block after it"
        blocks.append(match.group(1))
    return blocks


def test_the_pages_have_marked_python_blocks() -> None:
    assert marked_python_blocks()


@pytest.mark.parametrize("index", range(len(marked_python_blocks())))
def test_a_marked_python_block_runs(index: int, sandbox: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """As written, from the sandbox's root: its paths are the demo's."""
    import torch

    before = set(os.listdir(sandbox))
    monkeypatch.chdir(sandbox)
    torch.set_num_threads(1)
    exec(compile(marked_python_blocks()[index], f"docs block {index}", "exec"),
         {"__name__": "docs"})
    assert set(os.listdir(sandbox)) <= before | {"runs"}  # what it writes lands in runs/
