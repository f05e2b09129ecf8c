"""Placeholder for the ``patched_qwen`` lm-eval model until the patching issue (#5) lands.

It exists so that ``--model patched_qwen`` resolves (the start-up hook registers it) and fails
with one clear line instead of a misleading "unknown model" error.
"""

from __future__ import annotations

from typing import Any, NoReturn

from lm_eval.api.model import LM

NOT_BUILT = "patched_qwen is not built yet (issue #5)"


class PatchedQwenLM(LM):
    """Cross-model activation patching model; refuses construction until it is implemented."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        """Raise before ``LM``'s abstract-method check would give a less useful message."""
        raise NotImplementedError(NOT_BUILT)
