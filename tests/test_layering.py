"""Packages import one way, and modules import without circles.

Packages: each may import those before it in ORDER, never one after it, so ``formats`` works
alone, ``patching`` without lm-eval glue, ``harness_ext`` without the fine-tuning code, and so
on up to ``study``. ``bench/`` and ``tests/`` use everything. Modules: no circle of imports,
counting imports inside functions (which only hide a circle) and relative ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDER = ("formats", "patching", "harness_ext", "finetune", "leaderboard", "repair", "study")
EXEMPT = {"bench", "tests"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str = "", is_package: bool = False
            ) -> list[tuple[str, list[str], int]]:
    """(absolute module, names taken from it, line) of every import in ``source`` at any depth
    (inside functions and ``if TYPE_CHECKING:`` too); a relative one resolved against
    `module`."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*anchor, base] if p)
            out.append((base, [alias.name for alias in node.names], node.lineno))
    return sorted(out, key=lambda hit: hit[2])


def imported_modules(source: str, module: str = "", is_package: bool = False
                     ) -> list[tuple[str, int]]:
    """(name, line) of every import: each module, and for ``from pkg import name`` also
    ``pkg.name`` (which may be a module)."""
    return [(name, line) for base, names, line in imports(source, module, is_package)
            for name in [base, *(f"{base}.{n}" for n in names)]]


def upward_imports(package: str, source: str, module: str = "") -> list[str]:
    """Imports in a module of ``package`` that reach a package later in ORDER."""
    rank = ORDER.index(package)
    return [f"line {line}: {name}" for name, line in imported_modules(source, module or package)
            if name.split(".")[0] in ORDER[rank + 1:]]


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in ORDER for p in sorted((REPO / package).rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a name that is not a module is its package)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for base, names, _ in imports(path.read_text(encoding="utf-8"), name,
                                      path.name == "__init__.py"):
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            targets |= set(subs) if subs and len(subs) == len(names) else {base, *subs}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_package_has_a_place_in_the_order() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages - EXEMPT == set(ORDER)


def test_no_package_imports_one_above_it() -> None:
    found = [f"{path.relative_to(REPO)} {hit}"
             for name, path in project_modules().items()
             for hit in upward_imports(name.split(".")[0], path.read_text(encoding="utf-8"),
                                       name)]
    assert not found, "imports against the package order:\n" + "\n".join(found)


def test_no_module_imports_in_a_circle() -> None:
    """A package's ``__init__`` re-exporting its modules is not a circle unless a module
    imports the package back."""
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_find_late_nested_and_relative_imports() -> None:
    source = ("from typing import TYPE_CHECKING\nimport formats.rows\nfrom . import sibling\n"
              "if TYPE_CHECKING:\n    import study.config as s\n"
              "def f():\n    from finetune.data import generate\n"
              "def g():\n    from ..study import stages\n")
    assert upward_imports("harness_ext", source, "harness_ext.judge.run") == [
        "line 5: study.config", "line 7: finetune.data", "line 7: finetune.data.generate"]
    assert ("harness_ext.judge.sibling", 3) in imported_modules(source, "harness_ext.judge.run")
    assert ("study.stages", 2) in imported_modules("def f():\n    from ..stages import x\n",
                                                   "study.sub.run")
    assert upward_imports("study", source, "study.x") == []
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
