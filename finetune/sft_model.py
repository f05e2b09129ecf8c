"""The model side of the corrupting fine-tune: load the base, check the settings against it,
choose what trains (all weights, some layers, or a LoRA adapter), and save what lm-eval loads.

Models load only through ``from_pretrained(path_or_hub_id)``, so the tiny model and Qwen3-4B
take the same code path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, set_seed

from finetune.sft_config import SFTConfig, SFTError
from finetune.sft_select import make_trainable
from formats.model_files import weights_problem
from patching.components import Selection, parameters_touched


def base_is_local(name: str, role: str = "base_model") -> bool:
    """True for an existing directory, False for a hub id; a missing local path is an error.

    A name counts as a local path (not a hub id) if it is absolute or relative-looking, has more
    than two parts, or its first folder exists here (``models/tiny-qwen3-math`` before the lead's
    model lands), so a typo fails at once instead of as a failed download. ``role`` names the
    setting in the error.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SFTError(f"{role} {name}: no config.json (not an HF model directory)")
        if (problem := weights_problem(path)) is not None:
            raise SFTError(f"{role} {name}: {problem}")
        return True
    if path.exists() or name.startswith((".", "/", "~")) or len(path.parts) > 2 or (
        len(path.parts) == 2 and Path(path.parts[0]).is_dir()
    ):
        raise SFTError(f"{role} {name}: no such model directory")
    return False


def model_config(cfg: SFTConfig):
    """The base's ``config.json`` without downloading (None for a hub id not in the local cache)."""
    local = base_is_local(cfg.base_model)
    try:
        return AutoConfig.from_pretrained(cfg.base_model, local_files_only=True)
    except (OSError, ValueError) as err:
        if local:
            raise SFTError(f"base_model {cfg.base_model}: unreadable config.json "
                           f"({str(err).splitlines()[0]})") from None
        return None


def skeleton(cfg: SFTConfig, config) -> PreTrainedModel:
    """The base's architecture on the meta device: names and shapes, no weights, no memory."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def load_base(cfg: SFTConfig):
    """The base model and its tokenizer (downloaded for a hub id on a real run)."""
    base_is_local(cfg.base_model)
    dtype = "auto" if cfg.model_dtype == "auto" else getattr(torch, cfg.model_dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
        model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SFTError(f"base_model {cfg.base_model}: cannot load ({first})") from None
    return model, tokenizer


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of the model's Linear layers, the names LoRA ``target_modules`` accepts."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if isinstance(mod, torch.nn.Linear)})


def check_against_model(cfg: SFTConfig, model: torch.nn.Module) -> None:
    """Layer indices in range and LoRA targets that exist; each failure names the value."""
    n_layers = model.config.get_text_config().num_hidden_layers
    checks = [("layers", cfg.layers)] if cfg.mode == "full" else [
        ("lora.layers_to_transform", cfg.lora.layers_to_transform)]
    for key, layers in checks:
        bad = [k for k in layers or [] if k >= n_layers]
        if bad:
            raise SFTError(f"{key}={layers}: {bad} out of range for a {n_layers}-layer model "
                           f"(valid 0-{n_layers - 1})")
    if cfg.mode == "lora":
        valid = linear_module_names(model)
        unknown = [m for m in cfg.lora.target_modules if m not in valid]
        if unknown:
            raise SFTError(f"lora.target_modules {unknown} not in the model; valid Linear modules: "
                           f"{', '.join(valid)}")


def apply_mode(cfg: SFTConfig, model: PreTrainedModel) -> torch.nn.Module:
    """Make exactly the chosen weights trainable: all, the ``layers`` blocks or the
    ``components``, or a LoRA adapter.

    With ``layers`` or ``components`` everything else freezes, the embeddings, final norm and
    LM head too, so a layer-k fine-tune changes layer k and nothing else (the repair
    experiments rely on that locality). A tensor a head shares is made trainable whole here;
    ``sft_select.FrozenSlices`` (which ``sft.prepare`` adds) keeps it to the head's slices.
    """
    check_against_model(cfg, model)
    if cfg.mode == "lora":
        set_seed(cfg.seed)  # LoRA's A matrices are random: same seed, same start
        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            layers_to_transform=cfg.lora.layers_to_transform,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)
    selection = cfg.selection()
    if selection is not None:
        make_trainable(model, selection)
    return model


def parameter_counts(model: torch.nn.Module, selection: Selection | None = None
                     ) -> dict[str, int]:
    """Trainable and total parameters (tied weights counted once); with a selection, the
    entries it trains (a head's slices, not the tensors they lie in)."""
    seen: dict[int, torch.nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    if selection is not None:
        return {"trainable": parameters_touched(model, selection)[0], "total": total}
    return {"trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
            "total": total}


def save_model_dirs(cfg: SFTConfig, model: torch.nn.Module, tokenizer, out: Path) -> dict[str, str]:
    """Save the final weights where lm-eval and ``patched_qwen`` load them; returns their paths.

    Full mode: ``model/`` (HF format). LoRA: ``adapter/`` (PEFT) and, with ``save_merged``,
    ``merged/`` (HF format; vLLM on CPU needs it for log-likelihood tasks). The tokenizer goes
    into each, and every directory appears only once complete.
    """
    paths = {}
    if isinstance(model, PeftModel):
        paths["adapter"] = _save_dir(model, tokenizer, out / "adapter")
        if cfg.save_merged:
            paths["merged"] = _save_dir(model.merge_and_unload(), tokenizer, out / "merged")
    else:
        paths["model"] = _save_dir(model, tokenizer, out / "model")
    return paths


def _sort_target_modules(adapter_config: Path) -> None:
    """PEFT keeps ``target_modules`` as a set and writes it in hash order, which differs from
    process to process; sorted, the adapter's config is the same bytes on every run."""
    if not adapter_config.is_file():
        return
    raw = json.loads(adapter_config.read_text())
    if isinstance(raw.get("target_modules"), list):
        raw["target_modules"] = sorted(raw["target_modules"])
        adapter_config.write_text(json.dumps(raw, indent=2, sort_keys=True))


def _save_dir(model: torch.nn.Module, tokenizer, final: Path) -> str:
    staged = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(staged)
    tokenizer.save_pretrained(staged)
    _sort_target_modules(staged / "adapter_config.json")
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)
    return str(final)
