"""What ``patched_hf`` patches in: the donor model (the study's), zero, a dataset mean, or the
same question set another way, optionally blended; and the spec file that holds donors that
need data.

    # spec.yaml, for --model_args ...,spec_file=spec.yaml
    spec: "resid:L3 + mlp:L5@all"
    donor:
      kind: mean           # model (default) | zero | mean | prompt
      data: tasks/data/corrupt_related.jsonl   # mean: whose `question`s are averaged over
      limit: 64            # mean: the first N rows
      model: donor         # mean, prompt: which model runs, donor (default) or receiver
      alpha: 1.0           # receiver + alpha * (donor - receiver)
      cache_dir: null      # mean: where it is cached (default ~/.cache/corrupt-cmap/means)

``kind: prompt`` reads ``data`` rows ``{"question": ..., "donor_question": ...}``: a request
whose prompt holds a ``question`` runs the chosen model on the same prompt with that text
replaced by its ``donor_question`` (classic activation patching on a clean/corrupted prompt
pair).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from formats.config import build_nested, load_dataclass
from patching import Blend, OtherPrompt, PatchingError, PatchSpec, Zero
from patching.means import mean_activations

KINDS = ("model", "zero", "mean", "prompt")
MODELS = ("donor", "receiver")
MEANS_CACHE = Path.home() / ".cache" / "corrupt-cmap" / "means"


@dataclass(frozen=True)
class DonorChoice:
    """Where ``patched_hf``'s patched values come from (module docstring)."""

    kind: str = field(default="model", metadata={"help": "model | zero | mean | prompt"})
    alpha: float = field(default=1.0, metadata={"help": "receiver + alpha * (donor - receiver)"})
    data: str | None = field(default=None, metadata={"help": "mean, prompt: a JSONL file"})
    limit: int | None = field(default=None, metadata={"help": "mean: the first N rows"})
    model: str = field(default="donor", metadata={"help": "mean, prompt: donor | receiver"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "mean: where it is cached (default ~/.cache/corrupt-cmap"
                                        "/means)"})

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PatchingError(f"donor kind {self.kind!r} is unknown; allowed: {', '.join(KINDS)}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(self.alpha):
            raise PatchingError(f"alpha={self.alpha!r} must be a finite number")
        if self.model not in MODELS:
            raise PatchingError(f"donor model {self.model!r} is unknown; allowed: "
                                f"{', '.join(MODELS)}")
        needs_data = self.kind in ("mean", "prompt")
        if needs_data and not self.data:
            raise PatchingError(f"donor kind {self.kind!r} needs data: a JSONL file")
        if not needs_data and self.data is not None:
            raise PatchingError(f"data= is only for donor kinds mean and prompt, not {self.kind!r}")
        if needs_data and not Path(self.data).is_file():
            raise PatchingError(f"donor data {self.data!r} does not exist")
        if self.limit is not None and (type(self.limit) is not int or self.limit < 1):
            raise PatchingError(f"limit={self.limit!r} must be an int >= 1")


@dataclass(frozen=True)
class SpecFile:
    """A spec and its donor, read from YAML (``spec_file=``)."""

    spec: str
    donor: DonorChoice = field(default_factory=DonorChoice)

    def __post_init__(self) -> None:
        build_nested(self, PatchingError)  # donor: a mapping from YAML -> DonorChoice
        PatchSpec.parse(self.spec)

    @classmethod
    def load(cls, path: str | Path) -> SpecFile:
        return load_dataclass(cls, path, error=PatchingError)


class DonorBuilder:
    """Builds the engine's donor argument for each batch of requests."""

    def __init__(self, choice: DonorChoice, receiver: Any, donor: Any, tokenizer: Any,
                 prompt_of: Any) -> None:
        """`prompt_of(question) -> text`: how a question becomes a prompt (the chat template)."""
        self.choice, self.tokenizer = choice, tokenizer
        self.model = donor if choice.model == "donor" else receiver
        self.base: Any = self.model
        self.pairs: dict[str, str] = {}
        if choice.kind == "zero":
            self.base = Zero()
        elif choice.kind == "mean":
            rows = _rows(choice.data)[: choice.limit]
            texts = [prompt_of(_question(row, choice.data)) for row in rows]
            ids, mask = left_padded([tokenizer.encode(t) for t in texts],
                                    tokenizer.pad_token_id or 0)
            self.base = mean_activations(self.model, ids, mask,
                                         cache_dir=choice.cache_dir or MEANS_CACHE)
        elif choice.kind == "prompt":
            for row in _rows(choice.data):
                question = _question(row, choice.data)
                other = row.get("donor_question")
                if not isinstance(other, str) or not other:
                    raise PatchingError(f"{choice.data}: a row without donor_question "
                                        f"(question {question!r})")
                self.pairs[question] = other

    @property
    def reads_prompts(self) -> bool:
        """Whether `donor` needs the batch's prompts (`kind: prompt`)."""
        return self.choice.kind == "prompt"

    def donor(self, ids: Tensor | None = None, mask: Tensor | None = None) -> Any:
        """The donor argument for one left-padded batch of request ids (the prompts: only
        `reads_prompts` needs them)."""
        base = self.base
        if self.choice.kind == "prompt":
            base = OtherPrompt(self.model, *self._other_prompts(ids, mask))
        return base if self.choice.alpha == 1.0 else Blend(base, float(self.choice.alpha))

    def _other_prompts(self, ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        texts = []
        keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        for row, real in zip(ids, keep, strict=True):
            text = self.tokenizer.decode(row[real].tolist(), skip_special_tokens=False)
            found = [q for q in self.pairs if q in text]
            if not found:
                raise PatchingError(f"no question of {self.choice.data} is in the prompt "
                                    f"{text[:80]!r}...; add a row for it")
            question = max(found, key=len)
            texts.append(text.replace(question, self.pairs[question], 1))
        rows = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        out, out_mask = left_padded(rows, self.tokenizer.pad_token_id or 0)
        return out.to(ids.device), out_mask.to(ids.device)


def _rows(path: str) -> list[dict[str, Any]]:
    """A JSONL file's objects (any fields: users' own files); a bad line is one error line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PatchingError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise PatchingError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    if not rows:
        raise PatchingError(f"{path}: no rows")
    return rows


def _question(row: dict[str, Any], path: str | None) -> str:
    question = row.get("question")
    if not isinstance(question, str) or not question:
        raise PatchingError(f"{path}: a row without a question: {str(row)[:80]}")
    return question


def left_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Token rows as one left-padded batch (the engine's layout) and its attention mask."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask
