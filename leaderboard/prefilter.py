"""``prefilter: attribution, top_k: N``: exact autoregressive CMAP on the N best heads only.

A head-level sweep of Qwen3-4B is 1,152 patched evaluations per direction. Attribution
patching (``patching.attribution``) scores every head at once from one forward and backward
pass on related-math questions (log p(corrupted answer) - log p(correct answer), the
corrupted model's greedy answer teacher-forced), and the sweep then runs only the top N.

The questions are the LAST ``PREFILTER_ROWS`` rows of the related-math task file, so a sweep
with ``limit`` below (rows - PREFILTER_ROWS) never evaluates the items the heads were chosen on.
The choice is written to ``<output_dir>/prefilter.json``. The models come from the sweep's
own cache, so they are loaded once for the prefilter and the sweep.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from formats.files import atomic_write_text
from patching.attribution import top_heads
from patching.attribution_data import answer_pair_batch, read_rows

from .config import SweepConfig, SweepConfigError, resolve_indices
from .loading import ModelCache, load_tokenizer, resolve_device

log = logging.getLogger(__name__)
PREFILTER_ROWS = 32

Kept = dict[tuple[int, str], dict[str, set[tuple[int, int]]]]


def prefilter_heads(config: SweepConfig, clean: str, corrupted: dict[str, str], task_dir: Path,
                    n_layers: int, n_heads: int, models: ModelCache | None = None) -> Kept:
    """``kept[(block index, label)][direction]`` = the top_k (layer, head) pairs of each
    prefiltered block (see ``leaderboard.variants.expand``); ``models``: the sweep's cache
    (default: a new one on the config's device)."""
    models = models or ModelCache(resolve_device(config.device), config.dtype)
    tokenizer = load_tokenizer(clean)
    rows = read_rows(task_dir / "data" / "corrupt_related.jsonl", PREFILTER_ROWS, last=True)
    kept: Kept = {}
    record = []
    for i, block in enumerate(config.patches):
        if not block.prefilter:
            continue
        among = {(layer, head) for layer in resolve_indices("layers", block.layers, n_layers)
                 for head in resolve_indices("heads", block.head_spec, n_heads)}
        for label, path in corrupted.items():
            bad = models.get(path)
            batch = answer_pair_batch(tokenizer, bad, rows)
            if batch is None:
                raise SweepConfigError(
                    f"prefilter: corrupted[{label}] answers all {len(rows)} prefilter questions "
                    "correctly, so attribution has nothing to rank; drop the prefilter")
            kept[(i, label)] = {}
            for direction in block.directions:
                pair = (models.get(clean), bad)
                receiver, donor = pair if direction == "corrupted_to_clean" else pair[::-1]
                heads = top_heads(receiver, donor, batch, block.top_k, among=among)
                kept[(i, label)][direction] = set(heads)
                record.append({"block": i, "label": label, "direction": direction,
                               "heads": heads, "questions": len(batch.weights) // 2})
                log.info("prefilter block %d %s %s: heads %s", i, label, direction, heads)
    atomic_write_text(Path(config.output_dir) / "prefilter.json", json.dumps(record, indent=1))
    return kept
