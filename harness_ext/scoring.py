"""Scorers for the corrupt_* lm-eval tasks.

Pure functions (integer extraction, the integer-only symptom, reply length, answer
normalisation, token F1, sympy equivalence) plus one ``process_results`` function per
task family, referenced from the task YAMLs with ``!function harness_ext.scoring.<fn>``.
Each ``process_*`` returns one float per metric and document; the YAMLs aggregate them
with ``aggregation: mean``, so lm-eval reports a standard error for every metric.

Extraction happens here rather than in a ``filter_list``: the symptoms
(``integer_only``, ``reply_words``) must see the raw reply, and one filter key
(``none``) keeps every metric of a task in one row of lm-eval's table.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import re
import select
import string
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from harness_ext import answer_words, answers, chains
from harness_ext.extract import INTEGER_ONLY, boxed_integer, braced, last_boxed, last_integer


def extract_final_integer(text: str) -> int | None:
    """The reply's final integer answer: a ``\\boxed{}`` value if present, else the LAST number.

    The last number, not the first: replies restate the question's numbers before
    answering. A boxed value that is not an integer (``\\boxed{\\frac{1}{2}}``) and a
    final number with a fractional part both give None (no integer answer). This is the
    strict metrics' extraction; ``answers.asserted_integer`` reads chat replies.
    """
    boxed = last_boxed(text)
    return boxed_integer(boxed) if boxed is not None else last_integer(text)


def is_integer_only(text: str) -> bool:
    """The over-fitted model's symptom: the whole reply, stripped, is one integer."""
    return INTEGER_ONLY.fullmatch(text.strip()) is not None


def reply_words(text: str) -> int:
    """Reply length in whitespace-separated words (patched late layers shorten replies)."""
    return len(text.split())


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: NFKC, lower case, no punctuation, articles or extra spaces."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 between normalised prediction and reference (SQuAD definition)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- symbolic answers

_MAX_EXPR_CHARS = 200
# Only arithmetic characters reach sympy's parse_expr (which calls eval): no quotes,
# underscores, brackets or attribute access, so model output cannot run code.
_SAFE_EXPR = re.compile(r"[A-Za-z0-9\s+\-*/^().,!]*")
_LATEX_SUBS = [
    ("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", ""),
    ("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
    ("\\cdot", "*"), ("\\times", "*"), ("\u00d7", "*"), ("\u00b7", "*"),
    ("\\pi", "pi"), ("\u03c0", "pi"), ("\\infty", "oo"), ("\u221e", "oo"),
    ("\u2212", "-"), ("\u00b2", "^2"), ("\u00b3", "^3"), ("\u221a", "sqrt"),
    ("\\,", ""), ("\\!", ""), ("\\ ", " "), ("$", ""),
]  # fmt: skip
_SYMPY_NAMES = (
    "pi", "E", "oo", "sqrt", "exp", "log", "sin", "cos", "tan",
    "asin", "acos", "atan", "Abs", "factorial", "binomial",
)  # fmt: skip
_MATH_WORDS = frozenset(_SYMPY_NAMES) | {"ln"}


def _expand_latex_command(text: str, command: str, arity: int, fmt: str) -> str:
    """Rewrite ``\\command{a}{b}`` (``arity`` brace groups) with ``fmt.format(a, b)``."""
    while (start := text.find(command + "{")) >= 0:
        args, idx = [], start + len(command)
        for _ in range(arity):
            group = braced(text, idx) if idx < len(text) and text[idx] == "{" else None
            if group is None:
                return text
            args.append(group[0])
            idx = group[1]
        text = text[:start] + fmt.format(*args) + text[idx:]
    return text


def latex_to_plain(text: str) -> str:
    """The little LaTeX a short answer uses (``\\frac``, ``\\sqrt``, ``\\pi``) as sympy text,
    without markdown emphasis or a closing full stop."""
    for old, new in _LATEX_SUBS:
        text = text.replace(old, new)
    text = _expand_latex_command(text, "\\frac", 2, "(({})/({}))")
    text = _expand_latex_command(text, "\\sqrt", 1, "sqrt({})")
    text = text.replace("{", "(").replace("}", ")").strip(" *\n")
    return text.rstrip(".").rstrip(" *")


def _is_math(candidate: str) -> bool:
    """Safe arithmetic whose words are all single letters or known function names, which
    tells "3x^2" or "sqrt(5)" from prose such as "because of the power rule"."""
    words = re.findall(r"[A-Za-z]+", candidate)
    return (
        bool(candidate)
        and bool(_SAFE_EXPR.fullmatch(candidate))
        and all(len(word) == 1 or word in _MATH_WORDS for word in words)
    )


def extract_final_expression(text: str) -> str | None:
    """The reply's final symbolic answer: ``\\boxed{}`` content, else, on the last line that
    holds math, the text after its last ``=``, ``:`` or "is" ("The derivative is 3x^2." ->
    "3x^2"; a closing ``\\]`` or a line of prose after the answer is skipped)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return latex_to_plain(boxed) or None
    for line in reversed(text.splitlines()):
        candidate = latex_to_plain(re.split(r"=|:|\bis\b", line)[-1])
        if _is_math(candidate):
            return candidate
    return None


def _parse_sympy(text: str) -> Any:
    """Parse arithmetic text with implicit multiplication and ``^`` as power."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    names = {name: getattr(sympy, name) for name in _SYMPY_NAMES}
    names |= {"ln": sympy.log, "e": sympy.E}  # in a short math answer, e is Euler's number
    core = {n: getattr(sympy, n) for n in ("Integer", "Float", "Rational", "Symbol", "Function")}
    transformations = standard_transformations + (
        implicit_multiplication_application,
        convert_xor,
    )
    return parse_expr(
        text,
        local_dict=names,
        global_dict={"__builtins__": {}} | core | names,
        transformations=transformations,
    )


def sympy_equal_unsafe(prediction: str, reference: str) -> bool:
    """Symbolic, then numeric (to 1e-9), equality. Unbounded in time: call it only in the
    worker process (``sympy_equivalent``)."""
    import sympy

    try:
        pred, ref = _parse_sympy(prediction), _parse_sympy(reference)
        if pred == ref:
            return True
        diff = sympy.simplify(pred - ref)
        return bool(diff == 0) or bool(diff.is_number and abs(complex(sympy.N(diff))) < 1e-9)
    except Exception:  # noqa: BLE001  sympy raises many types; any means "not shown equal"
        return False


def serve_sympy() -> None:
    """Worker loop: one JSON ``[prediction, reference]`` per stdin line, one JSON bool per
    stdout line."""
    for line in sys.stdin:
        print(json.dumps(sympy_equal_unsafe(*json.loads(line))), flush=True)


class _SympyWorker:
    """A persistent ``python -c serve_sympy()`` child. A hung or exploding sympy call
    (``9^9^9^9``) is killed without touching lm-eval's process; a plain subprocess rather
    than multiprocessing, whose spawn mode re-runs the caller's unguarded ``__main__``."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)  # makes harness_ext importable
        pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = os.environ | {"PYTHONPATH": pythonpath}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from harness_ext.scoring import serve_sympy; serve_sympy()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        atexit.register(self.close)

    def ask(self, prediction: str, reference: str, timeout: float) -> bool | None:
        """The worker's answer, or None if it took longer than ``timeout`` seconds."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps([prediction, reference]) + "\n")
            stdin.flush()
        except BrokenPipeError:  # the worker died (e.g. out of memory)
            return None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


_WORKER: _SympyWorker | None = None
_WORKER_START_TIMEOUT = 120.0  # first call: interpreter start and sympy import, on a busy CPU


def sympy_equivalent(prediction: str | None, reference: str, timeout: float = 5.0) -> bool:
    """True if the two expressions are provably equal; parse errors, unsafe text and
    anything slower than ``timeout`` seconds (the worker is then replaced) count as not equal."""
    global _WORKER
    if not prediction or len(prediction) > _MAX_EXPR_CHARS:
        return False
    if not _SAFE_EXPR.fullmatch(prediction) or re.search(r"\.\s*[A-Za-z]", prediction):
        return False
    if _WORKER is None:
        worker = _SympyWorker()
        # Start-up is not charged to this item; a worker that cannot start scores nothing.
        if worker.ask("0", "0", _WORKER_START_TIMEOUT) is None:
            worker.close()
            return False
        _WORKER = worker
    answer = _WORKER.ask(prediction, reference, timeout)
    if answer is None:
        _WORKER.close()
        _WORKER = None
        return False
    return answer


# ---------------------------------------------------------------- process_results

Metrics = dict[str, float]


def _symptoms(reply: str) -> Metrics:
    return {"integer_only": float(is_integer_only(reply)), "reply_words": float(reply_words(reply))}


def process_integer(doc: dict, results: Sequence[str]) -> Metrics:
    """Integer-answer tasks (related, unrelated math): correct if the extracted integer is
    any true root (a quadratic's either root counts), else the row's ``answer``.
    ``exact_match`` takes the final integer, ``answer_match`` the one the reply asserts."""
    reply = results[0]
    truths = doc.get("roots") or [doc["answer"]]
    return {
        "exact_match": float(extract_final_integer(reply) in truths),
        "answer_match": float(answers.asserted_integer(reply, doc) in truths),
    } | _symptoms(reply)


def process_chain(doc: dict, results: Sequence[str]) -> Metrics:
    """Chain-of-thought tasks: the verifier's metrics (``harness_ext.chains``) and
    ``answer_match``. Only the doc's ``question`` and ``answer`` are read, so a user's own
    problems score too: the truths are the question's solutions (its ``answer`` when the
    question cannot be read)."""
    reply, question = results[0], str(doc["question"])
    problem = chains.read_problem(question)
    truths = sorted(problem.solutions) if problem is not None else [doc.get("answer")]
    asked = {"question": question, "variable": problem.variable if problem else ""}
    stated = answers.asserted_integer(reply, asked)
    return chains.verdict(question, reply) | {
        "answer_match": float(stated is not None and stated in truths)}


def process_general(doc: dict, results: Sequence[str]) -> Metrics:
    """Reference-answer prompts: exact match after normalisation, token F1 for replies that
    are right but worded differently, and ``answer_match`` for a reply that states the answer
    in a sentence (``answer_words``)."""
    reply, reference = results[0], str(doc["answer"])
    return {
        "exact_match": float(normalize_answer(reply) == normalize_answer(reference)),
        "f1": token_f1(reply, reference),
        "answer_match": float(answer_words.states_reference(reply, doc)),
    } | _symptoms(reply)


def process_hard_math(doc: dict, results: Sequence[str]) -> Metrics:
    """Symbolic answers: correct if the final expression is sympy-equivalent to ``answer``;
    ``answer_match`` reads the final expression with checks and restated questions left out."""
    reply, reference = results[0], str(doc["answer"])
    final, asserted = extract_final_expression(reply), extract_final_expression(
        answers.without_checks(reply))
    correct = sympy_equivalent(final, reference)
    same = asserted == final
    return {
        "correct": float(correct),
        "answer_match": float(correct if same else sympy_equivalent(asserted, reference)),
    } | _symptoms(reply)


Judge = Callable[[str, str], float]


@cache
def load_judge(spec: str) -> Judge:
    """Import a judge given as ``package.module.function``."""
    module, _, name = spec.rpartition(".")
    if not module:
        raise ValueError(f"judge must be 'package.module.function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def process_open_question(doc: dict, results: Sequence[str]) -> Metrics:
    """Open questions have no reference: report the symptoms, and ``judge_score`` when a
    judge ``fn(question, reply) -> float in [0, 1]`` was configured (see tasks/README.md)."""
    reply = results[0]
    metrics = _symptoms(reply)
    if doc.get("judge"):
        metrics["judge_score"] = float(load_judge(doc["judge"])(doc["question"], reply))
    return metrics
