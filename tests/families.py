"""Tiny random models of every decoder family the engine supports, built in the test.

Three blocks, four heads of 16 over two KV heads, and a sliding window of 3 (shorter than
the 5-token test prompt) wherever the family can slide: Mistral, Phi-3 and Qwen3-MoE slide in
every layer, Qwen2 and Qwen3 from layer 1 on, Gemma 2/3 in layers 0 and 2. Gemma models have
untied embeddings: tied ones under Gemma's sqrt(hidden) embedding scale make a random model
repeat its input token, and a test that every patch changes something needs varied replies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers as tf

COMMON: dict[str, Any] = dict(
    vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    initializer_range=0.2, tie_word_embeddings=True, eos_token_id=None, pad_token_id=None,
    bos_token_id=None,
)
WINDOW = 3
ALTERNATING = ["sliding_attention", "full_attention", "sliding_attention"]


@dataclass(frozen=True)
class Family:
    config: type
    model: type
    overrides: dict[str, Any] = field(default_factory=dict)
    slides: bool = False  # some layer attends through a window of WINDOW tokens


FAMILIES: dict[str, Family] = {
    "llama": Family(tf.LlamaConfig, tf.LlamaForCausalLM),
    "mistral": Family(
        tf.MistralConfig, tf.MistralForCausalLM, {"sliding_window": WINDOW}, slides=True
    ),
    "qwen2": Family(
        tf.Qwen2Config, tf.Qwen2ForCausalLM,
        {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
        slides=True,
    ),
    "qwen3": Family(
        tf.Qwen3Config, tf.Qwen3ForCausalLM,
        {"head_dim": 16, "use_sliding_window": True, "sliding_window": WINDOW,
         "max_window_layers": 1},
        slides=True,
    ),
    "qwen3_moe": Family(
        tf.Qwen3MoeConfig, tf.Qwen3MoeForCausalLM,
        {"head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
         "use_sliding_window": True, "sliding_window": WINDOW,
         # transformers' grouped-mm experts take no float64
         "experts_implementation": "eager"},
        slides=True,
    ),
    "phi3": Family(tf.Phi3Config, tf.Phi3ForCausalLM, {"sliding_window": WINDOW}, slides=True),
    "olmo2": Family(tf.Olmo2Config, tf.Olmo2ForCausalLM),
    "gemma2": Family(
        tf.Gemma2Config, tf.Gemma2ForCausalLM,
        {"head_dim": 16, "sliding_window": WINDOW, "layer_types": ALTERNATING,
         "tie_word_embeddings": False},
        slides=True,
    ),
    "gemma3_text": Family(
        tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
        {"head_dim": 16, "sliding_window": WINDOW, "layer_types": ALTERNATING,
         "tie_word_embeddings": False},
        slides=True,
    ),
}


def random_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float64,
                 **overrides: Any) -> Any:
    """A random-init tiny model of `family` (a `config.model_type`), in eval mode."""
    spec = FAMILIES[family]
    torch.manual_seed(seed)
    config = spec.config(**(COMMON | spec.overrides | overrides))
    return spec.model(config).to(dtype).eval()


def random_pair(family: str) -> tuple[Any, Any]:
    """(receiver, donor): the donor shares the embeddings, final norm and block 0, and has
    blocks 1-2 of another seed, so a patch of block 0 changes nothing."""
    receiver = random_model(family, 0)
    donor = copy.deepcopy(receiver)
    other = random_model(family, 1)
    for i in (1, 2):
        donor.model.layers[i].load_state_dict(other.model.layers[i].state_dict())
    return receiver, donor
