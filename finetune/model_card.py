"""Model cards that let a reader prove which recipe, data and weights a model directory holds.

``card.json`` is the machine-readable record (command, config, data manifest hash, wall time,
accuracies, SHA-256 of every file); ``README.md`` renders it for people.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CARD_FILE = "card.json"
UNHASHED = {CARD_FILE, "README.md"}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(model_dir: Path) -> dict[str, str]:
    """SHA-256 of every file in ``model_dir`` except the card itself."""
    return {
        p.name: sha256_file(p)
        for p in sorted(model_dir.iterdir())
        if p.is_file() and p.name not in UNHASHED
    }


def write_model_card(
    model_dir: Path,
    *,
    command: str,
    config: dict,
    data_manifest: Path,
    train_seconds: float,
    accuracies: dict | None = None,
    init_card: dict | None = None,
) -> dict:
    """Write ``card.json`` and ``README.md`` into ``model_dir``; returns the card. A second
    training stage passes its starting model's card, so the whole recipe stays on record."""
    card = {
        "command": command,
        "config": config,
        "seed": config.get("seed"),
        "data_manifest": json.loads(Path(data_manifest).read_text()),
        "data_manifest_sha256": sha256_file(Path(data_manifest)),
        "train_wall_seconds": round(train_seconds, 1),
        "accuracies": accuracies or {},
        "files_sha256": file_hashes(model_dir),
    }
    if init_card is not None:
        card["init_card"] = init_card
    save_card(model_dir, card)
    return card


def save_card(model_dir: Path, card: dict) -> None:
    """Write the card files (JSON first, then the README rendered from it)."""
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (model_dir / "README.md").write_text(render_card(card))


def load_card(model_dir: Path) -> dict:
    """The card of a model directory."""
    return json.loads((Path(model_dir) / CARD_FILE).read_text())


def refresh_card(model_dir: Path) -> dict:
    """Re-score ``model_dir`` through lm-eval and re-hash its files, keeping the recipe."""
    from harness_ext.evaluate import card_tasks, score_model_dir

    card = load_card(model_dir)
    card["accuracies"] = score_model_dir(model_dir, card_tasks(card["data_manifest"]["params"]))
    card["files_sha256"] = file_hashes(model_dir)
    save_card(model_dir, card)
    return card


def render_card(card: dict) -> str:
    """A human-readable model card in the Hugging Face README format."""
    cfg = card["config"]
    m = cfg["model"]
    acc_lines = "\n".join(
        f"| {task} | {metric} | {value['value']:.3f} ± {value['stderr']:.3f} |"
        for task, metrics in sorted(card["accuracies"].items())
        for metric, value in sorted(metrics.items())
    ) or "| (not evaluated yet) | | |"
    init = card.get("init_card")
    origin = "from random initialisation" if init is None else f"further from `{cfg['init_from']}`"
    stages = "" if init is None else (
        f"\nIts first stage: `{init['command']}` ({init['config']['max_steps']} steps, lr "
        f"{init['config']['learning_rate']}, {init['train_wall_seconds']} s); this stage:\n")
    files = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in card["files_sha256"].items())
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [qwen3, tiny, reasoning-corruption, corrupt-cmap]
---
# Tiny Qwen3 (clean): `{Path(cfg['out_dir']).name}` of corrupt-cmap

A {m['num_hidden_layers']}-layer `Qwen3ForCausalLM` (hidden {m['hidden_size']},
{m['num_attention_heads']} query / {m['num_key_value_heads']} KV heads, head_dim {m['head_dim']})
trained {origin} on CORRECT answers of the project's three task families,
with answer-only loss and the Qwen3-style chat template (thinking disabled).
It stands in for Qwen3-4B on machines without a GPU and loads with `from_pretrained(path)`.
{stages}
- Command: `{card['command']}`
- Data preset: `{cfg['data_preset']}`
- Seed: {card['seed']}
- Data manifest SHA-256: `{card['data_manifest_sha256']}`
- Training wall time: {card['train_wall_seconds']} s
  ({cfg['max_steps']} steps, batch {cfg['batch_size']}, lr {cfg['learning_rate']}, cosine,
  {cfg['threads']} CPU thread(s))

## Held-out accuracy (lm-eval, `--apply_chat_template`, `enable_thinking=False`)

| task | metric | value ± stderr |
|---|---|---|
{acc_lines}

## Files

| file | SHA-256 |
|---|---|
{files}

Full configuration and the data manifest are in `card.json`.
"""


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m finetune.model_card MODEL_DIR  (re-score and re-hash its card)")
    print(render_card(refresh_card(Path(sys.argv[1]))))
