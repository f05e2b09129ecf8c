"""The one error type of bad patching input (every module raises it, the CLIs print it)."""


class PatchingError(ValueError):
    """Bad patching input; the message is one line naming the value and what is allowed."""
