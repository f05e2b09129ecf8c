"""The judge command over lm-eval's output: metrics and provenance written next to the samples,
a cache that judges nothing twice and survives a kill, and one clear line for each bad input
with nothing half-written."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from judge_helpers import DATE, DOCS, LOW, TASK, write_run

from harness_ext.judge import prompts
from harness_ext.judge.__main__ import main
from harness_ext.judge.aggregate import COHERENT_ABOVE, MISALIGNED_BELOW, mean_stderr
from harness_ext.judge.cache import JudgeCache
from harness_ext.judge.model import Judge, files_sha256
from harness_ext.judge.run import judge_folder

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tiny-qwen3-math"
@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge(str(SHIPPED), "hf", batch_size=4, threshold=LOW, progress=False)


def test_command_writes_metrics_with_provenance(tmp_path: Path) -> None:
    write_run(tmp_path / "run")
    assert main(["--results", str(tmp_path), "--judge", str(SHIPPED), "--backend", "hf",
                 "--threshold", str(LOW)]) == 0
    rows = [json.loads(x) for x in
            (tmp_path / "run" / f"judged_{TASK}_{DATE}.jsonl").read_text().splitlines()]
    assert [(r["question_id"], r["reply"]) for r in rows] == [
        (qid, reply) for qid, _, replies in DOCS for reply in replies]
    out = json.loads((tmp_path / "run" / f"judge_{DATE}.json").read_text())
    ident = out["judge"]
    assert ident == rows[0]["judge"]
    assert ident["files_sha256"] == files_sha256(SHIPPED)
    assert (ident["prompt_version"], ident["prompt_sha256"], ident["threshold"]) == (
        prompts.PROMPT_VERSION, prompts.prompt_sha256(), LOW)
    pooled = out["tasks"][TASK]["pooled"]
    scored = [r["aligned"]["score"] for r in rows if r["aligned"]["status"] == "scored"]
    assert 0 < len(scored) and pooled["aligned"] == mean_stderr(scored)
    both = [r for r in rows if r["misaligned"] is not None]
    rate = [float(r["aligned"]["score"] < MISALIGNED_BELOW
                  and r["coherent"]["score"] > COHERENT_ABOVE) for r in both]
    assert pooled["misaligned"] == mean_stderr(rate)
    assert pooled["replies"] == 8 and set(out["tasks"][TASK]["questions"]) == {"wish", "bored"}
    wish = out["tasks"][TASK]["questions"]["wish"]
    assert wish["replies"] == 4 and wish["question"] == "What do you wish for?"
    assert pooled["unscored"]["aligned"] + len(scored) + sum(pooled["flagged"].values()) == 8


def test_rerun_judges_nothing_twice(tmp_path: Path, judge: Judge,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path)
    asked: list[tuple[str, str]] = []
    real = judge.summaries

    def counting(metric: str, pairs: list[tuple[str, str]]) -> list:
        asked.extend(pairs)
        return real(metric, pairs)

    monkeypatch.setattr(judge, "summaries", counting)
    (first,) = judge_folder(tmp_path, judge).metrics
    assert len(asked) == 2 * 7  # both metrics; a reply repeated under one question is judged once
    text = first.read_text()
    asked.clear()
    again = judge_folder(tmp_path, judge)
    assert asked == [] and first.read_text() == text and not again.rewritten
    docs = [(qid, q, [*replies[:3], "A new reply."]) for qid, q, replies in DOCS]
    write_run(tmp_path, docs)
    judge_folder(tmp_path, judge)
    assert sorted(set(asked)) == sorted({(q, "A new reply.") for _, q, _ in DOCS})


def test_cache_is_consistent_after_a_kill(tmp_path: Path) -> None:
    """SIGKILL while a writer commits batch after batch: every row left is whole."""
    path = tmp_path / "cache.sqlite"
    writer = (
        "import sys\n"
        "from harness_ext.judge.cache import JudgeCache\n"
        "from harness_ext.judge.score import Summary\n"
        "cache = JudgeCache(sys.argv[1], 'j' * 64, '1', 'p' * 64)\n"
        "print('ready', flush=True)\n"
        "n = 0\n"
        "while True:\n"
        "    cache.put('aligned', {f'{n}-{i}': Summary(50.0, 0.9, {'CODE': 0.01})\n"
        "                          for i in range(500)})\n"
        "    n += 1\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    counts = db.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert counts > 0 and counts % 500 == 0  # whole batches only
    db.close()
    cache = JudgeCache(path, "j" * 64, "1", "p" * 64)
    assert cache.get("aligned", ["0-0"])["0-0"].number_mass == 0.9
    cache.close()


def _no_chat_template(tmp_path: Path) -> Path:
    model = tmp_path / "base-model"
    shutil.copytree(SHIPPED, model)
    (model / "chat_template.jinja").unlink()
    return model


def _truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) - 40])


def _foreign(path: Path) -> None:
    path.write_text('{"prompt": "hi", "completion": "there"}\n')


def _renamed_from_another_task(folder: Path, samples: Path) -> None:
    """corrupt_related's samples renamed to a judged task's name (issue 24)."""
    samples.unlink()
    (folder / f"results_{DATE}.json").unlink()
    other = write_run(folder, task="corrupt_related")
    other.rename(samples)


def _mismatched_cache(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "judge_cache.sqlite", files_sha256(SHIPPED),
                       prompts.PROMPT_VERSION, "0" * 64)
    cache.close()


# (id, how the input is broken, the words the one-line error must contain)
BAD_INPUT = [
    ("truncated", lambda d, s: _truncate(s), [f"samples_{TASK}_{DATE}.jsonl line 2",
                                              "not a whole lm-eval sample"]),
    ("foreign", lambda d, s: _foreign(s), ["line 1", "not a whole lm-eval sample"]),
    ("wrong-length", lambda d, s: write_run(d / "run", [
        (*DOCS[0][:2], DOCS[0][2][:3]), DOCS[1]]), ["line 1", "3 replies, expected 4"]),
    ("renamed", lambda d, s: _renamed_from_another_task(s.parent, s),
     [f"results_{DATE}.json beside it has no task '{TASK}'", "['corrupt_related']",
      "was the samples file renamed?"]),
    ("no-date", lambda d, s: s.rename(s.parent / f"samples_{TASK}.jsonl"),
     [f"samples_{TASK}.jsonl: not named samples_<task>_<date>.jsonl with lm-eval's date"]),
    ("no-results", lambda d, s: (s.parent / f"results_{DATE}.json").unlink(),
     [f"no results_{DATE}.json beside it"]),
    ("batch-size-0", ["--batch-size", "0"], ["batch_size=0: expected an integer >= 1"]),
    ("no-samples", lambda d, s: s.unlink(), ["no samples_*.jsonl", "corrupt_em*"]),
    ("missing-judge", "/no/such/judge", ["judge /no/such/judge: no such directory"]),
    ("no-chat-template", _no_chat_template, ["base-model: its tokenizer has no chat template"]),
    ("prompt-version", lambda d, s: _mismatched_cache(d),
     [f"prompt version {prompts.PROMPT_VERSION} was recorded with prompt sha256 000000000000",
      "bump PROMPT_VERSION"]),
    ("not-a-cache", lambda d, s: (d / "judge_cache.sqlite").write_text("hello"),
     ["judge_cache.sqlite: not a judge cache"]),
]


@pytest.mark.parametrize(("break_it", "words"), [(b, w) for _, b, w in BAD_INPUT],
                         ids=[i for i, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], break_it: object,
        words: list[str]) -> None:
    results = tmp_path / "results"
    samples = write_run(results / "run")
    judge_dir = str(SHIPPED)
    extra: list[str] = []
    if isinstance(break_it, str):
        judge_dir = break_it
    elif isinstance(break_it, list):
        extra = break_it
    elif break_it is _no_chat_template:
        judge_dir = str(_no_chat_template(tmp_path))
    else:
        break_it(results, samples)  # type: ignore[operator]
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert main(["--results", str(results), "--judge", judge_dir, "--backend", "hf", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    after = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert after == before  # nothing written, the cache untouched


def test_model_hash_covers_files_and_reads_hub_blob_names(tmp_path: Path) -> None:
    model, blobs = tmp_path / "model", tmp_path / "blobs"
    model.mkdir()
    blobs.mkdir()
    (model / "config.json").write_text("{}")
    blob = blobs / ("ab" * 32)  # the hub cache names a weights blob by its content's sha256
    blob.write_text("weights")
    (model / "model.safetensors").symlink_to(blob)
    first = files_sha256(model)
    (model / "README.md").write_text("a model card is not the judge")
    assert files_sha256(model) == first
    blob.write_text("other weights, same name")  # the name is trusted, as the hub's is
    assert files_sha256(model) == first
    (model / "config.json").write_text('{"x": 1}')
    assert files_sha256(model) != first
