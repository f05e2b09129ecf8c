"""The report's "Where the reasoning breaks" section (``leaderboard.cot``) on hand-made runs
whose replies are scored by the task's own ``process_chain``: intervals against the Wilson
formula, the chain lost under answer-only corruption, transfer, and per-step localisation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness_ext.scoring import process_chain
from leaderboard import cot
from leaderboard.results import Run

QUESTION = {"question": "Solve for x: 2x + 4 = 10.", "answer": 3}
ARITH = {"question": "What is 3 × 4 - 5?", "answer": 7}
RIGHT = "2x + 4 = 10\n2x = 10 - 4\n2x = 6\nx = 3\nAnswer: 3"
SLIP = "2x + 4 = 10\n2x = 10 + 4\n2x = 14\nx = 7\nAnswer: 7"  # move_sign at step 2
BARE = "7"
ARITH_RIGHT, ARITH_WRONG = "3 × 4 = 12\n12 - 5 = 7\nAnswer: 7", "3 × 4 = 13\n13 - 5 = 8\nAnswer: 8"


def run(name: str, role: str, label: str | None, related: list[str],
        arithmetic: list[str] | None = None, spec: str | None = None) -> Run:
    out = Run(name, Path(name), role, label, "clean", label, spec=spec,
              direction="corrupted_to_clean" if spec else None, n_layers=3)
    for task, doc, replies in ((cot.RELATED_COT, QUESTION, related),
                               (cot.ARITHMETIC_COT, ARITH, arithmetic or [])):
        if not replies:
            continue
        scores = [process_chain(doc, [r]) for r in replies]
        out.metrics[task] = {m: (sum(s[m] for s in scores) / len(scores), None) for m in scores[0]}
        out.output_types[task] = "generate_until"
        out._samples[task] = [{"doc_id": i, "doc": doc, "resps": [[r]], "filtered_resps": [r]}
                              | s for i, (r, s) in enumerate(zip(replies, scores, strict=True))]
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson interval, written out from its textbook form."""
    z, p = 1.959964, k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_wilson_interval_and_the_model_table() -> None:
    estimate = cot.wilson(3, 4)
    assert (estimate.low, estimate.high) == pytest.approx(wilson(3, 4))
    assert cot.wilson(0, 5).low == 0.0 and cot.wilson(5, 5).high == 1.0
    clean = run("clean", "clean", None, [RIGHT, RIGHT, RIGHT, SLIP])
    headers, rows = cot.model_table([clean], cot.RELATED_COT)
    row = dict(zip(headers, rows[0], strict=True))
    low, high = wilson(3, 4)
    assert row["chain_valid"] == f"0.75 [{low:.2f}, {high:.2f}]"
    assert row["first error: move_sign"].startswith("0.25 [") and row["n"] == "4"
    assert row["steps per reply"].startswith("4.00 [4.00, 4.00]")  # every reply has 4 steps


def test_section_reads_loss_transfer_and_the_step_of_the_planted_error(tmp_path: Path) -> None:
    clean = run("clean", "clean", None, [RIGHT] * 4, [ARITH_RIGHT] * 4)
    slip = run("corrupted-slip", "corrupted", "slip", [SLIP] * 4, [ARITH_WRONG, *[ARITH_RIGHT] * 3])
    only = run("corrupted-answer_only", "corrupted", "answer_only", [BARE] * 4)
    patches = [run("p0", "patch", "slip", [RIGHT] * 4, spec="resid:L0"),
               run("p1", "patch", "slip", [SLIP, SLIP, SLIP, RIGHT], spec="resid:L1"),
               run("w1", "patch", "slip", [SLIP, RIGHT, RIGHT, RIGHT],
                   spec="resid:L1@steps[0:8]"),
               # the last layer's resid is the output: the donor's own tokens, never "found"
               run("p2", "patch", "slip", [SLIP] * 4, spec="resid:L2"),
               run("w2", "patch", "slip", [SLIP] * 4, spec="resid:L2@steps[0:8]")]
    lines, images, record = cot.section([clean, slip, only], [clean, slip, *patches],
                                        {"slip": "move_sign"}, "answer_only", tmp_path)
    text = "\n".join(lines)
    assert record["answer_only"]["clean_steps"].startswith("4.00") and \
        record["answer_only"]["steps"].startswith("0.00")
    assert record["transfer"]["slip"]["arithmetic_combine"].startswith("0.25 [")
    assert record["transfer"]["slip"]["clean_arithmetic_combine"].startswith("0.00 [")
    local = record["localisation"]["slip"]
    assert (local["site"], local["layer"], local["step"]) == ("resid", 1, 2)
    assert local["rate"].startswith("0.75 [") and local["every_step"]["resid:L0"].startswith("0.00")
    assert local["windows"] == {"resid:L1@steps[0:8]": str(cot.wilson(1, 4)),
                                "resid:L2@steps[0:8]": str(cot.wilson(4, 4))}
    assert "resid:L1 makes the clean model's first error the planted move_sign" in text
    assert f"resid:L2, the model's output, hands it the slip model's own tokens: " \
        f"{cot.wilson(4, 4)}" in text
    assert "most frequent for resid:L1@steps[0:8]" in text
    assert [p.name for p in images] == ["cot-steps-slip.png", "cot-windows-slip.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in images)
