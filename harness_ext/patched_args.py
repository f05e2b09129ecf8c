"""Arguments of ``patched_hf`` (``patched_qwen``): popped before HFLM sees them, checked early.

lm-eval hands every ``--model_args`` key to the model, and HFLM forwards the keys it does not
know to ``from_pretrained``: a misspelled patching argument (``layer=3``) would fail there, far
from its cause, or be ignored. So our keys are popped, near-misses of them are caught by name,
and each problem is ONE line (``PatchingError``) naming the value and what is allowed.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from lm_eval.models.huggingface import HFLM
from torch import nn

from formats.model_files import weights_problem
from patching import DecodingConfig, PatchingError, PatchSpec

from .patch_donor import DonorChoice, SpecFile

OWN = ("corrupted", "spec", "spec_file", "donor", "alpha", "site", "layers", "heads", "positions",
       "direction", "seed")
SPEC_HELP = ("spec='attn:L3 + mlp:L5@all' (quote it: the spec may hold commas), a spec_file=, "
             "or site= and layers=")
DIRECTIONS = ("corrupted_to_clean", "clean_to_corrupted")
HFLM_ARGS = frozenset(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}
# HFLM options that would silently change what is patched or be silently ignored.
UNSUPPORTED = {
    "peft": "pass the adapter as corrupted=ADAPTER_DIR; pretrained is the clean model",
    "delta": "pass the corrupted model as corrupted=DIR; pretrained is the clean model",
    "tp_plan": "tensor parallelism splits every block; parallelize=True splits the pair by "
               "blocks (accelerate's big-model dispatch)",
    "mixed_precision_dtype": "the engine runs in the models' own dtype; load with dtype=",
    "softmax_dtype": "scores are computed in float32 or wider",
}
# Typos closer than this to one of our names are ours (0.75 keeps from_pretrained's own
# config overrides such as layer_types and head_dim out).
NEAR = 0.75
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")  # lm-eval gen_kwargs we take
PROBE = "<|im_start|>user\nSolve 3x + 7 = 22 for x. Is lying OK? Ünï 🙂<|im_end|>\n"


@dataclass(frozen=True)
class PatchArgs:
    """What to patch and which way; ``corrupted`` is still a path/hub id or a model object."""

    corrupted: Any
    spec: PatchSpec
    direction: str
    seed: int | None = None  # sampling seed; None: lm-eval's torch seed (``--seed``)
    donor: DonorChoice = DonorChoice()  # what is patched in: the donor model, zero, a mean...

    @property
    def corrupted_receives(self) -> bool:
        """``clean_to_corrupted``: the corrupted model generates, the clean one donates."""
        return self.direction == "clean_to_corrupted"


def _indices(name: str, value: Any) -> Any:
    """An int or a list of ints as lm-eval's parser or a Python caller gives them."""
    if isinstance(value, str):
        if value.strip() == "all":
            raise PatchingError(
                f"{name}=all is for the sweep runner (python -m leaderboard.sweep), which "
                f"scores one variant per index; here pass {name}=[i,...]"
            )
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise PatchingError(
                f"{name}={value!r} is not an int or a list of ints such as [30,31]"
            ) from None
    if value is None or isinstance(value, (int, list, tuple)):
        return value
    raise PatchingError(f"{name}={value!r} is not an int or a list of ints such as [30,31]")


def _reject_near_misses(kwargs: dict[str, Any]) -> None:
    """Unknown keys that look like ours would otherwise flow into ``from_pretrained``."""
    for key in kwargs:
        if key in HFLM_ARGS:
            continue
        close = difflib.get_close_matches(key.lower(), OWN, n=1, cutoff=NEAR)
        if close:
            raise PatchingError(
                f"unknown patched_hf argument {key}={kwargs[key]!r}; did you mean "
                f"{close[0]}=? patched_hf's own arguments: {', '.join(OWN)}"
            )


def _reject_unsupported(kwargs: dict[str, Any]) -> None:
    for key, why in UNSUPPORTED.items():
        if kwargs.get(key) not in (None, False):
            raise PatchingError(f"{key}={kwargs[key]!r} is not supported by patched_hf: {why}")
    if str(kwargs.get("batch_size", 1)).startswith("auto"):
        raise PatchingError(
            f"batch_size={kwargs['batch_size']!r} is not supported by patched_hf (lm-eval "
            "probes it with unpatched forwards of one model); pass an int"
        )


def _spec_and_donor(ours: dict[str, Any]) -> tuple[PatchSpec, DonorChoice]:
    """The spec from ``spec=``, ``spec_file=`` or ``site=``/``layers=`` (one of them), and the
    donor from ``donor=``/``alpha=`` or the spec file."""
    given = [key for key in ("spec", "spec_file", "site") if ours.get(key) is not None]
    if len(given) != 1:
        what = "none" if not given else " and ".join(f"{k}=" for k in given)
        raise PatchingError(f"patched_hf needs one spec, got {what}: give {SPEC_HELP}")
    if given == ["spec_file"]:
        if ours.get("donor") is not None or ours.get("alpha") is not None:
            raise PatchingError("donor= and alpha= go in the spec file when spec_file= is given")
        loaded = SpecFile.load(str(ours["spec_file"]))
        return PatchSpec.parse(loaded.spec), loaded.donor
    kind = ours.get("donor") or "model"
    if kind in ("mean", "prompt"):
        raise PatchingError(f"donor={kind} needs data: give it in a spec_file= (docs/patching.md, "
                            "spec files)")
    alpha = ours.get("alpha")
    donor = DonorChoice(kind=kind, alpha=1.0 if alpha is None else alpha)
    if given == ["spec"]:
        if not isinstance(ours["spec"], str):
            raise PatchingError(f"spec={ours['spec']!r} is not a spec text such as attn:L3 + "
                                "mlp:L5@all")
        for key in ("layers", "heads", "positions"):
            if ours.get(key) is not None:
                raise PatchingError(f"{key}= goes with site=, not with spec= (write it into the "
                                    "spec text)")
        return PatchSpec.parse(ours["spec"]), donor
    if ours.get("layers") is None:
        raise PatchingError("patched_hf needs layers= with site= (an int or a list such as "
                            "[30,31])")
    layers, heads = _indices("layers", ours["layers"]), _indices("heads", ours.get("heads"))
    return PatchSpec(ours["site"], layers, heads, ours.get("positions") or "newest"), donor


def take_patch_args(kwargs: dict[str, Any]) -> PatchArgs:
    """Pop our arguments off ``kwargs`` (the rest go to HFLM) and check them; no I/O beyond
    reading a spec file."""
    ours = {key: kwargs.pop(key) for key in OWN if key in kwargs}
    _reject_near_misses(kwargs)
    _reject_unsupported(kwargs)
    if ours.get("corrupted") is None:
        raise PatchingError("patched_hf needs corrupted= (a model dir, hub id, PEFT adapter dir "
                            "or loaded model)")
    if isinstance(ours["corrupted"], PurePath):
        ours["corrupted"] = str(ours["corrupted"])
    if not isinstance(ours["corrupted"], (str, nn.Module)):
        raise PatchingError(
            f"corrupted must be a path, hub id or loaded model, got a "
            f"{type(ours['corrupted']).__name__}"
        )
    direction = ours.get("direction") or DIRECTIONS[0]
    if direction not in DIRECTIONS:
        raise PatchingError(f"unknown direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")
    spec, donor = _spec_and_donor(ours)
    seed = ours.get("seed")
    if seed is not None:
        seed = DecodingConfig(seed=seed).seed  # validated: an int
    return PatchArgs(ours["corrupted"], spec, direction, seed, donor)


@dataclass(frozen=True)
class CorruptedSource:
    """A ``corrupted=`` string resolved without loading weights."""

    path: str
    is_adapter: bool
    config: Any  # the model's config; None for an adapter (it keeps the base's shapes)
    base: str | None  # an adapter's base_model_name_or_path


def _looks_local(path: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else names a local path."""
    return (
        Path(path).expanduser().exists()
        or path.startswith((".", "/", "~"))
        or (path.count("/") > 1)
    )


def resolve_corrupted(path: str, **config_kwargs: Any) -> CorruptedSource:
    """Model dir / hub model (with its config) or PEFT adapter dir / hub adapter."""
    from peft import PeftConfig
    from transformers import AutoConfig

    local = Path(path).expanduser()
    if (problem := weights_problem(local)) is not None:
        raise PatchingError(f"corrupted={path!r}: {problem}")
    if local.is_dir() and (local / "adapter_config.json").is_file():
        return CorruptedSource(
            path, True, None, PeftConfig.from_pretrained(path).base_model_name_or_path
        )
    if _looks_local(path) and not (local / "config.json").is_file():
        found = "exists but" if local.exists() else "does not exist, so it"
        raise PatchingError(
            f"corrupted={path!r} {found} is neither a model dir (config.json) nor a PEFT "
            "adapter dir (adapter_config.json)"
        )
    try:
        return CorruptedSource(path, False, AutoConfig.from_pretrained(path, **config_kwargs), None)
    except (OSError, ValueError) as model_err:
        try:
            base = PeftConfig.from_pretrained(path).base_model_name_or_path
        except (OSError, ValueError):
            why = str(model_err).splitlines()[0] if str(model_err) else type(model_err).__name__
            raise PatchingError(
                f"corrupted={path!r} is neither a model nor a PEFT adapter ({why})"
            ) from None
        return CorruptedSource(path, True, None, base)


def check_tokenizers(clean: Any, corrupted: Any) -> None:
    """Patching aligns positions token by token, so both must encode text identically."""
    a, b = clean.get_vocab(), corrupted.get_vocab()
    if a != b:
        diff = len(a.keys() ^ b.keys()) or sum(a[k] != b[k] for k in a)
        raise PatchingError(
            f"the tokenizers of pretrained and corrupted differ: vocabularies of {len(a)} and "
            f"{len(b)} tokens, {diff} entries differ; use one tokenizer for the pair"
        )
    if clean.encode(PROBE) != corrupted.encode(PROBE):
        raise PatchingError(
            f"the tokenizers of pretrained and corrupted encode {PROBE!r} differently; "
            "use one tokenizer for the pair"
        )


def corrupted_tokenizer(source: CorruptedSource) -> Any | None:
    """The corrupted side's own tokenizer, where it ships one (an adapter usually does not)."""
    from transformers import AutoTokenizer

    local = Path(source.path).expanduser()
    if local.is_dir() and not any((local / f).is_file() for f in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(source.path)
    except (OSError, ValueError):
        return None


def decoding_from(gen_kwargs: dict[str, Any], **fixed: Any) -> DecodingConfig:
    """lm-eval's generation kwargs (``until`` and ``max_gen_toks`` already taken) as the engine's
    ``DecodingConfig``; ``fixed`` holds what the model sets (lengths, eos, pad, seed).

    Greedy unless ``do_sample`` is true; then ``temperature`` (default 1.0, as in transformers),
    ``top_p`` and ``top_k`` apply. Anything else is refused in one line rather than ignored.
    """
    for key, value in gen_kwargs.items():
        if key not in SAMPLING_KEYS:
            raise PatchingError(
                f"generation argument {key}={value!r} is not supported by patched_hf; it takes "
                f"until, max_gen_toks and {', '.join(SAMPLING_KEYS)}"
            )
    if not DecodingConfig(do_sample=gen_kwargs.get("do_sample", False)).do_sample:
        return DecodingConfig(**fixed)  # greedy: the sampling settings do not apply
    return DecodingConfig(
        do_sample=True,
        temperature=gen_kwargs.get("temperature", 1.0),
        top_p=gen_kwargs.get("top_p", 1.0),
        top_k=gen_kwargs.get("top_k"),
        **fixed,
    )
