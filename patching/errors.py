"""The one error type of bad patching input (every module raises it, the CLIs print it)."""

from formats.errors import InputError


class PatchingError(InputError):
    """Bad patching input; the message is one line naming the value and what is allowed."""
