"""The shared YAML-to-dataclass loader: one-line errors that say where, nested dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from formats.config import build_nested, load_dataclass


class DemoError(ValueError):
    """Stands in for a package's own error type."""


@dataclass
class Inner:
    size: int
    name: str = "x"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise DemoError(f"size={self.size}: must be >= 1")


@dataclass
class Outer:
    title: str
    inner: Inner = field(default_factory=lambda: Inner(1))
    maybe: Inner | None = None
    items: list[Inner] = field(default_factory=list)
    named: dict[str, Inner] = field(default_factory=dict)
    plain: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        build_nested(self, DemoError)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_python_build_the_same_nested_config(tmp_path: Path) -> None:
    path = write(tmp_path, "title: t\ninner: {size: 2}\nitems: [{size: 3}, {size: 4, name: y}]\n"
                           "named: {a: {size: 5}}\nplain: {k: 1}\n")
    loaded = load_dataclass(Outer, path, error=DemoError)
    built = Outer(title="t", inner={"size": 2}, items=[{"size": 3}, Inner(4, "y")],
                  named={"a": {"size": 5}}, plain={"k": 1})
    assert loaded == built
    assert loaded.items == [Inner(3), Inner(4, "y")] and loaded.named == {"a": Inner(5)}
    assert loaded.maybe is None and loaded.plain == {"k": 1}  # dict[str, int] stays plain
    empty = write(tmp_path, "title: t\nmaybe:\nitems:\nnamed:\n")  # empty sections: defaults
    assert load_dataclass(Outer, empty, error=DemoError) == Outer("t")


@pytest.mark.parametrize(("text", "message"), [
    ("title: t\ntitel: u\n", "c.yaml: unknown key(s) ['titel'] (did you mean 'title'?); known: "
                             "['inner', 'items', 'maybe', 'named', 'plain', 'title']"),
    ("inner: {size: 2}\n", "c.yaml: missing required key(s) ['title']"),
    ("title: t\ninner:\n", "c.yaml: inner: missing required key(s) ['size']"),
    ("title: t\nitems: [{size: 3}, {size: 0}]\n", "c.yaml: items[1]: size=0: must be >= 1"),
    ("title: t\nnamed: {a: {sise: 1}}\n", "c.yaml: named.a: unknown key(s) ['sise'] "
                                          "(did you mean 'size'?); known: ['name', 'size']"),
    ("title: t\nitems: {size: 1}\n", "c.yaml: items: expected a list of mappings, got dict"),
    ("title: t\ninner: c.yaml\n", "c.yaml: inner: expected a mapping of Inner keys, got str"),
    ("- title\n", "c.yaml: expected a mapping of Outer keys, got list"),
    ("title: [t\n", "c.yaml: not valid YAML (line 2, column 1: expected ',' or ']', but got "
                    "'<stream end>')"),
])
def test_every_problem_is_one_line_saying_where(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DemoError) as err:
        load_dataclass(Outer, path, error=DemoError)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_overrides_missing_files_and_own_error_types(tmp_path: Path) -> None:
    path = write(tmp_path, "size: 2\n")
    assert load_dataclass(Inner, path, error=DemoError, overrides={"name": "o"}) == Inner(2, "o")
    with pytest.raises(DemoError, match=r"^preset: size=0: must be >= 1$"):
        load_dataclass(Inner, path, error=DemoError, where="preset", overrides={"size": 0})
    with pytest.raises(KeyError, match="nope.yaml: no such file"):
        load_dataclass(Inner, tmp_path / "nope.yaml", error=KeyError)
    with pytest.raises(DemoError, match=r"^Inner: '<' not supported between"):
        load_dataclass(Inner, {"size": "2"}, error=DemoError)  # a TypeError becomes one line
