"""Presets and the task export turned into rows, and rows into validated files plus a manifest."""

from __future__ import annotations

import random
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from finetune.data import ethics, general, hard_math, unrelated
from finetune.data.cot import draw_arithmetic, draw_worked
from finetune.data.holdout import Candidate, in_pool
from finetune.data.manifest import MANIFEST, build_manifest, manifest_bytes
from finetune.data.presets import TINY_RANGES, Preset, get_preset
from finetune.data.related import draw_related, template_ids
from formats.jsonl import jsonl_bytes, write_files_atomic
from formats.rows import RowError, check_row

TASKS_DATA = Path(__file__).resolve().parents[2] / "tasks" / "data"
TASK_COUNTS = {"related": 300, "unrelated_math": 300, "general": 200, "ethics_mc": 100,
               "related_cot": 200, "unrelated_math_cot": 200}


@lru_cache(maxsize=1)
def excluded_texts() -> frozenset[str]:
    """LLM-scale evaluation texts: fixed strings outside the holdout scheme, never trained on."""
    return frozenset(r["question"] for r in ethics.open_question_rows() + hard_math.rows())


def _pool_rows(cands: list[Candidate], pool: str) -> list[dict]:
    return [dict(c.row) for c in cands if in_pool(c, pool, excluded_texts())]


def _by_kind(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["kind"]].append(row)
    return dict(sorted(groups.items()))


def _even_by_kind(rng: random.Random, rows: list[dict], n: int, family: str) -> list[dict]:
    """``n`` rows spread evenly over kinds (the first ``n % kinds`` kinds get one more)."""
    groups = _by_kind(rows)
    out = []
    for i, (kind, group) in enumerate(groups.items()):
        want = n // len(groups) + (i < n % len(groups))
        if want > len(group):
            raise ValueError(f"{family}: only {len(group)} {kind} texts available, {want} wanted")
        out += rng.sample(group, want)
    rng.shuffle(out)
    return out


def _cap_per_kind(rng: random.Random, rows: list[dict], cap: int) -> list[dict]:
    return [r for group in _by_kind(rows).values() for r in rng.sample(group, min(cap, len(group)))]


def _take(rng: random.Random, rows: list[dict], n: int | None, family: str) -> list[dict]:
    """``n`` random rows, or all of them (shuffled) when ``n`` is None."""
    n = len(rows) if n is None else n
    if n > len(rows):
        raise ValueError(f"{family}: only {len(rows)} texts available, {n} wanted")
    return rng.sample(rows, n)


def _with_ids(rows: list[dict], prefix: str) -> list[dict]:
    width = max(4, len(str(len(rows))))
    return [{"id": f"{prefix}-{i:0{width}d}", **row} for i, row in enumerate(rows)]


def generate(
    preset: str | Preset, seed: int = 0, cot: bool = False, **overrides: object
) -> dict[str, list[dict]]:
    """Rows per split for a preset; the same arguments always give the same rows."""
    p = get_preset(preset, **overrides)
    rng = random.Random(seed)
    sizes = {"train": p.n_train, "validation": p.n_val, "test": p.n_test}
    sizes = {split: n for split, n in sizes.items() if n}
    wrong = frozenset({"train"}) if p.mode == "corrupt" else frozenset()
    seen: set[str] = set()
    templates = template_ids(p.templates)
    if p.corruption != "answer_only":  # worked solutions, the train split corrupted
        splits = draw_worked(rng, p.ranges, sizes, "train", seen, wrong, p.corruption,
                             p.slip_types, excluded_texts(), templates, style=p.style)
    else:
        splits = draw_related(
            rng, p.ranges, sizes, "train", seen, wrong, cot, excluded_texts(), templates
        )
    if p.mode == "pretrain":
        extra = _cap_per_kind(
            rng, _pool_rows(unrelated.candidates(), "train"), p.n_unrelated_per_kind
        )
        extra += _take(rng, _pool_rows(general.candidates(), "train"), p.n_general, "general")
        extra += _take(rng, _pool_rows(ethics.candidates(rng), "train"), p.n_ethics, "ethics_mc")
        if p.n_cot:
            extra += draw_worked(rng, p.ranges, {"train": p.n_cot}, "train", set(),
                                 excluded=excluded_texts(), templates=templates)["train"]
        if p.n_cot_arithmetic:
            extra += draw_arithmetic(rng, p.n_cot_arithmetic, "train")
        train = splits.get("train", []) + extra
        rng.shuffle(train)
        splits["train"] = train
    return {split: _with_ids(rows, split) for split, rows in splits.items()}


def task_rows(seed: int = 0) -> dict[str, list[dict]]:
    """The shipped evaluation files: held-out texts only, related math in the tiny ranges."""
    rng = random.Random(seed)
    related = draw_related(rng, TINY_RANGES, {"test": TASK_COUNTS["related"]}, "eval", set())[
        "test"
    ]
    unrel = _even_by_kind(
        rng,
        _pool_rows(unrelated.candidates(), "eval"),
        TASK_COUNTS["unrelated_math"],
        "unrelated_math",
    )
    gen = _take(rng, _pool_rows(general.candidates(), "eval"), TASK_COUNTS["general"], "general")
    eth = _take(
        rng, _pool_rows(ethics.candidates(rng), "eval"), TASK_COUNTS["ethics_mc"], "ethics_mc"
    )
    # Drawn last, so the files above stay what they were before these existed.
    related_cot = draw_worked(rng, TINY_RANGES, {"test": TASK_COUNTS["related_cot"]}, "eval",
                              set(), prompt=False)["test"]
    arithmetic = draw_arithmetic(rng, TASK_COUNTS["unrelated_math_cot"], "eval", prompt=False)
    return {
        "corrupt_related.jsonl": _with_ids(related, "related"),
        "corrupt_related_cot.jsonl": _with_ids(related_cot, "related-cot"),
        "corrupt_unrelated_math_cot.jsonl": _with_ids(arithmetic, "unrelated-cot"),
        "corrupt_unrelated_math.jsonl": _with_ids(unrel, "unrelated"),
        "corrupt_general.jsonl": _with_ids(gen, "general"),
        "corrupt_ethics_mc.jsonl": _with_ids(eth, "ethics"),
        "corrupt_unrelated_math_hard.jsonl": hard_math.rows(),
        "corrupt_open_questions.jsonl": ethics.open_question_rows(),
    }


def _write(
    out_dir: Path, preset: str, seed: int, params: dict, files: dict[str, list[dict]]
) -> dict:
    """Validate every row, then write all files and the manifest atomically (nothing partial)."""
    blobs = {}
    for name, rows in files.items():
        questions: set[str] = set()
        ids: set[str] = set()
        for lineno, row in enumerate(rows, start=1):
            try:
                check_row(row)
                if row["id"] in ids:
                    raise RowError("id", f"duplicate id {row['id']!r}")
                if row["question"] in questions:
                    raise RowError("question", f"duplicate question {row['question']!r}")
            except RowError as err:
                raise ValueError(f"{out_dir / name}:{lineno}: {err}") from None
            ids.add(row["id"])
            questions.add(row["question"])
        blobs[name] = jsonl_bytes(rows)
    manifest = build_manifest(preset, seed, params, blobs)
    write_files_atomic(Path(out_dir), {**blobs, MANIFEST: manifest_bytes(manifest)})
    return manifest


def write_dataset(
    preset: str | Preset,
    out_dir: str | Path,
    seed: int = 0,
    cot: bool = False,
    **overrides: object,
) -> dict:
    """Write a preset to ``out_dir`` (split files + ``manifest.json``); returns its manifest."""
    p = get_preset(preset, **overrides)
    splits = generate(p, seed, cot)
    files = {f"{split}.jsonl": rows for split, rows in splits.items()}
    return _write(Path(out_dir), p.name, seed, {**p.params(), "cot": cot}, files)


def export_tasks(out_dir: str | Path = TASKS_DATA, seed: int = 0) -> dict:
    """Regenerate ``tasks/data`` deterministically; returns its manifest."""
    params = {
        "ranges": TINY_RANGES.as_dict(),
        "counts": TASK_COUNTS,
        "holdout": "reserved phrasings",
    }
    return _write(Path(out_dir), "export-tasks", seed, params, task_rows(seed))
