"""The study config's ``repair`` section: which components to select, how to repair them, and
what to score; checked when built, one line naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finetune.sft_config import FinetuneSpec
from formats.config import build_nested, load_dataclass
from formats.errors import InputError
from leaderboard.config import DIRECTIONS, EvalSpec
from leaderboard.tables import RELATED


class RepairConfigError(InputError):
    """A bad repair setting; one line naming the key."""


def _distinct_ints(value: Any, minimum: int | None = None) -> bool:
    """A non-empty list of distinct integers, each at least ``minimum`` where one is given."""
    return (isinstance(value, list) and bool(value)
            and all(type(v) is int and (minimum is None or v >= minimum) for v in value)
            and len(set(value)) == len(value))


REPAIR_METHODS = ("restore", "retrain")
SOURCES = ("sweep", "attribution")  # what ranks the components
REPAIR_TASKS = ["corrupt_related", "corrupt_unrelated_math", "corrupt_general",
                "corrupt_ethics_mc"]


@dataclass
class SelectBlock:
    """One site's repair selections: the top ``k`` components for each listed ``k``, ranked by
    the ``sweep``'s flip rates or by ``attribution`` scores (``repair.select``)."""

    site: str
    k: list[int]
    rank_by: str = "sweep"

    def __post_init__(self) -> None:
        from patching import SITE_NAMES

        if self.site not in SITE_NAMES:
            raise RepairConfigError(f"site={self.site!r}: expected one of {', '.join(SITE_NAMES)}")
        if not _distinct_ints(self.k, minimum=1):
            raise RepairConfigError(f"k={self.k!r}: expected a list of distinct integers >= 1")
        if self.rank_by not in SOURCES:
            raise RepairConfigError(f"rank_by={self.rank_by!r}: expected one of "
                                   f"{', '.join(SOURCES)}")


@dataclass
class RepairSpec(EvalSpec):
    """Targeted repair after the sweeps (``repair.run``): for each ``corrupted`` model
    (default: the swept ones), the ``select`` blocks' components restored from the clean model
    and/or retrained on correct labels (``methods``; ``retrain``: a ``configs/finetune``
    preset whose ``data_preset`` has correct labels, run with only the selection trainable),
    each against controls of the same size (random draws per ``random_seeds``, the lowest
    ranked, and a full retrain). ``direction`` ranks by which components repair
    (``clean_to_corrupted``) or carry (``corrupted_to_clean``) the corruption.
    ``selection_files``: ``{label: path}`` to use a written selection instead of ranking.
    ``tasks`` are task names (related math among them), scored on items the ranking did not
    read; ``resamples``: bootstrap resamples of the recovery intervals. ``restore_each``: the
    restore sweep, every component of these kinds (``block``, ``attn``, ``mlp``, ``head``)
    restored alone and scored on related math (``[]``: none)."""

    tasks: list[str] = field(default_factory=lambda: list(REPAIR_TASKS))
    corrupted: list[str] = field(default_factory=list)
    direction: str = "clean_to_corrupted"
    select: list[dict[str, Any]] = field(default_factory=list)
    random_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(REPAIR_METHODS))
    retrain: FinetuneSpec | None = None
    selection_files: dict[str, str] = field(default_factory=dict)
    resamples: int = 2000
    restore_each: list[str] = field(default_factory=lambda: ["block", "attn", "mlp"])

    def __post_init__(self) -> None:
        super().__post_init__()
        build_nested(self, RepairConfigError)  # retrain -> FinetuneSpec
        from patching.components import HEAD_KIND, LAYER_KINDS

        kinds = (*LAYER_KINDS, HEAD_KIND)
        if not isinstance(self.restore_each, list) or not set(self.restore_each) <= set(kinds) \
                or len(set(self.restore_each)) != len(self.restore_each):
            raise RepairConfigError(f"restore_each={self.restore_each!r}: expected distinct "
                                    f"component kinds of {', '.join(kinds)} (or [])")
        from harness_ext.paths import TASK_DATA_DIR

        if self.direction not in DIRECTIONS:
            raise RepairConfigError(f"direction={self.direction!r}: expected one of "
                                   f"{', '.join(DIRECTIONS)}")
        if not isinstance(self.select, list) or not self.select:
            raise RepairConfigError("select: expected a list of {site, k, rank_by} blocks")
        sites = [load_dataclass(SelectBlock, block, error=RepairConfigError,
                                where=f"select[{i}]").site for i, block in enumerate(self.select)]
        if len(set(sites)) != len(sites):
            raise RepairConfigError(f"select: sites {sites} repeat; list every k of a site in one "
                                   "block")
        if not self.methods or not set(self.methods) <= set(REPAIR_METHODS) \
                or len(set(self.methods)) != len(self.methods):
            raise RepairConfigError(f"methods={self.methods!r}: expected distinct values of "
                                   f"{', '.join(REPAIR_METHODS)}")
        if "retrain" in self.methods and self.retrain is None:
            raise RepairConfigError("methods has retrain: set retrain: {config, overrides}")
        if not _distinct_ints(self.random_seeds):
            raise RepairConfigError(f"random_seeds={self.random_seeds!r}: expected a non-empty "
                                   "list of distinct integers")
        if type(self.resamples) is not int or self.resamples < 100:
            raise RepairConfigError(f"resamples={self.resamples!r}: expected an integer >= 100")
        missing = [t for t in self.tasks if not (TASK_DATA_DIR / f"{t}.jsonl").is_file()]
        if missing or RELATED not in self.tasks:
            raise RepairConfigError(f"tasks={self.tasks}: expected task names with data files in "
                                   f"{TASK_DATA_DIR} ({missing or 'none'} missing), "
                                   f"{RELATED} among them")
