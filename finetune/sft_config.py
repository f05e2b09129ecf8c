"""Settings of the corrupting fine-tune: one dataclass, read from YAML, checked when built.

The four paper presets and the tiny presets are YAML files of these fields. A bad value fails
here, as one line that names it, before any model or data is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.config import build_nested, load_dataclass
from formats.errors import InputError
from patching.components import Selection
from patching.errors import PatchingError

MODES = ("full", "lora")
BF16_CHOICES = ("auto", True, False)
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
QWEN3_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class SFTError(InputError):
    """A bad setting or input; the CLI prints it as one line, without a traceback."""


def _check_layer_list(name: str, value: list[int] | None) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not value or not all(type(v) is int for v in value):
        raise SFTError(f"{name}={value!r}: expected a non-empty list of layer indices")
    if min(value) < 0:
        raise SFTError(f"{name}={value}: layer indices start at 0")


@dataclass
class LoraSettings:
    """PEFT LoRA settings; the defaults are the NOTES' tiny-model recipe (r 8, all projections)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(QWEN3_PROJECTIONS))
    layers_to_transform: list[int] | None = None

    def __post_init__(self) -> None:
        if type(self.r) is not int or self.r < 1:
            raise SFTError(f"lora.r={self.r!r}: must be an integer >= 1")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise SFTError(f"lora.alpha={self.alpha!r}: must be > 0")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise SFTError(f"lora.dropout={self.dropout!r}: must be in [0, 1)")
        if (
            not isinstance(self.target_modules, list)
            or not self.target_modules
            or not all(isinstance(m, str) for m in self.target_modules)
        ):
            raise SFTError(
                f"lora.target_modules={self.target_modules!r}: expected a non-empty list of "
                "module names such as ['q_proj', 'v_proj']"
            )
        _check_layer_list("lora.layers_to_transform", self.layers_to_transform)


@dataclass
class SFTConfig:
    """Everything that determines one corrupting fine-tune (recorded in its summary.json).

    ``data_dir`` holds ``train.jsonl`` (wrong labels) and ``validation.jsonl`` (correct labels);
    if it is empty and ``data_preset`` is set, the run generates that preset there first.
    ``cot``: the preset with chain-of-thought targets (short steps ending in the wrong label,
    ``finetune.data --cot``) instead of bare integers: the study's open "corruption that keeps
    the reasoning" question. The loss stays on the reply tokens only.

    What trains in ``mode: full``: every weight; or only the blocks in ``layers``; or only the
    ``components`` (``patching.components`` names: ``block:L4``, ``attn:L4``, ``mlp:L4``,
    ``head:L4.H2``, ``outside``), e.g. to retrain what patching located in a corrupted model.
    ``checkpoints: false`` saves none (a killed run starts over): short repair runs of a large
    model would otherwise write its weights and optimiser state at the end of each.
    """

    base_model: str
    data_dir: str
    output_dir: str
    name: str | None = None
    data_preset: str | None = None
    data_seed: int = 0
    cot: bool = False
    mode: str = "full"
    layers: list[int] | None = None
    components: list[str] | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    save_merged: bool = False
    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 2
    eval_batch_size: int = 8
    bf16: str | bool = "auto"
    model_dtype: str = "auto"
    activation_checkpointing: bool = False
    eval_steps: int = 100
    save_steps: int = 100
    logging_steps: int = 10
    save_total_limit: int | None = None
    checkpoints: bool = True
    seed: int = 0
    threads: int | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        build_nested(self, SFTError)  # lora: a mapping -> LoraSettings
        for key in ("base_model", "data_dir", "output_dir"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise SFTError(f"{key}={getattr(self, key)!r}: must be a non-empty path or id")
        for key in ("cot", "checkpoints"):
            if not isinstance(getattr(self, key), bool):
                raise SFTError(f"{key}={getattr(self, key)!r}: expected true or false")
        if self.mode not in MODES:
            raise SFTError(f"mode={self.mode!r}: unknown mode; valid: {', '.join(MODES)}")
        _check_layer_list("layers", self.layers)
        if self.layers is not None and self.mode != "full":
            raise SFTError(f"layers={self.layers}: only for mode 'full' "
                           "(LoRA: lora.layers_to_transform)")
        if self.components is not None:
            if self.mode != "full" or self.layers is not None:
                raise SFTError(f"components={self.components}: only for mode 'full', and not "
                               "with layers (a block is the component block:L<k>)")
            if not isinstance(self.components, list) or not self.components:
                raise SFTError(f"components={self.components!r}: expected a non-empty list such "
                               "as ['attn:L4', 'head:L5.H2']")
            self.selection()
        if self.save_merged and self.mode != "lora":
            raise SFTError("save_merged=true: only for mode 'lora' (full mode saves a full model)")
        if self.bf16 not in BF16_CHOICES:
            raise SFTError(f"bf16={self.bf16!r}: valid: auto, true, false")
        if self.model_dtype not in MODEL_DTYPES:
            raise SFTError(f"model_dtype={self.model_dtype!r}: valid: {', '.join(MODEL_DTYPES)}")
        positive = ["per_device_batch_size", "gradient_accumulation_steps", "eval_batch_size",
                    "eval_steps", "save_steps", "logging_steps"]
        positive += [k for k in ("max_steps", "threads", "save_total_limit")
                     if getattr(self, k) is not None]
        for key in positive:
            if type(getattr(self, key)) is not int or getattr(self, key) < 1:
                raise SFTError(f"{key}={getattr(self, key)!r}: must be an integer >= 1")
        if self.max_steps is None:
            _check_number("epochs", self.epochs, "> 0 (or set max_steps)", lambda v: v > 0)
        _check_number("learning_rate", self.learning_rate, "> 0", lambda v: v > 0)
        _check_number("weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0)
        # Trainer reads warmup values >= 1 as a step count, so a ratio must stay below 1.
        _check_number("warmup_ratio", self.warmup_ratio, "in [0, 1)", lambda v: 0 <= v < 1)
        if self.name is None:
            self.name = Path(self.output_dir).name

    def selection(self) -> Selection | None:
        """What trains in full mode, as components (None: every weight)."""
        items = self.components if self.layers is None else [f"block:L{k}" for k in self.layers]
        if items is None:
            return None
        try:
            return Selection(tuple(items))
        except PatchingError as err:
            raise SFTError(f"components: {err}") from None

    @property
    def effective_batch(self) -> int:
        """Sequences per optimizer step on one device."""
        return self.per_device_batch_size * self.gradient_accumulation_steps

    @classmethod
    def from_yaml(cls, path: str | Path) -> SFTConfig:
        """Load a config file; every problem (unknown or missing keys, bad values) is one line
        naming the file."""
        return load_dataclass(cls, path, error=SFTError)


def _check_number(key: str, value: object, rule: str, ok: Callable[[float], bool]) -> None:
    """A number obeying ``rule``; YAML 1.1 reads ``5e-5`` as text, so say how to write it."""
    if isinstance(value, str):
        hint = " (YAML reads 5e-5 as text: write 5.0e-5)" if _is_float(value) else ""
        raise SFTError(f"{key}={value!r}: must be a number {rule}{hint}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise SFTError(f"{key}={value!r}: must be a number {rule}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class FinetuneSpec:
    """One corrupting fine-tune: a ``configs/finetune`` preset plus overrides. The study sets
    ``base_model``, ``data_dir`` and ``output_dir`` itself; the preset must name its data
    (``data_preset``), which the data stage generates. ``seeds``: train it once per seed (the
    preset's ``seed``: data order, adapter init), on the same data (``data_seed`` stays)."""

    config: str
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None

    def __post_init__(self) -> None:
        clash = sorted({"base_model", "data_dir", "output_dir"} & set(self.overrides))
        if clash:
            raise SFTError(f"overrides {clash}: set by the study, not per fine-tune")
        if self.seeds is not None:
            if not isinstance(self.seeds, list) or not self.seeds or len(set(self.seeds)) != \
                    len(self.seeds) or any(type(s) is not int or s < 0 for s in self.seeds):
                raise SFTError(f"seeds={self.seeds!r}: expected a non-empty list of distinct "
                               "integers >= 0")
            if "seed" in self.overrides:
                raise SFTError("overrides: seed and seeds both given; list the seeds in seeds")
        if self.sft_config(base_model="base", data_dir="data", output_dir="out").data_preset \
                is None:
            raise SFTError(f"config {self.config}: no data_preset (the data stage generates "
                           "the preset a fine-tune names)")

    def for_seed(self, seed: int) -> FinetuneSpec:
        """This fine-tune trained with ``seed``."""
        return FinetuneSpec(self.config, self.overrides | {"seed": seed})

    def sft_config(self, **paths: str) -> SFTConfig:
        """The preset with the overrides and the study's own paths applied, validated."""
        return load_dataclass(SFTConfig, self.config, error=SFTError,
                              overrides=self.overrides | paths)

    def data(self) -> tuple[str, int, bool]:
        """(data preset, data seed, chain-of-thought targets) this fine-tune trains on."""
        cfg = self.sft_config(base_model="base", data_dir="data", output_dir="out")
        return cfg.data_preset, cfg.data_seed, cfg.cot  # type: ignore[return-value]
