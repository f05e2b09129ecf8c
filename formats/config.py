"""YAML configs into checked dataclasses: the one loader behind every package's config.

Each config is a dataclass that validates its own values in ``__post_init__``. What they all
share lives here: reading the file, refusing keys the dataclass lacks (naming them, a close
match and the known keys), naming missing required keys, building fields that are dataclasses
themselves, and turning every problem into ONE line of the caller's error type that starts with
where it is: the file, then the key path (``sweep.yaml: patches[0]: layers='x': ...``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
Source = str | os.PathLike[str] | Mapping[str, Any] | None


def read_yaml(path: str | os.PathLike[str], error: type[Exception]) -> Any:
    """The parsed file (``{}`` when empty); a missing, unreadable or invalid file is one line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({_yaml_problem(err)})") from None
    except (OSError, UnicodeError) as err:
        raise error(f"{path}: cannot read it ({err})") from None
    return {} if data is None else data


def load_dataclass(cls: type[T], source: Source, *, error: type[Exception],
                   where: str | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """``cls`` built from a YAML file (a path) or an already parsed mapping (``None``: empty).

    ``overrides`` replace top-level keys of the source before it is checked. Every problem,
    including a ``ValueError`` or ``TypeError`` raised while ``cls`` validates itself, becomes
    one line of ``error`` prefixed with ``where`` (default: the file, else the class name).
    """
    if isinstance(source, (str, os.PathLike)):
        where = where or str(source)
        source = read_yaml(source, error)
    where = where or cls.__name__
    raw = _mapping(cls, source, where, error) | dict(overrides or {})
    _check_keys(cls, raw, where, error)
    try:
        return cls(**raw)
    except (ValueError, TypeError) as err:
        message = str(err).replace("\n", " ")
        raise error(f"{where}: {message}") from None


def build_nested(obj: Any, error: type[Exception]) -> None:
    """Build, in place, every field of the dataclass ``obj`` annotated as a dataclass ``D``
    (or ``D | None``, ``list[D]``, ``dict[str, D]``) that still holds plain data.

    Called first in ``__post_init__``, so a config written in Python with plain dicts gets the
    same checks as one read from YAML; errors name the key path (``patches[2]``, ``lora``).
    """
    for name, (kind, shape, optional) in _nested_fields(type(obj)).items():
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if shape == "one":
            built: Any = _from_data(kind, value, error, name)
        elif shape == "list":
            if value is not None and not isinstance(value, list):
                raise error(f"{name}: expected a list of mappings, got {type(value).__name__}")
            built = [_from_data(kind, item, error, f"{name}[{i}]")
                     for i, item in enumerate(value or [])]
        else:
            if value is not None and not isinstance(value, Mapping):
                raise error(f"{name}: expected a mapping of name: settings, got "
                            f"{type(value).__name__}")
            built = {key: _from_data(kind, item, error, f"{name}.{key}")
                     for key, item in (value or {}).items()}
        object.__setattr__(obj, name, built)  # frozen dataclasses too


def _from_data(kind: type, value: Any, error: type[Exception], where: str) -> Any:
    """``value`` as a ``kind``; plain data only (a string here is a value, never a file)."""
    if isinstance(value, kind):
        return value
    return load_dataclass(kind, _mapping(kind, value, where, error), error=error, where=where)


def _mapping(cls: type, source: Any, where: str, error: type[Exception]) -> dict[str, Any]:
    if source is None:
        return {}
    if not isinstance(source, Mapping):
        raise error(f"{where}: expected a mapping of {cls.__name__} keys, got "
                    f"{type(source).__name__}")
    return dict(source)


def _check_keys(cls: type, raw: Mapping[str, Any], where: str, error: type[Exception]) -> None:
    init = [f for f in dataclasses.fields(cls) if f.init]
    known = sorted(f.name for f in init)
    unknown = sorted((k for k in raw if k not in known), key=str)
    if unknown:
        guesses = {k: m[0] for k in unknown
                   if (m := difflib.get_close_matches(str(k), known, n=1, cutoff=0.75))}
        if len(unknown) == 1 and guesses:
            hint = f" (did you mean {guesses[unknown[0]]!r}?)"
        elif guesses:
            hint = " (did you mean " + ", ".join(
                f"{m!r} for {k!r}" for k, m in guesses.items()) + "?)"
        else:
            hint = ""
        raise error(f"{where}: unknown key(s) {unknown}{hint}; known: {known}")
    missing = [f.name for f in init if f.name not in raw
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{where}: missing required key(s) {missing}")


@cache
def _nested_fields(cls: type) -> dict[str, tuple[type, str, bool]]:
    """``{field: (dataclass, "one" | "list" | "dict", may be None)}`` from the annotations."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind, optional = _strip_none(hints[f.name])
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is list and len(args) == 1 and _is_dataclass(args[0]):
            out[f.name] = (args[0], "list", optional)
        elif origin is dict and len(args) == 2 and args[0] is str and _is_dataclass(args[1]):
            out[f.name] = (args[1], "dict", optional)
        elif _is_dataclass(kind):
            out[f.name] = (kind, "one", optional)
    return out


def _strip_none(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _is_dataclass(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """``line L, column C: what`` where PyYAML knows the place, else its first line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
