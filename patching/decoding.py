"""How patched generation decodes: one frozen, validated config for the engine and its users.

The engine (`sweep_generate`, `patched_generate`), the naive reference, the sweep runner's
shared generation and the lm-eval model all take a `DecodingConfig`, so a new option is one
field here. (It is not transformers' `GenerationConfig`: it holds what CMAP generation needs,
and `resolved` reads the receiver's own generation config for what is left unset, as
`generate` does.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import PatchingError


def _flag(name: str, value: Any) -> bool:
    """A boolean, or the text lm-eval and YAML users write for one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PatchingError(f"{name}={value!r} is not a boolean; use true or false")


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PatchingError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PatchingError(f"{name} must be a number, got {value!r}")
    return float(value)


def _token_ids(name: str, value: Any) -> tuple[int, ...]:
    ids = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(ids, (list, tuple)):
        raise PatchingError(f"{name} must be a token id or a list of them, got {value!r}")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise PatchingError(f"{name} must hold non-negative token ids, got {i!r} in {value!r}")
    return tuple(ids)


@dataclass(frozen=True)
class DecodingConfig:
    """Decoding settings of one patched generation call (frozen: hashable, safe to share)."""

    max_new_tokens: int = field(default=64, metadata={"help": "tokens generated at most"})
    eos_token_id: int | tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "ids that end a row; None: the receiver's generation config (as "
                          "`generate` does); (): never stop"},
    )
    pad_token_id: int | None = field(
        default=None,
        metadata={"help": "id written after a row's end; None: the receiver's generation "
                          "config, else the first eos id, else 0"},
    )
    do_sample: bool = field(default=False, metadata={"help": "sample; False: greedy argmax"})
    temperature: float = field(default=1.0, metadata={"help": "logits are divided by it; > 0"})
    top_p: float = field(
        default=1.0, metadata={"help": "keep the smallest set of likeliest tokens whose "
                                       "probability reaches top_p; in (0, 1]"},
    )
    top_k: int | None = field(
        default=None, metadata={"help": "keep the top_k likeliest tokens; None: all"}
    )
    seed: int = field(
        default=0, metadata={"help": "a row's random stream is a function of (seed, its prompt's "
                                     "tokens, its sample number): see sampling.py"},
    )
    num_return_sequences: int = field(
        default=1, metadata={"help": "samples per prompt, returned prompt-major as transformers "
                                     "does"},
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "max_new_tokens", _int("max_new_tokens", self.max_new_tokens, 0))
        if self.eos_token_id is not None:
            set_(self, "eos_token_id", _token_ids("eos_token_id", self.eos_token_id))
        if self.pad_token_id is not None:
            set_(self, "pad_token_id", _int("pad_token_id", self.pad_token_id, 0))
        set_(self, "do_sample", _flag("do_sample", self.do_sample))
        set_(self, "temperature", _number("temperature", self.temperature))
        set_(self, "top_p", _number("top_p", self.top_p))
        if self.top_k is not None:
            set_(self, "top_k", _int("top_k", self.top_k, 1))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise PatchingError(f"seed must be an int, got {self.seed!r}")
        set_(self, "num_return_sequences",
             _int("num_return_sequences", self.num_return_sequences, 1))
        if self.do_sample and not self.temperature > 0:
            raise PatchingError(
                f"temperature must be > 0 when sampling, got {self.temperature!r} (for greedy "
                "decoding set do_sample=false)"
            )
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise PatchingError(f"temperature must be a finite number >= 0, got "
                                f"{self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise PatchingError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @classmethod
    def build(cls, generation: DecodingConfig | None = None, **options: Any) -> DecodingConfig:
        """`generation` with `options` (its field names) overriding; unknown names are one line.

        This is how the keyword arguments of `patched_generate` and friends build the config.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise PatchingError(
                f"unknown decoding option(s) {unknown}; allowed: {', '.join(sorted(names))}"
            )
        if generation is not None and not isinstance(generation, DecodingConfig):
            raise PatchingError(
                f"generation must be a DecodingConfig, got a {type(generation).__name__}"
            )
        return replace(generation or cls(), **options) if options else generation or cls()

    def resolved(self, config: Any, generation_config: Any = None) -> DecodingConfig:
        """Fill eos and pad from the receiver's generation config (then its model config), as
        `generate` does, and check every id against the vocabulary."""
        eos, pad = self.eos_token_id, self.pad_token_id
        for source in (generation_config, config):
            if eos is None:
                eos = getattr(source, "eos_token_id", None)
            if pad is None:
                pad = getattr(source, "pad_token_id", None)
        eos = () if eos is None else _token_ids("eos_token_id", eos)
        pad = pad if pad is not None else (eos[0] if eos else 0)
        vocab = config.vocab_size
        for name, ids in (("eos_token_id", eos), ("pad_token_id", (pad,))):
            for i in ids:
                if not 0 <= i < vocab:
                    raise PatchingError(
                        f"{name} {i!r} is not a token id of a {vocab}-token vocabulary "
                        f"(0..{vocab - 1})"
                    )
        return replace(self, eos_token_id=eos, pad_token_id=pad)

