"""The sweep's memory plan, against hand computations."""

from __future__ import annotations

from types import SimpleNamespace

from study.memory_plan import HEADROOM, PROMPT_TOKENS, kv_bytes_per_token, placement, sweep_need

QWEN3_4B = SimpleNamespace(num_hidden_layers=36, num_key_value_heads=8, head_dim=128,
                           hidden_size=2560, num_attention_heads=32)


def test_qwen3_4b_kv_bytes_and_sweep_need_by_hand() -> None:
    # keys and values x 36 layers x 8 KV heads x 128 dims x 2 bytes (bf16) = 147,456 bytes
    assert kv_bytes_per_token(QWEN3_4B, 2) == 147_456
    need = sweep_need(4_022_468_096, 2, 147_456, batch_size=64, together=4, new_tokens=64)
    assert need.rows == 3 * 4 * 64 + 64  # receiver rows of 4 variants + the donor's
    assert need.tokens == PROMPT_TOKENS + 64
    assert need.weights == 2 * 4_022_468_096 * 2
    assert need.cache == 832 * 320 * 147_456
    assert need.total == int((need.weights + need.cache) * HEADROOM)


def test_placement_fits_one_device_or_says_what_splitting_would_take() -> None:
    need = sweep_need(10**9, 2, 1000, 8, 1, 64)  # 4 GB of weights, ~10 MB of cache
    assert placement(need, [("H100", 80 * 10**9)]) == ("fits on one H100 (80.0 GB)", True)
    text, fits = placement(need, [("L4", 3 * 10**9)] * 2)
    assert not fits and "DOES NOT FIT on one L4" in text and "2.4 GB per device" in text
    text, fits = placement(need, [("CPU", 10**9)])
    assert not fits and "lower batch_size or generate_together" in text
