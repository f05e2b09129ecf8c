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

from finetune.sft_config import FinetuneSpec
from formats.config import build_nested, load_dataclass
from formats.errors import InputError
from harness_ext.judge.config import JudgeConfig
from leaderboard.config import EvalSpec, PatchBlock
from leaderboard.metric import DEFAULT_METRIC, metric_error
from repair.config import RepairSpec

BACKENDS = ("hf", "vllm", "auto")
# Leaderboard variant names use "-" between fields, and a seed's model is <condition>.s<seed>.
_CONDITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


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


@dataclass(frozen=True)
class Model:
    """One fine-tuned model: a condition (a ``finetunes`` entry) trained with one seed.
    ``label`` names it in folders and tables: the condition itself, or ``<condition>.s<seed>``
    when the condition lists ``seeds``."""

    label: str
    condition: str
    seed: int | None
    spec: FinetuneSpec


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
            if not isinstance(label, str) or not _CONDITION.match(label) or label == "clean":
                raise StudyConfigError(f"finetunes label {label!r}: letters, digits and '_'")
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
        repaired = self.repaired
        ranked = {label for label in repaired if label not in spec.selection_files}
        unswept = sorted(ranked - set(self.swept))
        if unswept and any(block.get("rank_by", "sweep") == "sweep" for block in spec.select):
            raise StudyConfigError(f"repair.corrupted: {unswept} are not swept (sweeps.corrupted)"
                                   ", so no sweep ranks their components; give selection_files "
                                   "or rank_by: attribution")
        for label, path in spec.selection_files.items():
            if label not in repaired or not Path(path).is_file():
                raise StudyConfigError(f"repair.selection_files[{label}]: {path} is not a file "
                                       f"for a repaired model ({', '.join(repaired)})")

    @property
    def repaired(self) -> list[str]:
        """Labels of the models the repair stage repairs (every seed of each condition)."""
        if self.repair is None:
            return []
        return self.labels_of(self.repair.corrupted) if self.repair.corrupted else self.swept

    @property
    def datasets(self) -> list[tuple[str, int, bool]]:
        """Distinct (preset, seed, cot) sets the fine-tunes train on, in config order."""
        return list(dict.fromkeys(spec.data() for spec in self.finetunes.values()))

    @property
    def models(self) -> dict[str, Model]:
        """Every fine-tuned model, by label: each condition once per seed, in config order."""
        out = {}
        for condition, spec in self.finetunes.items():
            if spec.seeds is None:
                out[condition] = Model(condition, condition, None, spec)
            for seed in spec.seeds or ():
                label = f"{condition}.s{seed}"
                out[label] = Model(label, condition, seed, spec.for_seed(seed))
        return out

    def labels_of(self, conditions: list[str]) -> list[str]:
        """The model labels of these conditions (all their seeds), in config order."""
        return [m.label for m in self.models.values() if m.condition in conditions]

    @property
    def conditions(self) -> dict[str, list[str]]:
        """Condition -> its models' labels (one per seed)."""
        return {c: self.labels_of([c]) for c in self.finetunes}

    @property
    def swept(self) -> list[str]:
        """Labels of the models the sweeps patch (every seed of each swept condition)."""
        return self.labels_of(self.sweeps.corrupted or list(self.finetunes))

    def slice(self, name: str) -> dict[str, Any]:
        """One sub-config as plain data, for stage hashes."""
        return asdict(getattr(self, name))

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        """Load and check a study file; every problem is one line naming the file."""
        return load_dataclass(cls, path, error=StudyConfigError)
