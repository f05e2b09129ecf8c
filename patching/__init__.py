"""Cross-model activation patching (CMAP) for transformers causal LMs, KV-cached.

    from patching import PatchSpec, patched_generate, sweep_generate
    spec = PatchSpec(site="head", layers=[3], heads=[0, 2], positions="newest")
    ids = patched_generate(receiver, donor, input_ids, spec, attention_mask=mask)

`architectures` is the one table of sites and decoder families (Llama, Mistral, Qwen2/2.5,
Qwen3, Qwen3-MoE, Phi-3, OLMo 2, Gemma 2, Gemma 3); `reference` holds the naive definition
the engine is tested against; `repair` puts clean weights back into chosen components of a
corrupted model (`restore`, `restored`).
"""

from .architectures import (
    ARCHITECTURES,
    PER_HEAD_SITES,
    SITE_NAMES,
    SITES,
    Architecture,
    architecture_for,
    check_architecture,
    heads_of,
)
from .decoding import DecodingConfig
from .models import AdapterSide, adapter_pair
from .repair import Selection, restore, restored
from .spec import PatchingError, PatchSpec, check_pair, every_layer
from .sweep import check_patch, patched_generate, sweep_generate
from .teacher_forced import ContinuationScores, patched_logprobs

__all__ = [
    "ARCHITECTURES",
    "PER_HEAD_SITES",
    "SITES",
    "SITE_NAMES",
    "AdapterSide",
    "Architecture",
    "ContinuationScores",
    "DecodingConfig",
    "PatchSpec",
    "PatchingError",
    "Selection",
    "adapter_pair",
    "architecture_for",
    "check_architecture",
    "check_pair",
    "check_patch",
    "every_layer",
    "heads_of",
    "patched_generate",
    "patched_logprobs",
    "restore",
    "restored",
    "sweep_generate",
]
