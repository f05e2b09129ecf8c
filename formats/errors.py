"""The one base of every bad-input error the project raises (``PatchingError``,
``SFTError``, ``SweepConfigError``, ``StudyConfigError``, ``JudgeError``, ...).

Each message is one line naming the bad value and what is allowed. Entry points print
``error: <message>`` and exit with status 2 for these, and the start-up hook does the same for
``lm_eval``'s own command line (harness_ext/_autoload.py); any other exception is a bug and
keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user; its message is one line naming the value and what is allowed."""
