"""Mean activations over a dataset: the `Mean` donor, computed once and cached on disk.

    mean = mean_activations(model, input_ids, attention_mask, cache_dir="runs/means")
    patched_generate(model, mean, prompts, "mlp:L4@all")   # mean ablation

The mean of a site is over every real token of every row (padding left out), one vector per
(site, layer). The cache file is named by a fingerprint of the dataset's tokens, the model
(its config, a strided sample of every weight, an adapter's on/off state) and the sites, and
holds that fingerprint in its metadata: a changed dataset or model computes anew, an unchanged
one loads in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from formats.files import atomic_write

from .architectures import SITE_NAMES, site_named
from .batch import prepare
from .donors import Mean
from .errors import PatchingError
from .hooks import Key, capturing
from .models import AdapterSide, as_runner

SAMPLES_PER_WEIGHT = 4096  # elements of each weight the model fingerprint reads


def model_fingerprint(model: Any) -> str:
    """A digest of a model argument: config, a strided sample of every parameter, adapter state."""
    runner = as_runner(model)
    digest = hashlib.sha256(runner.config.to_json_string().encode())
    if isinstance(model, AdapterSide):
        digest.update(f"adapter enabled={model.enabled}".encode())
    with torch.no_grad():
        for name, param in runner.lm.named_parameters():
            flat = param.detach().flatten()
            sample = flat[:: max(1, flat.numel() // SAMPLES_PER_WEIGHT)]
            digest.update(name.encode())
            digest.update(sample.to(device="cpu", dtype=torch.float32).numpy().tobytes())
    return digest.hexdigest()


def dataset_fingerprint(input_ids: Tensor, attention_mask: Tensor | None) -> str:
    """A digest of the real tokens of every row, in order."""
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None \
        else attention_mask.bool()
    digest = hashlib.sha256()
    for row, keep in zip(input_ids.cpu(), mask.cpu(), strict=True):
        digest.update(row[keep].to(torch.int64).numpy().tobytes())
        digest.update(b"|")
    return digest.hexdigest()


@torch.inference_mode()
def mean_activations(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    sites: Sequence[str] | None = None,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> Mean:
    """The mean of every layer of `sites` (default: all) over the real tokens of the rows."""
    sites = list(SITE_NAMES if sites is None else sites)
    for site in sites:
        site_named(site)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PatchingError(f"batch_size must be an int >= 1, got {batch_size!r}")
    runner = as_runner(model)
    prompts = prepare(input_ids, attention_mask, runner.device)
    fingerprint = hashlib.sha256(json.dumps([
        model_fingerprint(model), dataset_fingerprint(input_ids, attention_mask), sites,
    ]).encode()).hexdigest()
    path = None if cache_dir is None else Path(cache_dir) / f"mean-{fingerprint[:20]}.safetensors"
    if path is not None and path.is_file():
        with safe_open(str(path), framework="pt") as cached:
            if (cached.metadata() or {}).get("fingerprint") == fingerprint:
                return Mean({_key(n): cached.get_tensor(n) for n in cached.keys()}, fingerprint)
    keys = [(site, layer) for site in sites for layer in range(runner.config.num_hidden_layers)]
    sums: dict[Key, Tensor] = {}
    count = 0
    acts: dict[Key, Tensor] = {}
    for start in tqdm(range(0, len(prompts.ids), batch_size), disable=not progress,
                      desc="mean activations"):
        ids = prompts.ids[start:start + batch_size]
        mask = prompts.mask[start:start + batch_size]
        with runner.context(), capturing(runner.lm, runner.arch, keys, acts):
            runner.lm(input_ids=ids, attention_mask=mask.long(),
                      position_ids=prompts.positions[start:start + batch_size], use_cache=False)
        for key, act in acts.items():
            total = act.double()[mask].sum(dim=0)  # (width,) over real tokens
            sums[key] = total if key not in sums else sums[key] + total
        count += int(mask.sum())
    means = {key: (total / count).to(runner.dtype).cpu() for key, total in sums.items()}
    if path is not None:
        tensors = {f"{site}:L{layer}": v.contiguous() for (site, layer), v in means.items()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp),
                                                 metadata={"fingerprint": fingerprint}))
    return Mean(means, fingerprint)


def _key(name: str) -> Key:
    site, layer = name.rsplit(":L", 1)
    return site, int(layer)
