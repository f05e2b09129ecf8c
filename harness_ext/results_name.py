"""The folder ``lm_eval --output_path DIR`` writes a patched run into: named after the patch.

lm-eval names the folder after ``pretrained=`` (``GeneralConfigTracker._get_model_name``), so a
``patched_hf`` run of a clean model and ``--model hf`` of the same model, or two patches of it,
would write into one folder and the later run's files would sit among the earlier one's. For
model args that name a ``corrupted=`` model (only ours take one) the name becomes
``<pretrained>.patched.<spec>.<direction>.from.<corrupted>`` (plus the donor when it is not the
model), e.g. ``models__tiny-qwen3-math.patched.resid__L1.corrupted_to_clean.from.run__model``
once lm-eval has replaced ``/`` and ``:``. lm-eval has no hook for this; the start-up hook
(``harness_ext._autoload``) wraps that one static method.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath
from typing import Any

MAX_NAME = 200
"""Longer names end in a hash instead (a folder name may hold 255 bytes)."""


def _args(model_args: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(model_args, dict):
        return dict(model_args)
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(model_args)


def patched_model_name(model_args: str | dict[str, Any]) -> str | None:
    """The results-folder name of a patched run, or None for args without ``corrupted=`` (and
    for args the model would have refused, which never reach lm-eval's tracker)."""
    from formats.errors import InputError
    from harness_ext.patched_args import take_patch_args

    args = _args(model_args)
    if args.get("corrupted") is None or args.get("pretrained") is None:
        return None
    try:
        patch = take_patch_args(dict(args))
    except InputError:
        return None
    donor = "" if patch.donor.kind == "model" and patch.donor.alpha == 1.0 else (
        f".donor-{patch.donor.kind}" + ("" if patch.donor.alpha == 1.0
                                         else f"-alpha{patch.donor.alpha:g}"))
    corrupted = "/".join(PurePath(str(patch.corrupted)).parts[-2:])
    name = (f"{args['pretrained']}.patched.{str(patch.spec).replace(' ', '')}."
            f"{patch.direction}{donor}.from.{corrupted}")
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[:MAX_NAME - 13]}.{digest}"
    return name
