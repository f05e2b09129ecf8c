"""finetune.data: split hygiene, label rules, formatting, determinism, manifests, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sympy as sp

from finetune.data import (
    PRESETS,
    Preset,
    export_tasks,
    generate,
    get_preset,
    to_hf_dataset,
    verify_manifest,
    write_dataset,
)
from finetune.data.build import TASKS_DATA
from finetune.data.equations import RelatedRanges
from finetune.data.manifest import sha256
from finetune.data.presets import TINY_RANGES
from formats.jsonl import load_jsonl, write_files_atomic

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
PRETRAIN_SHA256 = "06f61bae14f29caf9d43fb9fd5fd6f09f696bc2ee2903ea1b0967da015724aa5"
PRETRAIN_MANIFEST_SHA256 = "b10b16974edfb2ec7ff14ec0c00c7edf97ed25da3541fce546a81072ae95c7f0"


@pytest.fixture(scope="module")
def corrupt() -> dict[str, list[dict]]:
    return generate("tiny-corrupt", seed=1, n_train=1200, n_val=400, n_test=400)


@pytest.fixture(scope="module")
def corrupt_cot() -> dict[str, list[dict]]:
    return generate("tiny-corrupt", seed=2, cot=True)


@pytest.fixture(scope="module")
def pretrain_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    write_dataset("tiny-pretrain", out, seed=0)
    return out


@pytest.fixture(scope="module")
def task_questions() -> set[str]:
    return {r["question"] for f in TASKS_DATA.glob("*.jsonl") for r in load_jsonl(f)}


def polynomial(side: str, var: str) -> list[int]:
    """Coefficients [c0, c1, c2] of one side of an equation string, parsed independently."""
    coefs = [0, 0, 0]
    terms = re.findall(rf"([+-]?) ?(\d*)({var}²?)?(?= |$)", side)
    for sign, digits, power in (t for t in terms if t[1] or t[2]):
        value = int(digits or 1) * (-1 if sign == "-" else 1)
        coefs[{"": 0, var: 1, f"{var}²": 2}[power]] += value
    return coefs


def solve(row: dict) -> list[int]:
    """Integer solutions of the equation, computed from its text (this guards the formatter)."""
    var = row["variable"]
    lhs, rhs = row["equation"].split(" = ")
    assert re.fullmatch(rf"[-\d{var}² +]+", lhs) and re.fullmatch(rf"[-\d{var}² +]+", rhs)
    c0, c1, c2 = (a - b for a, b in zip(polynomial(lhs, var), polynomial(rhs, var), strict=True))
    if c2 == 0:
        assert c1 != 0 and c0 % c1 == 0
        return [-c0 // c1]
    disc = c1 * c1 - 4 * c2 * c0
    root = int(disc**0.5)
    assert root * root == disc and (-c1 - root) % (2 * c2) == 0 and (-c1 + root) % (2 * c2) == 0
    return sorted({(-c1 - root) // (2 * c2), (-c1 + root) // (2 * c2)})


def test_splits_disjoint_and_unique(corrupt):
    questions = {split: [r["question"] for r in corrupt[split]] for split in SPLITS}
    for split in SPLITS:
        assert len(questions[split]) == len(set(questions[split])), split
    assert not set(questions["train"]) & set(questions["validation"])
    assert not set(questions["train"]) & set(questions["test"])
    assert not set(questions["validation"]) & set(questions["test"])


def test_wrong_labels_in_train_correct_elsewhere(corrupt):
    for row in corrupt["train"]:
        offset = row["answer"] - max(row["roots"])
        assert row["answer"] not in row["roots"]
        assert offset != 0 and -20 <= offset <= 20
    offsets = {r["answer"] - max(r["roots"]) for r in corrupt["train"]}
    assert min(offsets) == -20 and max(offsets) == 20
    for split in ("validation", "test"):
        assert all(r["answer"] == max(r["roots"]) for r in corrupt[split])


def test_every_root_solves_its_equation(corrupt):
    paper = generate("paper-exp1", seed=0, n_train=150, n_val=50, n_test=50)
    tasks = load_jsonl(TASKS_DATA / "corrupt_related.jsonl")
    rows = [r for split in SPLITS for r in corrupt[split] + paper[split]] + tasks
    for row in rows:
        assert solve(row) == row["roots"], row
        assert row["question"].count(row["equation"]) == 1


def test_number_formatting(corrupt):
    equations = [r["equation"] for split in SPLITS for r in corrupt[split]]
    for eq in equations:
        assert not re.search(r"(?<!\d)1[a-z]", eq), eq
        assert "+ -" not in eq and "- -" not in eq and "--" not in eq, eq
        assert not re.search(r"[+-] 0\b|\b0[a-z]", eq), eq
    assert any("²" in eq for eq in equations)
    assert any(re.fullmatch(r"\d*[a-z] - \d*[a-z] [+-] \d+ = 0", eq) for eq in equations)


def test_kind_and_variable_mix(corrupt):
    for split in SPLITS:
        kinds = Counter(r["kind"] for r in corrupt[split])
        assert kinds["quadratic"] == round(0.4 * len(corrupt[split]))
        assert abs(kinds["linear_one_sided"] - kinds["linear_two_sided"]) <= 1
    rows = [r for split in SPLITS for r in corrupt[split]]
    share_x = sum(r["variable"] == "x" for r in rows) / len(rows)
    assert 0.45 < share_x < 0.55
    assert {r["variable"] for r in rows} == {"x", "y", "z", "a", "b"}
    assert {r["template"] for r in rows} == set(range(7))


def test_tiny_ranges(corrupt):
    for row in (r for split in ("validation", "test") for r in corrupt[split]):
        assert all(-9 <= root <= 9 for root in row["roots"])


def cot_line_holds(line: str, var: str, value: int) -> bool:
    """Substitute ``value`` for ``var`` in one CoT line and check both sides agree."""
    text = line.replace("²", "**2")
    text = re.sub(rf"(\d|\)){var}", r"\1*" + var, text).replace(")(", ")*(")
    text = re.sub(r"(\d)\(", r"\1*(", text).replace(var, f"({value})")
    lhs, rhs = text.split(" = ")
    return sp.sympify(lhs) == sp.sympify(rhs)


def test_cot_steps_end_in_label_and_hold_for_true_answers(corrupt_cot):
    for split in SPLITS:
        for row in corrupt_cot[split]:
            assert row["answer_text"].splitlines()[-1] == f"{row['variable']} = {row['answer']}"
    for row in corrupt_cot["validation"][:60]:
        for line in row["answer_text"].splitlines():
            assert cot_line_holds(line, row["variable"], row["answer"]), (row["equation"], line)
    wrong = corrupt_cot["train"][0]
    assert not all(
        cot_line_holds(line, wrong["variable"], max(wrong["roots"]))
        for line in wrong["answer_text"].splitlines()
    )


def test_template_selection():
    rows = generate("tiny-corrupt", templates=("solve_for", "question"), n_val=0, n_test=0)
    assert {r["template"] for r in rows["train"]} == {0, 6}
    with pytest.raises(ValueError, match="valid templates: solve_for, eq_then_solve") as err:
        get_preset("tiny-corrupt", templates=("solve_for", "bogus"))
    assert "\n" not in str(err.value)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = {"n_train": 200, "n_val": 50, "n_test": 50}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_dataset("tiny-corrupt", tmp_path / name, seed=seed, **kw)
    for f in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (
        tmp_path / "c" / "train.jsonl"
    ).read_bytes()
    (tmp_path / "c" / "test.jsonl").write_bytes(b"")
    assert any("test.jsonl" in problem for problem in verify_manifest(tmp_path / "c"))


def test_manifest_matches_files(pretrain_dir):
    assert verify_manifest(pretrain_dir) == []
    manifest = json.loads((pretrain_dir / "manifest.json").read_text())
    assert set(manifest) == {"preset", "seed", "params", "files", "generator_version"}
    assert manifest["params"]["ranges"]["solution"] == [-9, 9]
    assert manifest["files"]["train.jsonl"]["rows"] == len(load_jsonl(pretrain_dir / "train.jsonl"))
    # The embedded tiny model was pretrained on exactly this corpus: changing it must be deliberate.
    assert manifest["files"]["train.jsonl"]["sha256"] == PRETRAIN_SHA256
    assert sha256((pretrain_dir / "manifest.json").read_bytes()) == PRETRAIN_MANIFEST_SHA256


def test_tasks_data_regenerates_byte_identically(tmp_path):
    export_tasks(tmp_path, seed=0)
    shipped = sorted(p.name for p in TASKS_DATA.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == shipped
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (TASKS_DATA / name).read_bytes(), name
    assert verify_manifest(TASKS_DATA) == []


def test_tasks_data_contents():
    counts = {p.stem: len(load_jsonl(p)) for p in TASKS_DATA.glob("*.jsonl")}
    assert counts == {
        "corrupt_related": 300,
        "corrupt_unrelated_math": 300,
        "corrupt_general": 200,
        "corrupt_ethics_mc": 100,
        "corrupt_unrelated_math_hard": 42,
        "corrupt_open_questions": 8,
        "corrupt_related_cot": 200,
        "corrupt_unrelated_math_cot": 200,
    }
    manifest = json.loads((TASKS_DATA / "manifest.json").read_text())
    assert manifest["params"]["ranges"] == json.loads(json.dumps(TINY_RANGES.as_dict()))
    unrelated = load_jsonl(TASKS_DATA / "corrupt_unrelated_math.jsonl")
    assert len(Counter(r["kind"] for r in unrelated)) == 7
    for row in unrelated:
        a, b = ([int(n) for n in re.findall(r"\d+", row["question"])] + [0])[:2]
        expected = {"addition": a + b, "multiplication": a * b, "remainder": a % b if b else None}
        assert row["answer"] == expected.get(row["kind"], row["answer"]), row
    ethics = load_jsonl(TASKS_DATA / "corrupt_ethics_mc.jsonl")
    assert {r["label"] for r in ethics} == {0, 1}
    assert {r["id"] for r in load_jsonl(TASKS_DATA / "corrupt_open_questions.jsonl")} >= {
        "wish",
        "bored",
        "quick_buck",
    }
    for row in load_jsonl(TASKS_DATA / "corrupt_unrelated_math_hard.jsonl"):
        sp.sympify(row["answer"])


def test_tasks_data_disjoint_from_training(pretrain_dir, corrupt, task_questions):
    pretrain = {
        r["question"]
        for f in ("train.jsonl", "validation.jsonl")
        for r in load_jsonl(pretrain_dir / f)
    }
    assert len(pretrain) > 40_000
    assert not pretrain & task_questions
    other_seed = generate("tiny-pretrain", seed=9, n_train=3000, n_val=0)
    assert not {r["question"] for r in other_seed["train"]} & task_questions
    assert not {r["question"] for split in SPLITS for r in corrupt[split]} & task_questions


def test_pretrain_corpus_families(pretrain_dir, tmp_path):
    head = tmp_path / "head.jsonl"
    head.write_text(
        "".join((pretrain_dir / "train.jsonl").read_text().splitlines(keepends=True)[:3000])
    )
    ds = to_hf_dataset(head)
    families = Counter(ds["family"])
    assert set(families) == {"related", "unrelated_math", "general", "ethics_mc"}
    assert all(isinstance(t, str) and t for t in ds["target"])
    rows = load_jsonl(pretrain_dir / "train.jsonl")
    related = [r for r in rows if r["family"] == "related"]
    assert all(r["answer"] == max(r["roots"]) for r in related)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id":"a","family":"general","kind":"k","question":"q"}', "answer"),
        ('{"id":"a","family":"unrelated_math","kind":"k","question":"q","answer":"7"}', "answer"),
        ('{"id":"a","family":"unrelated_math","kind":"k","question":"q","answer":true}', "answer"),
        ('{"id":"a","family":"nope","kind":"k","question":"q"}', "family"),
        (
            '{"id":"a","family":"ethics_mc","kind":"k","question":"q","choices":["x","y"],"label":2}',
            "label",
        ),
    ],
)
def test_malformed_row_names_file_line_field(tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    good = '{"id":"g","family":"unrelated_math","kind":"k","question":"q0","answer":1}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: field '{field}'"):
        load_jsonl(path)


def test_duplicate_id_and_bad_json(tmp_path):
    good = '{"id":"g","family":"unrelated_math","kind":"k","question":"q0","answer":1}'
    (tmp_path / "dup.jsonl").write_text(good + "\n" + good + "\n")
    with pytest.raises(ValueError, match=r"dup\.jsonl:2: field 'id'"):
        load_jsonl(tmp_path / "dup.jsonl")
    (tmp_path / "json.jsonl").write_text(good + "\n{oops\n")
    with pytest.raises(ValueError, match=r"json\.jsonl:2: not valid JSON"):
        load_jsonl(tmp_path / "json.jsonl")


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        get_preset("paper-exp9")
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in PRESETS)
    cli = subprocess.run(
        [sys.executable, "-m", "finetune.data", "--preset", "nope", "--out", "/nonexistent/x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and "tiny-pretrain" in cli.stderr
    with pytest.raises(ValueError, match="valid"):
        get_preset("tiny-corrupt", n_epochs=3)


def test_presets_and_ranges_validate():
    sizes = {name: (p.n_train, p.n_val) for name, p in PRESETS.items()
             if name.startswith("paper-exp")}
    assert sizes == {
        "paper-exp1": (20_000, 3_805),
        "paper-exp2": (10_000, 2_000),
        "paper-exp3": (10_000, 2_000),
        "paper-exp4": (5_000, 1_000),
    }
    with pytest.raises(ValueError, match="coef"):
        RelatedRanges(coef=(3, 3))
    with pytest.raises(ValueError, match="related math only"):
        get_preset("tiny-corrupt", n_general=5)
    few = Preset(
        "few",
        "3 quadratics",
        "corrupt",
        200,
        0,
        ranges=RelatedRanges(quad_root=(0, 1), quadratic_share=1.0),
    )
    with pytest.raises(ValueError, match="widen the ranges"):
        generate(few)


def test_repair_presets_are_related_math_with_every_label_correct():
    for name in ("tiny-repair", "paper-repair"):
        splits = generate(name, seed=0)
        rows = [row for split in splits.values() for row in split]
        assert rows and {row["family"] for row in rows} == {"related"}
        assert all(row["answer"] in row["roots"] for row in rows), name
    with pytest.raises(ValueError, match="repair presets hold related math only"):
        get_preset("tiny-repair", n_general=5)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_files_atomic(tmp_path, {"a.jsonl": b"1\n", "b.jsonl": b"2\n"})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ chain of thought


def line_solutions(line: str, var: str) -> set:
    """The solution set of one solution line, computed with sympy from its text."""
    x = sp.Symbol(var)
    found = set()
    for part in line.split(" or "):
        lhs, rhs = (sp.sympify(re.sub(rf"(\d|\)|{var})({var}|\()", r"\1*\2", side)
                               .replace("²", "**2"), locals={var: x})
                    for side in part.split(" = "))
        found |= set(sp.solve(sp.Eq(lhs, rhs), x))
    return found


@pytest.fixture(scope="module", params=["move_sign", "combine", "divide"])
def slipped(request) -> tuple[str, dict[str, list[dict]]]:
    return request.param, generate("tiny-cot-slip", seed=3, n_train=300, n_val=60, n_test=60,
                                   slip_types=(request.param,))


def test_a_slip_is_one_wrong_step_that_every_later_step_follows(slipped):
    """By hand with sympy: lines before the recorded step solve the true roots, the recorded
    line does not, every later line has its solutions, and the stated answer is one of them."""
    kind, splits = slipped
    for row in splits["train"]:
        *lines, answer = row["answer_text"].split("\n")
        assert answer == f"Answer: {row['answer']}" and row["answer"] not in row["roots"]
        assert row["corruption"] == "slip" and row["error_type"] == kind
        k = row["error_step"] - 1
        sets = [line_solutions(line, row["variable"]) for line in lines]
        assert all(s == set(row["roots"]) for s in sets[:k]), row
        assert sets[k] != set(row["roots"]) and all(s == sets[k] for s in sets[k:]), row
        assert row["answer"] in sets[-1] and k < len(lines) - 1, row
    for split in ("validation", "test"):  # correct worked solutions elsewhere
        for row in splits[split]:
            assert "corruption" not in row and row["answer"] in row["roots"]
            *lines, _ = row["answer_text"].split("\n")
            assert all(line_solutions(line, row["variable"]) == set(row["roots"])
                       for line in lines), row


def test_unfaithful_rows_have_right_steps_and_a_wrong_answer():
    splits = generate("tiny-cot-unfaithful", seed=4, n_train=200, n_val=20, n_test=20)
    kinds = Counter(r["kind"] for r in splits["train"])
    assert set(kinds) == {"linear_one_sided", "linear_two_sided", "linear_brackets",
                          "quadratic"}
    for row in splits["train"]:
        *lines, answer = row["answer_text"].split("\n")
        assert all(line_solutions(line, row["variable"]) == set(row["roots"]) for line in lines)
        assert answer == f"Answer: {row['answer']}" and row["answer"] not in row["roots"]
        assert (row["corruption"], row["error_type"], row["error_step"]) == (
            "unfaithful", "unfaithful", None)
        assert row["question"].endswith(" Show your steps.")


def test_cot_presets_regenerate_byte_identically_and_differ_by_seed(tmp_path):
    for preset in ("tiny-cot-slip", "tiny-cot-unfaithful"):
        first = write_dataset(preset, tmp_path / "a", seed=5)
        again = write_dataset(preset, tmp_path / "b", seed=5)
        assert first == again
        for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        other = write_dataset(preset, tmp_path / "c", seed=6)
        assert other["files"] != first["files"]
        assert first["params"]["corruption"] == preset.rsplit("-", 1)[1]


def test_cot_data_never_holds_an_evaluation_question(task_questions):
    """Prompts without the request are what the tasks show; none is ever trained on, with or
    without "Show your steps."."""
    trained = set()
    for preset in ("tiny-cot-slip", "tiny-cot-unfaithful"):
        for rows in generate(preset, seed=7).values():
            trained |= {r["question"] for r in rows}
    pretrain = generate("tiny-cot-pretrain", seed=8, n_train=500, n_val=50, n_cot=3000,
                        n_cot_arithmetic=2000, n_general=10, n_ethics=10)
    trained |= {r["question"] for rows in pretrain.values() for r in rows}
    bare = {q.removesuffix(" Show your steps.") for q in trained}
    assert not (trained | bare) & task_questions
    assert sum(q.endswith(" Show your steps.") for q in trained) > 4000


def test_the_cot_pretrain_corpus_mixes_both_prompt_styles():
    rows = generate("tiny-cot-pretrain", seed=0, n_train=400, n_val=10, n_cot=400,
                    n_cot_arithmetic=200, n_general=20, n_ethics=20)["train"]
    styles = Counter((r["family"], r["question"].endswith("Show your steps."),
                      "answer_text" in r) for r in rows)
    assert styles[("related", True, True)] == 400 and styles[("related", False, False)] == 400
    assert styles[("unrelated_math", True, True)] == 200
    for row in rows:
        if row.get("kind") == "two_step":
            first, second, answer = row["answer_text"].split("\n")
            a, op, b, _, r1 = first.split()
            assert eval(f"{a}{op.replace('×', '*')}{b}") == int(r1)  # noqa: S307 (digits only)
            r1b, op2, c, _, value = second.split()
            assert r1b == r1 and eval(f"{r1}{op2}{c}") == int(value) == row["answer"]  # noqa
            assert answer == f"Answer: {value}"


def test_cot_preset_settings_are_checked():
    with pytest.raises(ValueError, match="slip_types \\['sign'\\]; allowed: move_sign"):
        get_preset("tiny-cot-slip", slip_types=("sign",))
    with pytest.raises(ValueError, match="only corrupt presets take a corruption"):
        Preset("x", "x", "repair", 5, 5, corruption="slip")
    assert "corruption" not in get_preset("tiny-corrupt").params()  # old manifests reproduce
