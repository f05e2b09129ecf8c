"""The python blocks of the README and docs/ run as written, on the embedded tiny model
(``tests/test_docs.py`` runs the ``bash`` ones).

A block marked ``<!-- tested: tests/test_readme.py ... -->`` runs with its model paths pointed
at the shipped tiny model and, for the demo's fine-tunes it names, at a perturbed copy of it
(a clean clone has not run the demo); files it writes land in a temporary folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[1]
MARK = "<!-- tested: tests/test_readme.py"
FINETUNE = re.compile(r'"(runs/study/tiny/finetune-[a-z]+(\.s\d+)?/run/model)"')
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def page_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in PAGES)


def marked_blocks(text: str) -> list[str]:
    """The python block after each marker."""
    blocks = []
    for part in text.split(MARK)[1:]:
        match = re.search(r"```python\n(.*?)```", part, re.S)
        assert match, "a tested marker without a python block after it"
        blocks.append(match.group(1))
    return blocks


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = AutoModelForCausalLM.from_pretrained(REPO / "models" / "tiny-qwen3-math")
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.model.layers[2:].parameters():
            weight.add_(0.05 * torch.randn(weight.shape, generator=noise))
    out = tmp_path_factory.mktemp("finetune")
    model.save_pretrained(out)
    return out


def test_the_pages_have_marked_blocks():
    assert marked_blocks(page_text())


@pytest.mark.parametrize("index", range(len(marked_blocks(page_text()))))
def test_a_tested_python_block_runs(index, perturbed, tmp_path, monkeypatch):
    code = marked_blocks(page_text())[index]
    code = FINETUNE.sub(f'"{perturbed}"', code)
    code = code.replace('"models/', f'"{REPO}/models/')
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    exec(compile(code, f"README block {index}", "exec"), {"__name__": "readme"})
    assert not os.listdir(tmp_path) or (tmp_path / "runs").is_dir()
