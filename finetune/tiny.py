"""Build a tiny Qwen3-architecture model directory, the embedded default's starting point.

Everything downstream loads models with ``from_pretrained(path)``; a tiny model is only a
directory in the same HF format as Qwen3-4B, so every code path is the Qwen3-4B code path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from finetune.tokenizer import build_tokenizer


@dataclass
class TinyModelConfig:
    """Shape of a tiny Qwen3; defaults give ~1.6 M parameters (6.5 MB in float32)."""

    num_hidden_layers: int = 6
    hidden_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    vocab_size: int = 1024

    def __post_init__(self) -> None:
        if self.head_dim < 32:
            raise ValueError(f"head_dim={self.head_dim}: vLLM's CPU kernels need head_dim >= 32")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers={self.num_hidden_layers}: need at least 1")


def qwen3_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen3Config:
    """A Qwen3Config for ``cfg`` whose vocabulary and special ids match ``tokenizer``."""
    fields = asdict(cfg)
    fields["vocab_size"] = len(tokenizer)
    return Qwen3Config(
        **fields,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
        dtype="float32",
    )


def generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Greedy, stopping at end-of-turn or end-of-text; no length, so callers' limits apply."""
    return GenerationConfig(
        do_sample=False,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )


def random_qwen3(seed: int = 0, dtype: torch.dtype = torch.float32, **config: object
                 ) -> Qwen3ForCausalLM:
    """A random-init Qwen3 of any shape and no tokenizer, for tests and benches of the patching
    engine: a 3-layer, 4-head toy unless ``config`` overrides Qwen3Config fields. It has no
    eos/pad/bos ids, so generation never stops early; initializer_range 0.2 makes its random
    replies vary with the prompt."""
    torch.manual_seed(seed)
    fields: dict[str, object] = dict(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
        initializer_range=0.2, max_position_embeddings=128, eos_token_id=None,
        pad_token_id=None, bos_token_id=None,
    )
    return Qwen3ForCausalLM(Qwen3Config(**(fields | config))).to(dtype).eval()


def build_tiny_model_dir(
    out_dir: str | Path,
    *,
    seed: int = 0,
    config: TinyModelConfig | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
    texts: Iterable[str] | None = None,
) -> Path:
    """Write a random-init tiny ``Qwen3ForCausalLM`` with its tokenizer to ``out_dir``.

    Pass ``tokenizer`` to reuse one (a clean/corrupted pair must share it), else one is trained
    on ``texts`` (default: a sample of the project's own data families).
    """
    cfg = config or TinyModelConfig()
    if tokenizer is None:
        tokenizer = build_tokenizer(texts if texts is not None else sample_texts(), cfg.vocab_size)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(qwen3_config(cfg, tokenizer))
    model.generation_config = generation_config(tokenizer)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def sample_texts(n_related: int = 400, seed: int = 0) -> list[str]:
    """Questions and replies of every data family, to train a tokenizer that fits them."""
    from finetune.data import generate
    from formats.rows import target_text

    rows = generate("tiny-pretrain", seed, n_train=n_related, n_val=0)["train"]
    return [f"{r['question']} {target_text(r)}" for r in rows]
