"""Three localisations side by side (``repair.localise``): layers scored by each method, the
last block left out, top layers, Spearman's rho and the sentence, on hand-made scores."""

from __future__ import annotations

import pytest

from repair.localise import agreement_sentence, localise, position


def test_scores_by_layer_leave_out_the_last_block_and_unscored_layers() -> None:
    patching = {"block:L0": 0.1, "block:L1": 0.2, "block:L2": 0.9, "block:L3": 1.0}
    weights = {f"block:L{i}": w for i, w in enumerate([0.05, 0.02, 0.01, 0.01])}
    restore = {"block:L0": 0.8, "block:L2": 0.1}
    loc = localise("block", 4, patching, weights, restore)
    assert loc.layers == (0, 1, 2, 3)
    assert loc.scores["patching"] == (0.1, 0.2, 0.9, None)  # L3's resid: by construction
    assert loc.scores["restore"] == (0.8, None, 0.1, None)
    assert (loc.top("patching"), loc.top("weights"), loc.top("restore")) == (2, 0, 0)
    assert loc.rho("patching", "weights") == pytest.approx(-1.0)  # ranks 1,2,3 vs 3,2,1.5
    assert loc.rho("weights", "restore") is None  # two layers in common: too few
    mlp = localise("mlp", 4, {}, {f"mlp:L{i}": 0.1 * i for i in range(4)}, {})
    assert mlp.layers == (0, 1, 2, 3) and mlp.top("weights") == 3 and mlp.top("patching") is None
    assert localise("attn", 2, {"attn:L0": 0.3, "attn:L1": 0.3}, {}, {}).top("patching") is None
    with pytest.raises(ValueError, match="kind 'head'"):
        localise("head", 4, {}, {}, {})


def test_the_sentence_says_where_the_methods_agree() -> None:
    assert position(0, 6) == "early" and position(3, 6) == "middle" and position(5, 6) == "late"
    text = agreement_sentence({"patching": 4, "weights": 0, "restore": 0}, 6, "block")
    assert text == ("Among blocks, activation patching flips related math most at L4 (late), "
                    "while the weights moved most and restoring the clean weights helps most "
                    "at L0 (early).")
    assert agreement_sentence({"patching": 2, "weights": 2, "restore": 2}, 6, "mlp") == \
        "Among MLP paths, all three methods agree on L2 (middle)."
    assert agreement_sentence({"patching": None, "weights": 1, "restore": None}, 6,
                              "attn").endswith("; activation patching and restoring single "
                                               "out no layer.")
