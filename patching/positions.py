"""Which positions a patch replaces: `newest`, `all`, `prompt[i:j]` or `steps[a:b]`.

Every form is defined by the naive reference's question, "at generation step k (the pass that
chooses new token k, 0-based), whose activations does the receiver take at position p?":

- `newest`: at the newest position only (the prompt's last token at step 0), at every step;
  earlier positions keep the receiver's own activations (the study's scheme).
- `steps[a:b]`: as `newest`, but only in steps a..b-1; the other steps are not patched.
- `all`: at every position, prompt included, at every step.
- `prompt[i:j]`: at the prompt positions `range(prompt_length)[i:j]` (a Python slice over the
  row's real tokens, negative from its end), at every step; generated positions are not.

`newest` and `steps` rows attend to the receiver's own keys and values of earlier positions;
`all` and `prompt` rows keep the ones they computed under the patch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import PatchingError

Kind = Literal["newest", "all", "prompt", "steps"]
KINDS: tuple[str, ...] = ("newest", "all", "prompt", "steps")
FORMS = "newest, all, prompt[i:j] or steps[a:b]"
_WINDOW = re.compile(r"^(prompt|steps)\[\s*(-?\d+)?\s*:\s*(-?\d+)?\s*\]$")


@dataclass(frozen=True)
class Positions:
    """A positions rule (module docstring); `start`/`stop` bound `prompt` and `steps`."""

    kind: Kind = "newest"
    start: int | None = None
    stop: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PatchingError(f"unknown positions {self.kind!r}; allowed: {FORMS}")
        for name in ("start", "stop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise PatchingError(f"positions {name} must be an int or None, got {value!r}")
        if self.kind in ("newest", "all"):
            if (self.start, self.stop) != (None, None):
                raise PatchingError(f"positions {self.kind!r} takes no window")
            return
        lo, hi = self.start, self.stop
        if self.kind == "steps":
            if (lo is not None and lo < 0) or (hi is not None and hi < 0):
                raise PatchingError(f"{self}: steps count from 0 (the first new token); "
                                    "negative steps are not allowed")
            if hi is not None and hi <= (lo or 0):
                raise PatchingError(f"{self}: an empty or reversed window; use steps[a:b] "
                                    "with a < b")
        elif lo is not None and hi is not None and (lo < 0) == (hi < 0) and hi <= lo:
            raise PatchingError(f"{self}: an empty or reversed window; use prompt[i:j] with "
                                "i < j")

    @classmethod
    def parse(cls, text: str | Positions) -> Positions:
        """`newest`, `all`, `prompt[i:j]`, `steps[a:b]` (either bound may be left out)."""
        if isinstance(text, Positions):
            return text
        if not isinstance(text, str):
            raise PatchingError(f"positions must be text such as {FORMS}, got {text!r}")
        stripped = text.strip()
        if stripped in ("newest", "all"):
            return cls(stripped)  # type: ignore[arg-type]
        match = _WINDOW.match(stripped)
        if match is None:
            raise PatchingError(f"unknown positions {text!r}; allowed: {FORMS}")
        kind, lo, hi = match.groups()
        return cls(kind, None if lo is None else int(lo), None if hi is None else int(hi))

    def __str__(self) -> str:
        if self.kind in ("newest", "all"):
            return self.kind
        lo = "" if self.start is None else str(self.start)
        hi = "" if self.stop is None else str(self.stop)
        return f"{self.kind}[{lo}:{hi}]"

    @property
    def own_history(self) -> bool:
        """Rows keep the keys and values computed under the patch (`all`, `prompt`), rather
        than the receiver's own ones of earlier positions (`newest`, `steps`)."""
        return self.kind in ("all", "prompt")

    def prompt_positions(self, length: int) -> range:
        """The prompt positions patched in a row of `length` real prompt tokens."""
        if self.kind == "all":
            return range(length)
        if self.kind == "prompt":
            return range(length)[self.start:self.stop]
        return range(0)

    def at_step(self, step: int) -> bool:
        """Whether the newest position is patched in the pass that chooses new token `step`
        (for `prompt`, that also depends on the row: see `prompt_positions`)."""
        if self.kind in ("newest", "all"):
            return True
        if self.kind == "steps":
            return (self.start or 0) <= step and (self.stop is None or step < self.stop)
        return False

    def check_prompt(self, lengths: list[int], what: str = "prompt") -> None:
        """A `prompt[i:j]` window must select a position of every row."""
        if self.kind != "prompt":
            return
        for row, length in enumerate(lengths):
            if not self.prompt_positions(length):
                raise PatchingError(
                    f"positions {self} select no position of row {row}, whose {what} has "
                    f"{length} tokens"
                )


NEWEST = Positions("newest")
ALL = Positions("all")
