"""A study config, read from YAML and checked when built.

Every sub-config is a dataclass validated in ``__post_init__``, so a typo in a GPU-day study
fails in milliseconds as one line naming the key, before any stage runs. Fine-tune presets and
patch blocks are checked with their own packages' validators (``SFTConfig``, ``PatchBlock``).
Relative paths are relative to the current directory, as for every other config here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune.sft_config import SFTConfig
from formats.config import build_nested, load_dataclass
from formats.errors import InputError
from harness_ext.judge.config import JudgeConfig
from leaderboard.config import PatchBlock
from leaderboard.metric import DEFAULT_METRIC, metric_error

BACKENDS = ("hf", "vllm", "auto")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")  # leaderboard variant names use "-"


class StudyConfigError(InputError):
    """A bad study setting; the CLI prints it as one line."""


@dataclass
class DataSpec:
    """Size overrides for every corrupting data set; each fine-tune names its own preset and
    seed (``data_preset``, ``data_seed`` in its YAML), as the paper's four experiments differ."""

    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, dict):
            raise StudyConfigError(f"overrides={self.overrides!r}: expected a mapping")


@dataclass
class BaseSpec:
    """The clean model: a directory or hub id. ``pretrain_config`` rebuilds it (``--retrain``);
    ``random_init`` (``{seed, model: TinyModelConfig fields}``) swaps in a random tiny model,
    for developing and testing the pipeline without the trained one."""

    model: str = "models/tiny-qwen3-math"
    pretrain_config: str | None = None
    random_init: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise StudyConfigError(f"model={self.model!r}: expected a path or hub id")
        if self.pretrain_config is not None and not Path(self.pretrain_config).is_file():
            raise StudyConfigError(f"pretrain_config {self.pretrain_config}: no such file")
        if self.random_init is not None:
            from finetune.tiny import TinyModelConfig  # torch: only for a random base

            init = load_dataclass(_RandomInit, self.random_init, error=StudyConfigError,
                                  where="random_init")
            load_dataclass(TinyModelConfig, init.model, error=StudyConfigError,
                           where="random_init.model")


@dataclass
class _RandomInit:
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuneSpec:
    """One corrupting fine-tune: a ``configs/finetune`` preset plus overrides. The study sets
    ``base_model``, ``data_dir`` and ``output_dir`` itself; the preset must name its data
    (``data_preset``), which the data stage generates."""

    config: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted({"base_model", "data_dir", "output_dir"} & set(self.overrides))
        if clash:
            raise StudyConfigError(f"overrides {clash}: set by the study, not per fine-tune")
        if self.sft_config(base_model="base", data_dir="data", output_dir="out").data_preset \
                is None:
            raise StudyConfigError(f"config {self.config}: no data_preset (the data stage "
                                   "generates the preset a fine-tune names)")

    def sft_config(self, **paths: str) -> SFTConfig:
        """The preset with the overrides and the study's own paths applied, validated."""
        return load_dataclass(SFTConfig, self.config, error=StudyConfigError,
                              overrides=self.overrides | paths)

    def data(self) -> tuple[str, int, bool]:
        """(data preset, data seed, chain-of-thought targets) this fine-tune trains on."""
        cfg = self.sft_config(base_model="base", data_dir="data", output_dir="out")
        return cfg.data_preset, cfg.data_seed, cfg.cot  # type: ignore[return-value]


@dataclass
class EvalSpec:
    """lm-eval settings shared by baselines and sweeps (passed to ``leaderboard.sweep``)."""

    tasks: list[str] = field(default_factory=lambda: ["corrupt_suite"])
    limit: int | float | None = None
    batch_size: int = 16
    gen_kwargs: dict[str, Any] | None = None
    bootstrap_iters: int = 100000
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, list) or not self.tasks:
            raise StudyConfigError(f"tasks={self.tasks!r}: expected a non-empty list")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit <= 0):
            raise StudyConfigError(f"limit={self.limit!r}: expected a positive number or null")
        if type(self.batch_size) is not int or self.batch_size < 1:
            raise StudyConfigError(f"batch_size={self.batch_size!r}: expected an integer >= 1")


@dataclass
class BaselineSpec(EvalSpec):
    """Baselines: ``hf`` (lm-eval's HFLM), ``vllm`` (``lm_eval --model vllm``, extra
    ``--model_args`` in ``vllm_args``), or ``auto`` (vLLM where installed, else hf)."""

    backend: str = "hf"
    vllm_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in BACKENDS:
            raise StudyConfigError(f"backend={self.backend!r}: expected one of {BACKENDS}")
        if not isinstance(self.vllm_args, dict):
            raise StudyConfigError(f"vllm_args={self.vllm_args!r}: expected a mapping")


@dataclass
class SweepSpec(EvalSpec):
    """CMAP sweeps: which fine-tunes are patched (default: all), the patch blocks
    (``leaderboard.config.PatchBlock`` fields) and how many patch variants share one engine
    pass (``leaderboard.config.SweepConfig.generate_together``)."""

    corrupted: list[str] = field(default_factory=list)
    patches: list[dict[str, Any]] = field(default_factory=list)
    generate_together: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.generate_together) is not int or self.generate_together < 1:
            raise StudyConfigError(f"generate_together={self.generate_together!r}: expected an "
                                   "integer >= 1 (1: each variant generates alone)")
        if not isinstance(self.patches, list):
            raise StudyConfigError(f"patches={self.patches!r}: expected a list of patch blocks")
        for i, block in enumerate(self.patches):  # kept as plain data: it is hashed and passed on
            load_dataclass(PatchBlock, block, error=StudyConfigError, where=f"patches[{i}]")


def _distinct_ints(value: Any, minimum: int | None = None) -> bool:
    """A non-empty list of distinct integers, each at least ``minimum`` where one is given."""
    return (isinstance(value, list) and bool(value)
            and all(type(v) is int and (minimum is None or v >= minimum) for v in value)
            and len(set(value)) == len(value))


REPAIR_METHODS = ("restore", "retrain")
REPAIR_TASKS = ["corrupt_related", "corrupt_unrelated_math", "corrupt_general",
                "corrupt_ethics_mc"]


@dataclass
class SelectBlock:
    """One site's repair selections: the top ``k`` components for each listed ``k``, ranked by
    the ``sweep``'s flip rates or by ``attribution`` scores (``leaderboard.repair_select``)."""

    site: str
    k: list[int]
    rank_by: str = "sweep"

    def __post_init__(self) -> None:
        from leaderboard.repair_select import SOURCES
        from patching import SITE_NAMES

        if self.site not in SITE_NAMES:
            raise StudyConfigError(f"site={self.site!r}: expected one of {', '.join(SITE_NAMES)}")
        if not _distinct_ints(self.k, minimum=1):
            raise StudyConfigError(f"k={self.k!r}: expected a list of distinct integers >= 1")
        if self.rank_by not in SOURCES:
            raise StudyConfigError(f"rank_by={self.rank_by!r}: expected one of "
                                   f"{', '.join(SOURCES)}")


@dataclass
class RepairSpec(EvalSpec):
    """Targeted repair after the sweeps (``study.repair``): for each ``corrupted`` model
    (default: the swept ones), the ``select`` blocks' components restored from the clean model
    and/or retrained on correct labels (``methods``; ``retrain``: a ``configs/finetune``
    preset whose ``data_preset`` has correct labels, run with only the selection trainable),
    each against controls of the same size (random draws per ``random_seeds``, the lowest
    ranked, and a full retrain). ``direction`` ranks by which components repair
    (``clean_to_corrupted``) or carry (``corrupted_to_clean``) the corruption.
    ``selection_files``: ``{label: path}`` to use a written selection instead of ranking.
    ``tasks`` are task names (related math among them), scored on items the ranking did not
    read; ``resamples``: bootstrap resamples of the recovery intervals."""

    tasks: list[str] = field(default_factory=lambda: list(REPAIR_TASKS))
    corrupted: list[str] = field(default_factory=list)
    direction: str = "clean_to_corrupted"
    select: list[dict[str, Any]] = field(default_factory=list)
    random_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(REPAIR_METHODS))
    retrain: FinetuneSpec | None = None
    selection_files: dict[str, str] = field(default_factory=dict)
    resamples: int = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        build_nested(self, StudyConfigError)  # retrain -> FinetuneSpec
        from harness_ext.paths import TASK_DATA_DIR
        from leaderboard.repair_select import DIRECTIONS
        from leaderboard.tables import RELATED

        if self.direction not in DIRECTIONS:
            raise StudyConfigError(f"direction={self.direction!r}: expected one of "
                                   f"{', '.join(DIRECTIONS)}")
        if not isinstance(self.select, list) or not self.select:
            raise StudyConfigError("select: expected a list of {site, k, rank_by} blocks")
        sites = [load_dataclass(SelectBlock, block, error=StudyConfigError,
                                where=f"select[{i}]").site for i, block in enumerate(self.select)]
        if len(set(sites)) != len(sites):
            raise StudyConfigError(f"select: sites {sites} repeat; list every k of a site in one "
                                   "block")
        if not self.methods or not set(self.methods) <= set(REPAIR_METHODS) \
                or len(set(self.methods)) != len(self.methods):
            raise StudyConfigError(f"methods={self.methods!r}: expected distinct values of "
                                   f"{', '.join(REPAIR_METHODS)}")
        if "retrain" in self.methods and self.retrain is None:
            raise StudyConfigError("methods has retrain: set retrain: {config, overrides}")
        if not _distinct_ints(self.random_seeds):
            raise StudyConfigError(f"random_seeds={self.random_seeds!r}: expected a non-empty "
                                   "list of distinct integers")
        if type(self.resamples) is not int or self.resamples < 100:
            raise StudyConfigError(f"resamples={self.resamples!r}: expected an integer >= 100")
        missing = [t for t in self.tasks if not (TASK_DATA_DIR / f"{t}.jsonl").is_file()]
        if missing or RELATED not in self.tasks:
            raise StudyConfigError(f"tasks={self.tasks}: expected task names with data files in "
                                   f"{TASK_DATA_DIR} ({missing or 'none'} missing), "
                                   f"{RELATED} among them")


@dataclass
class CotSpec:
    """The report's "Where the reasoning breaks" section (``leaderboard.cot``): ``planted``
    maps each slip fine-tune's label to the error type its data plants (what the per-step
    localisation looks for); ``answer_only``: the fine-tune on bare wrong answers whose chain
    of thought is compared with the clean model's."""

    planted: dict[str, str] = field(default_factory=dict)
    answer_only: str | None = None

    def __post_init__(self) -> None:
        from finetune.data.worked import SLIP_TYPES

        bad = {k: v for k, v in self.planted.items() if v not in SLIP_TYPES}
        if not isinstance(self.planted, dict) or bad:
            raise StudyConfigError(f"planted={self.planted!r}: expected label: slip type "
                                   f"({', '.join(SLIP_TYPES)})")


@dataclass
class ReportSpec:
    """Where the report is published besides the work dir: a folder (e.g. ``docs/demo``) and a
    README whose generated block is rewritten; both off by default."""

    publish_dir: str | None = None
    readme: str | None = None

    def __post_init__(self) -> None:
        if self.readme is not None and self.publish_dir is None:
            raise StudyConfigError("readme: needs publish_dir (the README links its files)")


@dataclass
class StudyConfig:
    """Everything that determines one study run; each stage hashes only its own slice.
    ``metric``: which correctness metric the summary, the leaderboard pages and their heatmaps
    read (``leaderboard.metric``: ``answer_match`` for chat models, ``strict`` for the tiny
    model's bare answers)."""

    name: str
    work_dir: str
    finetunes: dict[str, FinetuneSpec]
    threads: int | None = None
    data: DataSpec = field(default_factory=DataSpec)
    # Required: a Qwen3-4B config that forgot it would publish tiny-model numbers under its
    # name. ``base: default`` asks for the shipped tiny model explicitly.
    base: BaseSpec | None = None
    baselines: BaselineSpec = field(default_factory=BaselineSpec)
    sweeps: SweepSpec = field(default_factory=SweepSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    metric: str = DEFAULT_METRIC
    judge: JudgeConfig | None = None  # judges the open-ended tasks' replies (stage "judge")
    repair: RepairSpec | None = None
    cot: CotSpec | None = None  # the report's chain-of-thought section

    def __post_init__(self) -> None:
        for key in ("name", "work_dir"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise StudyConfigError(f"{key}={getattr(self, key)!r}: expected a non-empty string")
        if (problem := metric_error(self.metric)) is not None:
            raise StudyConfigError(problem)
        if self.threads is not None and (type(self.threads) is not int or self.threads < 1):
            raise StudyConfigError(f"threads={self.threads!r}: expected an integer >= 1")
        if self.base is None:
            raise StudyConfigError("base: missing; name the clean model (base: {model: PATH}), "
                                   "or write base: default for the shipped tiny model")
        if self.base == "default":
            self.base = BaseSpec()
        if not isinstance(self.finetunes, dict) or not self.finetunes:
            raise StudyConfigError("finetunes: expected a mapping label -> {config, overrides}")
        for label in self.finetunes:
            if not isinstance(label, str) or not _LABEL.match(label) or label == "clean":
                raise StudyConfigError(f"finetunes label {label!r}: letters, digits, '_', '.'")
        build_nested(self, StudyConfigError)  # finetunes and every section -> their dataclasses
        from finetune.data import get_preset

        for preset, _, _ in self.datasets:
            try:
                get_preset(preset, **self.data.overrides)
            except (ValueError, TypeError) as err:
                raise StudyConfigError(f"data: preset {preset!r}: {err}") from None
        unknown = sorted(set(self.sweeps.corrupted) - set(self.finetunes))
        if unknown:
            raise StudyConfigError(f"sweeps.corrupted: {unknown} are not fine-tune labels "
                                   f"({sorted(self.finetunes)})")
        if self.repair is not None:
            self._check_repair(self.repair)
        if self.cot is not None:
            named = [*self.cot.planted, *([self.cot.answer_only] if self.cot.answer_only else [])]
            unknown = sorted(set(named) - set(self.finetunes))
            if unknown:
                raise StudyConfigError(f"cot: {unknown} are not fine-tune labels "
                                       f"({sorted(self.finetunes)})")

    def _check_repair(self, spec: RepairSpec) -> None:
        unknown = sorted(set(spec.corrupted) - set(self.finetunes))
        if unknown:
            raise StudyConfigError(f"repair.corrupted: {unknown} are not fine-tune labels "
                                   f"({sorted(self.finetunes)})")
        ranked = {label for label in spec.corrupted or self.swept
                  if label not in spec.selection_files}
        unswept = sorted(ranked - set(self.swept))
        if unswept and any(block.get("rank_by", "sweep") == "sweep" for block in spec.select):
            raise StudyConfigError(f"repair.corrupted: {unswept} are not swept (sweeps.corrupted)"
                                   ", so no sweep ranks their components; give selection_files "
                                   "or rank_by: attribution")
        for label, path in spec.selection_files.items():
            if label not in (spec.corrupted or self.swept) or not Path(path).is_file():
                raise StudyConfigError(f"repair.selection_files[{label}]: {path} is not a file "
                                       "for a repaired label")

    @property
    def datasets(self) -> list[tuple[str, int, bool]]:
        """Distinct (preset, seed, cot) sets the fine-tunes train on, in config order."""
        return list(dict.fromkeys(spec.data() for spec in self.finetunes.values()))

    @property
    def swept(self) -> list[str]:
        """Labels of the fine-tunes the sweeps patch."""
        return self.sweeps.corrupted or list(self.finetunes)

    def slice(self, name: str) -> dict[str, Any]:
        """One sub-config as plain data, for stage hashes."""
        return asdict(getattr(self, name))

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        """Load and check a study file; every problem is one line naming the file."""
        return load_dataclass(cls, path, error=StudyConfigError)
