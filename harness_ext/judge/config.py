"""The ``judge:`` block of study and sweep configs: which judge, where it runs, what it reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from .answers import JudgeError
from .model import BACKENDS, Judge
from .samples import JUDGED_TASKS
from .score import MASS_THRESHOLD, check_threshold


@dataclass(frozen=True)
class JudgeConfig:
    """A judge model (local dir or hub id) and how to run it; ``tasks``: task-name patterns
    whose samples are judged; ``threshold``: least probability on the numbers for a score."""

    model: str
    backend: str = "auto"
    threshold: float = MASS_THRESHOLD
    batch_size: int = 8
    tasks: tuple[str, ...] = field(default=JUDGED_TASKS)
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise JudgeError(f"model={self.model!r}: expected a model directory or hub id")
        if self.backend not in BACKENDS:
            raise JudgeError(f"backend={self.backend!r}: expected one of {BACKENDS}")
        try:
            check_threshold(self.threshold)
        except ValueError as err:
            raise JudgeError(str(err)) from None
        if type(self.batch_size) is not int or self.batch_size < 1:
            raise JudgeError(f"batch_size={self.batch_size!r}: expected an integer >= 1")
        tasks = [self.tasks] if isinstance(self.tasks, str) else self.tasks
        if not isinstance(tasks, (list, tuple)) or not tasks \
                or not all(isinstance(t, str) and t for t in tasks):
            raise JudgeError(f"tasks={self.tasks!r}: expected a list of task-name patterns")
        object.__setattr__(self, "tasks", tuple(tasks))

    def load(self, progress: bool = True) -> Judge:
        """The judge, ready to score (its weights load on first use)."""
        return Judge(self.model, self.backend, self.batch_size, self.threshold, self.device,
                     self.dtype, progress)
