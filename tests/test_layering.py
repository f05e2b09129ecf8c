"""Packages import one way: each may import those before it in ORDER, never one after it.

So ``formats`` works alone, ``patching`` without lm-eval glue, ``harness_ext`` without the
fine-tuning code, and so on up to ``study``. ``bench/`` and ``tests/`` use everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDER = ("formats", "patching", "harness_ext", "finetune", "leaderboard", "study")
EXEMPT = {"bench", "tests"}


def imported_modules(source: str) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in ``source``, at any depth (inside
    functions and ``if TYPE_CHECKING:`` too); relative imports stay inside their package."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
    return sorted(out, key=lambda hit: hit[1])


def upward_imports(package: str, source: str) -> list[str]:
    """Imports in a module of ``package`` that reach a package later in ORDER."""
    rank = ORDER.index(package)
    return [f"line {line}: {name}" for name, line in imported_modules(source)
            if name.split(".")[0] in ORDER[rank + 1:]]


def test_every_package_has_a_place_in_the_order() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages - EXEMPT == set(ORDER)


def test_no_package_imports_one_above_it() -> None:
    found = [f"{path.relative_to(REPO)} {hit}"
             for package in ORDER for path in sorted((REPO / package).rglob("*.py"))
             for hit in upward_imports(package, path.read_text(encoding="utf-8"))]
    assert not found, "imports against the package order:\n" + "\n".join(found)


def test_the_check_finds_late_and_nested_imports() -> None:
    source = ("from typing import TYPE_CHECKING\nimport formats.rows\nfrom . import sibling\n"
              "if TYPE_CHECKING:\n    import study.config as s\n"
              "def f():\n    from finetune.data import generate\n")
    assert upward_imports("harness_ext", source) == ["line 5: study.config",
                                                     "line 7: finetune.data"]
    assert upward_imports("study", source) == []
