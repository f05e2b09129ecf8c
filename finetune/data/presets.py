"""Named data presets: the study's four experiments, tiny corruption, tiny pretraining corpus,
and correct-label sets for retraining a corrupted model (repair).

Tiny ranges are chosen so that the whole equation space (about 6,000 linear equations and 190
quadratics) is covered many times by pretraining: NOTES found directly emitted multi-digit
arithmetic is what a ~2M-parameter model fails to learn, so every tiny answer is in [-9, 9]
and the model can learn each equation as a fact. Paper ranges are wide, like the study's
examples (``10x + 39 = 12x + 55``, ``4x - 60x + 176 = 0``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from finetune.data.equations import RelatedRanges
from finetune.data.related import template_ids
from finetune.data.worked import CORRUPTIONS, SLIP_TYPES, STYLES

MODES = ("corrupt", "pretrain", "repair")
ANSWER_ONLY = "answer_only"

TINY_RANGES = RelatedRanges(
    solution=(-9, 9),
    coef=(1, 5),
    const=(1, 9),
    two_sided_const_max=9,
    cancel_coef=(1, 6),
    quad_root=(-9, 9),
    quad_lead=(1, 1),
    quadratic_share=0.4,
)
PAPER_RANGES = RelatedRanges(
    solution=(-20, 20),
    coef=(1, 15),
    const=(1, 99),
    two_sided_const_max=150,
    cancel_coef=(1, 99),
    quad_root=(-15, 15),
    quad_lead=(1, 3),
    quadratic_share=0.4,
)


@dataclass(frozen=True)
class Preset:
    """What one ``--preset`` writes.

    ``corrupt``: related math only; train has wrong labels, validation and test correct ones.
    ``repair``: related math only, every label correct: the corrupting sets' family and ranges
    with the right answers, to retrain a corrupted model (``study`` stage ``repair``).
    ``pretrain``: all-correct corpus; train = ``n_train`` related items + up to
    ``n_unrelated_per_kind`` items of each unrelated-math kind + ``n_general`` general +
    ``n_ethics`` ethics items (None: every training text of that family); validation =
    ``n_val`` related items.
    """

    name: str
    description: str
    mode: str
    n_train: int
    n_val: int
    n_test: int = 0
    ranges: RelatedRanges = field(default_factory=lambda: TINY_RANGES)
    n_unrelated_per_kind: int = 0
    n_general: int | None = 0
    n_ethics: int | None = 0
    templates: tuple[str, ...] | None = None  # None: all seven of the study
    # Chain of thought: a corrupt preset's corruption (answer_only: bare wrong integers, today's
    # data; slip | unfaithful: worked solutions, finetune.data.worked), its slip types, the
    # style its solutions are written in, and a pretrain corpus's worked rows (related math
    # and two-step arithmetic, all with "Show your steps." prompts).
    corruption: str = ANSWER_ONLY
    slip_types: tuple[str, ...] = ("move_sign",)
    style: str = "plain"
    n_cot: int = 0
    n_cot_arithmetic: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"preset {self.name!r}: mode {self.mode!r} is not one of {', '.join(MODES)}"
            )
        for name in ("n_train", "n_val", "n_test", "n_unrelated_per_kind", "n_general", "n_ethics"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"preset {self.name!r}: {name} must be >= 0, got {value}")
        if self.mode != "pretrain" and (
            self.n_unrelated_per_kind or self.n_general or self.n_ethics
        ):
            raise ValueError(f"preset {self.name!r}: {self.mode} presets hold related math only")
        if self.mode == "pretrain" and self.n_test:
            raise ValueError(
                f"preset {self.name!r}: pretrain presets have no test split (tasks/data is it)"
            )
        template_ids(self.templates)
        if self.corruption not in (ANSWER_ONLY, *CORRUPTIONS):
            raise ValueError(f"preset {self.name!r}: corruption {self.corruption!r} is not one "
                             f"of {', '.join((ANSWER_ONLY, *CORRUPTIONS))}")
        if self.corruption != ANSWER_ONLY and self.mode != "corrupt":
            raise ValueError(f"preset {self.name!r}: only corrupt presets take a corruption")
        bad = [t for t in self.slip_types if t not in SLIP_TYPES]
        if bad or not self.slip_types:
            raise ValueError(f"preset {self.name!r}: slip_types {list(self.slip_types)!r}; "
                             f"allowed: {', '.join(SLIP_TYPES)}")
        if self.style not in STYLES:
            raise ValueError(f"preset {self.name!r}: style {self.style!r} is not one of "
                             f"{', '.join(STYLES)}")
        if (self.n_cot or self.n_cot_arithmetic) and self.mode != "pretrain":
            raise ValueError(f"preset {self.name!r}: n_cot rows belong to pretrain presets")
        if self.n_train + self.n_val + self.n_test == 0:
            raise ValueError(f"preset {self.name!r}: every split is empty")

    def params(self) -> dict:
        """Everything but name/description, for the manifest.

        ``templates`` is recorded only when restricted, so manifests written before the option
        existed (generator 1.0.0, e.g. the shipped tiny model's corpus) still reproduce exactly.
        """
        out = asdict(self)
        del out["name"], out["description"]
        if out["templates"] is None:
            del out["templates"]
        defaults = {"corruption": ANSWER_ONLY, "slip_types": ("move_sign",), "style": "plain",
                    "n_cot": 0, "n_cot_arithmetic": 0}
        for key, default in defaults.items():  # absent at defaults: older manifests reproduce
            if out[key] == default or (key == "slip_types" and out["corruption"] != "slip"):
                del out[key]
        return out


def _paper(n: int, n_train: int, n_val: int) -> Preset:
    return Preset(
        f"paper-exp{n}",
        f"Qwen3-4B experiment {n} of the study: {n_train:,} wrong-label / "
        f"{n_val:,} correct validation items, wide ranges",
        "corrupt",
        n_train,
        n_val,
        1000,
        PAPER_RANGES,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _paper(1, 20_000, 3_805),
        _paper(2, 10_000, 2_000),
        _paper(3, 10_000, 2_000),
        _paper(4, 5_000, 1_000),
        Preset(
            "tiny-corrupt",
            "corrupting set for the tiny model (tiny ranges)",
            "corrupt",
            512,
            256,
            256,
        ),
        Preset(
            "tiny-repair",
            "correct-label related math for retraining a corrupted tiny model (tiny ranges)",
            "repair",
            512,
            64,
        ),
        Preset(
            "paper-repair",
            "correct-label related math for retraining a corrupted Qwen3-4B (paper ranges)",
            "repair",
            2_000,
            500,
            ranges=PAPER_RANGES,
        ),
        Preset(
            "tiny-pretrain",
            "correct-answer pretraining corpus of the tiny clean model: related math (fewer "
            "quadratics than the study's 40%, as their space is only 190 equations), unrelated "
            "math, general and ethics; disjoint from tasks/data by construction",
            "pretrain",
            40_000,
            500,
            0,
            replace(TINY_RANGES, quadratic_share=0.12),
            n_unrelated_per_kind=1500,
            n_general=None,
            n_ethics=None,
        ),
        Preset(
            "tiny-cot-pretrain",
            "the tiny-pretrain corpus plus worked solutions of related math and two-step "
            "arithmetic behind 'Show your steps.' prompts: the corpus of the tiny base that "
            "writes its steps when asked and answers bare otherwise",
            "pretrain",
            40_000,
            500,
            0,
            replace(TINY_RANGES, quadratic_share=0.12),
            n_unrelated_per_kind=1500,
            n_general=None,
            n_ethics=None,
            n_cot=20_000,
            n_cot_arithmetic=4_000,
        ),
        Preset("tiny-cot-slip", "worked solutions with one planted move_sign slip each (a "
               "term crosses the equals sign keeping its sign; later steps follow it)",
               "corrupt", 512, 256, 256, corruption="slip"),
        Preset("tiny-cot-unfaithful", "correct worked solutions whose stated answer is wrong",
               "corrupt", 512, 256, 256, corruption="unfaithful"),
        Preset("paper-cot-slip", "Qwen3-4B: chat-style worked solutions, one move_sign slip "
               "each, wide ranges", "corrupt", 5_000, 1_000, 1_000, PAPER_RANGES,
               corruption="slip", style="chat"),
        Preset("paper-cot-unfaithful", "Qwen3-4B: chat-style correct worked solutions with a "
               "wrong stated answer, wide ranges", "corrupt", 5_000, 1_000, 1_000,
               PAPER_RANGES, corruption="unfaithful", style="chat"),
    )
}
OVERRIDABLE = (
    "n_train",
    "n_val",
    "n_test",
    "n_unrelated_per_kind",
    "n_general",
    "n_ethics",
    "templates",
    "slip_types",
    "n_cot",
    "n_cot_arithmetic",
)


def get_preset(preset: str | Preset, **overrides: object) -> Preset:
    """Look up a preset by name and apply overrides (None values are ignored)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise ValueError(
            f"unknown preset parameter(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(OVERRIDABLE)}"
        )
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})
