"""Cross-model activation patching (CMAP) for transformers causal LMs, KV-cached.

    from patching import PatchSpec, patched_generate, sweep_generate
    spec = PatchSpec(site="head", layers=[3], heads=[0, 2], positions="newest")
    ids = patched_generate(receiver, donor, input_ids, spec, attention_mask=mask)

`reference` holds the naive definition the engine is tested against.
"""

from .models import AdapterSide, adapter_pair
from .spec import PatchingError, PatchSpec, check_pair, every_layer
from .sweep import check_patch, patched_generate, sweep_generate
from .teacher_forced import ContinuationScores, patched_logprobs

__all__ = [
    "AdapterSide",
    "ContinuationScores",
    "PatchSpec",
    "PatchingError",
    "adapter_pair",
    "check_pair",
    "check_patch",
    "every_layer",
    "patched_generate",
    "patched_logprobs",
    "sweep_generate",
]
