"""Cross-model activation patching (CMAP) for transformers causal LMs, KV-cached.

    from patching import PatchSpec, patched_generate, sweep_generate
    spec = PatchSpec.parse("attn:L3 + mlp:L5 + head:L4.H0,2@steps[4:9]")
    ids = patched_generate(receiver, donor, input_ids, spec, attention_mask=mask)

`architectures` is the one table of sites and decoder families (Llama, Mistral, Qwen2/2.5,
Qwen3, Qwen3-MoE, Phi-3, OLMo 2, Gemma 2, Gemma 3); `spec` and `positions` say what a patch
is; `donors` where its values come from (another model, another prompt, zero, a mean, a
blend); `reference` holds the naive definition the engine is tested against; `effects` gives
every single patch's effect on a metric as one tensor; `components` puts clean weights back into
chosen components of a corrupted model (`restore`, `restored`).
"""

from .architecture_checks import check_architecture
from .architectures import (
    ARCHITECTURES,
    PER_HEAD_SITES,
    SITE_NAMES,
    SITES,
    Architecture,
    architecture_for,
    heads_of,
)
from .components import Selection, restore, restored
from .decoding import DecodingConfig
from .donors import Blend, Mean, OtherPrompt, Zero
from .models import AdapterSide, adapter_pair
from .positions import Positions
from .spec import Part, PatchingError, PatchSpec, check_pair, every_layer
from .sweep import PatchedGeneration, check_patch, patched_generate, sweep_generate
from .teacher_forced import ContinuationScores, patched_logprobs

__all__ = [
    "ARCHITECTURES",
    "PER_HEAD_SITES",
    "SITES",
    "SITE_NAMES",
    "AdapterSide",
    "Architecture",
    "Blend",
    "ContinuationScores",
    "DecodingConfig",
    "Mean",
    "OtherPrompt",
    "Part",
    "PatchSpec",
    "PatchedGeneration",
    "PatchingError",
    "Positions",
    "Selection",
    "Zero",
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
