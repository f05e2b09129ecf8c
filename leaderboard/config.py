"""A sweep, read from YAML: which models, which patches, which tasks, where the results go.

Every field is checked when the config is built, so a typo in a 36-layer sweep fails in
milliseconds with one line naming the key, not after the first hour of evaluation.
Relative paths are relative to the current directory (as with ``lm_eval``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.config import build_nested, load_dataclass
from formats.errors import InputError
from harness_ext.judge.config import JudgeConfig
from patching import (
    PER_HEAD_SITES,
    SITE_NAMES,
    DecodingConfig,
    PatchingError,
    PatchSpec,
    Positions,
)

from .metric import DEFAULT_METRIC, metric_error

DIRECTIONS: tuple[str, ...] = ("corrupted_to_clean", "clean_to_corrupted")
_RANGE = re.compile(r"^(-?\d+)\s*-\s*(-?\d+)$")
# Labels appear in variant folder names, where "-" separates fields.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
_INVALID = re.compile(r"[^A-Za-z0-9_.]")


class SweepConfigError(InputError):
    """A bad sweep setting; the CLI prints it as one line."""


def _str_list(name: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise SweepConfigError(f"{name}={value!r}: expected one of {allowed} or a list of them")
    for item in items:
        if item not in allowed:
            raise SweepConfigError(f"{name}: unknown value {item!r}; allowed: {', '.join(allowed)}")
    if len(set(items)) != len(items):
        raise SweepConfigError(f"{name}={items}: duplicates")
    return list(items)


def resolve_indices(name: str, spec: str | int | list[int], count: int) -> list[int]:
    """``all`` | ``last`` | int | ``"a-b"`` (inclusive) | list of ints -> sorted indices in
    ``0..count-1``; negative ints count from the end (``-1`` is the last layer)."""
    if spec == "all":
        return list(range(count))
    if spec == "last":
        return [count - 1]
    if isinstance(spec, str) and (match := _RANGE.match(spec.strip())):
        lo, hi = (int(g) % count if int(g) < 0 else int(g) for g in match.groups())
        if lo > hi:
            raise SweepConfigError(f"{name}={spec!r}: empty range")
        items: list[int] = list(range(lo, hi + 1))
    else:
        items = [spec] if isinstance(spec, int) else list(spec)  # type: ignore[arg-type]
    out = []
    for item in items:
        index = item + count if item < 0 else item
        if not 0 <= index < count:
            raise SweepConfigError(f"{name}: index {item} out of range (0..{count - 1})")
        out.append(index)
    return sorted(set(out))


def _check_index_spec(name: str, spec: Any) -> None:
    """Validate the form of a layers/heads spec before the model's size is known."""
    if spec in ("all", "last") or (isinstance(spec, str) and _RANGE.match(spec.strip())):
        return
    if isinstance(spec, bool) or not (
        isinstance(spec, int)
        or (isinstance(spec, list) and spec and all(type(i) is int for i in spec))
    ):
        raise SweepConfigError(
            f"{name}={spec!r}: expected 'all', 'last', an int, a range 'a-b' or a list of ints"
        )


def _positions_list(value: Any) -> list[str]:
    """Positions rules (text), canonical; one line for a bad one."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise SweepConfigError(f"positions={value!r}: expected a positions rule such as newest, "
                               "all, prompt[i:j], steps[a:b], or a list of them")
    try:
        out = [str(Positions.parse(item)) for item in items]
    except PatchingError as err:
        raise SweepConfigError(f"positions: {err}") from None
    if len(set(out)) != len(out):
        raise SweepConfigError(f"positions={items}: duplicates")
    return out


@dataclass
class PatchBlock:
    """One cross product of patch variants: sites x layers x (heads) x positions x directions,
    or a list of spec texts (``specs``), each one variant per direction.

    Layers are patched one at a time (the study's sweep) unless ``together`` is true, which
    makes one variant patching every listed layer at once (e.g. "layers 30+").
    Heads (per-head sites only; default all) are always patched one at a time; ``heads`` on a
    block without a per-head site is an error, not ignored. ``prefilter: attribution``
    with ``top_k: N`` (site ``head`` only) runs just the N heads with the largest attribution
    patching score (``leaderboard.prefilter``). ``specs: ["attn:L3 + mlp:L5@steps[0:4]"]``
    names multi-part patches in the one text form of ``patching.spec``.
    """

    sites: list[str] | None = None
    specs: list[str] | None = None
    layers: str | int | list[int] = "all"
    heads: str | int | list[int] | None = None  # None: every head of a per-head site
    positions: list[str] = field(default_factory=lambda: ["newest"])
    directions: list[str] = field(default_factory=lambda: ["corrupted_to_clean"])
    together: bool = False
    prefilter: str | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        self.directions = _str_list("directions", self.directions, DIRECTIONS)
        if (self.sites is None) == (self.specs is None):
            raise SweepConfigError("a patches block needs sites: [...] (a cross product) or "
                                   "specs: [...] (spec texts such as 'attn:L3 + mlp:L5'), not "
                                   + ("both" if self.sites is not None else "neither"))
        if self.specs is not None:
            items = [self.specs] if isinstance(self.specs, str) else self.specs
            if not isinstance(items, list) or not items:
                raise SweepConfigError(f"specs={self.specs!r}: expected a list of spec texts")
            try:
                self.specs = [str(PatchSpec.parse(text)) for text in items]
            except PatchingError as err:
                raise SweepConfigError(f"specs: {err}") from None
            if len(set(self.specs)) != len(self.specs):
                raise SweepConfigError(f"specs={items}: duplicates")
            if (self.layers != "all" or self.heads is not None or self.positions != ["newest"]
                    or self.together or self.prefilter is not None or self.top_k is not None):
                raise SweepConfigError("a specs block takes only specs and directions: write "
                                       "layers, heads and @positions into each spec text")
            return
        self.sites = _str_list("sites", self.sites, SITE_NAMES)
        self.positions = _positions_list(self.positions)
        _check_index_spec("layers", self.layers)
        if self.heads is not None:
            _check_index_spec("heads", self.heads)
            if not set(self.sites) & set(PER_HEAD_SITES):
                raise SweepConfigError(
                    f"heads={self.heads!r} is only for sites {list(PER_HEAD_SITES)}; this block's "
                    f"sites are {self.sites}")
        if not isinstance(self.together, bool):
            raise SweepConfigError(f"together={self.together!r}: expected true or false")
        if self.prefilter is not None or self.top_k is not None:
            top_k_ok = type(self.top_k) is int and self.top_k >= 1
            per_head = set(self.sites) == {"head"}
            if self.prefilter != "attribution" or not top_k_ok or not per_head or self.together:
                raise SweepConfigError(
                    f"prefilter={self.prefilter!r}, top_k={self.top_k!r}: expected prefilter: "
                    "attribution with top_k: an int >= 1, on sites: [head], not together")

    @property
    def head_spec(self) -> str | int | list[int]:
        """The heads to expand for a per-head site (``all`` unless the block lists some)."""
        return "all" if self.heads is None else self.heads


def checked_limit(limit: Any, error: type[Exception]) -> int | float | None:
    """lm-eval's ``limit``: a count of items, a fraction below 1 of them, or None (all)."""
    if limit is None:
        return None
    if (isinstance(limit, bool) or not isinstance(limit, (int, float))
            or not math.isfinite(limit) or limit <= 0):
        raise error(f"limit={limit!r}: expected a positive number (a count, or a fraction below "
                    "1) or null")
    return limit


def checked_gen_kwargs(gen_kwargs: Any, error: type[Exception]) -> dict[str, Any] | None:
    """lm-eval's generation arguments, checked once as the patched engine reads them
    (``DecodingConfig``), so that the plain and the patched variants refuse the same values,
    and completed so that they decode alike: sampling without a temperature samples at 1.0 on
    both sides (transformers' default, which lm-eval's ``hf`` does not fill in)."""
    from harness_ext.patched_args import decoding_from

    if gen_kwargs is None:
        return None
    if not isinstance(gen_kwargs, dict):
        raise error(f"gen_kwargs={gen_kwargs!r}: expected a mapping")
    out = dict(gen_kwargs)
    if "max_gen_toks" in out:
        value = out["max_gen_toks"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise error(f"gen_kwargs: max_gen_toks={value!r}: expected an integer >= 1")
    until = out.get("until", [])
    if not (isinstance(until, str) or (isinstance(until, list)
                                       and all(isinstance(s, str) for s in until))):
        raise error(f"gen_kwargs: until={until!r}: expected a string or a list of strings")
    sampling = {k: v for k, v in out.items() if k not in ("until", "max_gen_toks")}
    try:
        decoding = decoding_from(sampling)
        DecodingConfig(**{k: v for k, v in sampling.items() if k != "do_sample"})  # greedy too
    except PatchingError as err:
        raise error(f"gen_kwargs: {err}") from None
    if decoding.do_sample:
        out.setdefault("temperature", 1.0)
    return out


@dataclass
class SweepConfig:
    """Models, patches and evaluation settings of one sweep (one results folder).

    ``corrupted`` maps a short label (used in variant names) to a full model dir or a LoRA
    adapter dir; a plain path or list of paths is labelled by folder name.
    ``generate_together``: how many patch variants of one model pair share one engine pass
    when generating (their scores are the same either way; it trades memory for speed:
    the engine holds up to 3 x generate_together x batch_size rows of KV cache).
    ``seed``: every variant runs with lm-eval's seeds set to it (``--seed``), so sampled
    ``gen_kwargs`` (``do_sample: true``) give the same replies on a rerun.
    ``metric``: which correctness metric ``leaderboard.build --config`` reads
    (``leaderboard.metric``: ``answer_match`` for chat models, ``strict`` for bare answers).
    """

    clean: str
    corrupted: dict[str, str] | list[str] | str
    output_dir: str
    tasks: list[str] = field(default_factory=lambda: ["corrupt_suite"])
    patches: list[PatchBlock] = field(default_factory=list)
    limit: int | float | None = None
    batch_size: int = 8
    generate_together: int = 8
    gen_kwargs: dict[str, Any] | None = None
    seed: int = 1234
    bootstrap_iters: int = 100000
    device: str = "auto"
    dtype: str = "auto"
    task_dir: str | None = None
    name: str | None = None
    metric: str = DEFAULT_METRIC
    judge: JudgeConfig | None = None  # run by the CLI once every variant is finished

    def __post_init__(self) -> None:
        if (problem := metric_error(self.metric)) is not None:
            raise SweepConfigError(problem)
        for key in ("clean", "output_dir"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise SweepConfigError(f"{key}={getattr(self, key)!r}: expected a non-empty path")
        self.corrupted = _labelled(self.corrupted)
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]
        if not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            raise SweepConfigError(f"tasks={self.tasks!r}: expected a non-empty list of task names")
        build_nested(self, SweepConfigError)  # patches: PatchBlock mappings -> PatchBlocks
        self.limit = checked_limit(self.limit, SweepConfigError)
        if type(self.batch_size) is not int or self.batch_size < 1:
            raise SweepConfigError(f"batch_size={self.batch_size!r}: expected an integer >= 1")
        if type(self.generate_together) is not int or self.generate_together < 1:
            raise SweepConfigError(f"generate_together={self.generate_together!r}: expected an "
                                   "integer >= 1 (1: each variant generates alone)")
        self.gen_kwargs = checked_gen_kwargs(self.gen_kwargs, SweepConfigError)
        if type(self.seed) is not int:
            raise SweepConfigError(f"seed={self.seed!r}: expected an integer (lm-eval's --seed)")
        if type(self.bootstrap_iters) is not int or self.bootstrap_iters < 0:
            raise SweepConfigError(f"bootstrap_iters={self.bootstrap_iters!r}: expected int >= 0")
        if self.name is None:
            self.name = Path(self.output_dir).name

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        """Load and check a sweep file; every problem is one line naming the file."""
        return load_dataclass(cls, path, error=SweepConfigError)


def _labelled(value: Any) -> dict[str, str]:
    """``{label: path}`` from a mapping, a path or a list of paths (label = folder name)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        value = {_INVALID.sub("_", Path(p).name) if isinstance(p, str) else p: p for p in value}
    if not isinstance(value, dict) or not value:
        raise SweepConfigError(f"corrupted={value!r}: expected a path, a list or a label: path map")
    for label, path in value.items():
        if not isinstance(label, str) or not _LABEL.match(label):
            raise SweepConfigError(f"corrupted label {label!r}: use letters, digits, '_' and '.'")
        if label == "clean":
            raise SweepConfigError("corrupted label 'clean' is reserved for the clean baseline")
        if not isinstance(path, str) or not path:
            raise SweepConfigError(f"corrupted[{label}]={path!r}: expected a non-empty path")
    return dict(value)


@dataclass
class EvalSpec:
    """lm-eval settings shared by baselines and sweeps (passed to ``leaderboard.sweep``)."""

    tasks: list[str] = field(default_factory=lambda: ["corrupt_suite"])
    limit: int | float | None = None
    batch_size: int = 16
    gen_kwargs: dict[str, Any] | None = None
    bootstrap_iters: int = 100000
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, list) or not self.tasks:
            raise SweepConfigError(f"tasks={self.tasks!r}: expected a non-empty list")
        self.limit = checked_limit(self.limit, SweepConfigError)
        if type(self.batch_size) is not int or self.batch_size < 1:
            raise SweepConfigError(f"batch_size={self.batch_size!r}: expected an integer >= 1")
        self.gen_kwargs = checked_gen_kwargs(self.gen_kwargs, SweepConfigError)
