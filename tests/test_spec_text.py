"""The one text form of a spec: every form the grammar allows parses to what it says, prints back
canonically and round-trips; every malformed text is one line naming the bad piece."""

from __future__ import annotations

import pytest
from transformers import Qwen3Config

from patching import Part, PatchingError, PatchSpec, Positions

# (text, parts as (site, layer, heads), positions, the canonical text)
FORMS = [
    ("resid:L3", [("resid", 3, None)], Positions("newest"), "resid:L3"),
    ("resid:L3@newest", [("resid", 3, None)], Positions("newest"), "resid:L3"),
    ("attn:L3 + mlp:L5 + head:L4.H0,2@steps[4:9]",
     [("attn", 3, None), ("head", 4, (0, 2)), ("mlp", 5, None)], Positions("steps", 4, 9),
     "attn:L3 + head:L4.H0,2 + mlp:L5@steps[4:9]"),
    ("mlp:L5+attn:L3@all", [("attn", 3, None), ("mlp", 5, None)], Positions("all"),
     "attn:L3 + mlp:L5@all"),
    ("head:L4.H2, 0@prompt[-3:]", [("head", 4, (0, 2))], Positions("prompt", -3, None),
     "head:L4.H0,2@prompt[-3:]"),
    ("q:L1.H3 + k:L1.H0 + v:L1.H1@prompt[1:-1]",
     [("q", 1, (3,)), ("k", 1, (0,)), ("v", 1, (1,))], Positions("prompt", 1, -1),
     "q:L1.H3 + k:L1.H0 + v:L1.H1@prompt[1:-1]"),
    ("resid_mid:L2 + mlp:L2 + resid_pre:L2 + resid:L2@steps[:3]",
     [("resid_pre", 2, None), ("resid_mid", 2, None), ("mlp", 2, None), ("resid", 2, None)],
     Positions("steps", None, 3), "resid_pre:L2 + resid_mid:L2 + mlp:L2 + resid:L2@steps[:3]"),
    ("resid:L0@steps[2:]", [("resid", 0, None)], Positions("steps", 2, None),
     "resid:L0@steps[2:]"),
]


@pytest.mark.parametrize(("text", "parts", "positions", "canonical"), FORMS)
def test_a_text_parses_to_what_it_says_and_prints_canonically(text, parts, positions,
                                                              canonical):
    spec = PatchSpec.parse(text)
    assert [(p.site, p.layer, p.heads) for p in spec.parts] == parts
    assert spec.positions == positions
    assert str(spec) == canonical
    assert PatchSpec.parse(str(spec)) == spec  # round trip
    assert PatchSpec.parse(canonical) == spec


def test_the_three_constructors_agree():
    text = PatchSpec.parse("head:L4.H0,2 + head:L5.H0,2@all")
    assert PatchSpec("head", [5, 4], [2, 0], "all") == text
    assert PatchSpec(parts=["head:L5.H0,2", Part("head", 4, (0, 2))], positions="all") == text
    assert hash(text) == hash(PatchSpec("head", [4, 5], [0, 2], Positions("all")))
    assert repr(text) == "PatchSpec('head:L4.H0,2 + head:L5.H0,2@all')"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("resdi:L3", r"^unknown site 'resdi' in part 'resdi:L3'; allowed: resid, attn, mlp, head, "
                     r"resid_pre, resid_mid, q, k, v$"),
        ("attn:L3 + mpl:L5", r"unknown site 'mpl' in part 'mpl:L5' of 'attn:L3 \+ mpl:L5'"),
        ("attn:L3 +", r"has a dangling '\+' at the end; join parts as attn:L3 \+ mlp:L5"),
        ("+ attn:L3", r"has a '\+' with nothing before it"),
        ("attn:L3 + + mlp:L5", r"has two '\+' in a row"),
        ("", r"has no part; write parts such as attn:L3 \+ mlp:L5"),
        ("@all", r"has no part"),
        ("attn:L3@", r"ends in '@'; give positions after it"),
        ("attn:L3@all@newest", r"has more than one @"),
        ("attn:3", r"part 'attn:3' is not SITE:L<layer> or SITE:L<layer>\.H<h>\[,<h>\.\.\.\]"),
        ("attn:L-1", r"part 'attn:L-1' is not SITE:L<layer>"),
        ("head:L4", r"part 'head:L4': site 'head' needs heads=\[\.\.\.\] .*head:L4\.H0,2"),
        ("mlp:L4.H1", r"part 'mlp:L4.H1': heads=\[1\] is only allowed with site 'head' or 'q'"),
        ("head:L4.H1,1", r"part 'head:L4.H1,1': heads has duplicates"),
        ("head:L4.H1,", r"part 'head:L4.H1,' has an empty head"),
        ("mlp:L5 + mlp:L5@all", r"part mlp:L5 is given twice \(mlp:L5 and mlp:L5\); list each "
                                r"site and layer once"),
        ("head:L4.H0 + head:L4.H1", r"part head:L4 is given twice .* \(head:L4.H0,2\)"),
        ("resid:L2 + resid_pre:L3", r"parts resid:L2 and resid_pre:L3 are one tensor"),
        ("attn:L3@last", r"unknown positions 'last'; allowed: newest, all, prompt\[i:j\] or "
                         r"steps\[a:b\]"),
        ("attn:L3@steps[5:2]", r"steps\[5:2\]: an empty or reversed window"),
        ("attn:L3@steps[4:4]", r"steps\[4:4\]: an empty or reversed window"),
        ("attn:L3@steps[-2:]", r"steps count from 0"),
        ("attn:L3@prompt[3:1]", r"prompt\[3:1\]: an empty or reversed window"),
        ("attn:L3@prompt[-1:-3]", r"prompt\[-1:-3\]: an empty or reversed window"),
        ("attn:L3@prompt[1,2]", r"unknown positions 'prompt\[1,2\]'"),
    ],
)
def test_a_malformed_text_is_one_line_naming_the_bad_piece(text, match):
    with pytest.raises(PatchingError, match=match) as info:
        PatchSpec.parse(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("attn:L3 + mlp:L36", r"^layer 36 of part mlp:L36 is out of range for a 36-layer model "
                              r"\(0\.\.35\)$"),
        ("head:L4.H0,32", r"^head 32 of part head:L4.H0,32 is out of range for a model with 32 "
                          r"attention heads \(0\.\.31\)$"),
        ("q:L4.H40", r"head 40 of part q:L4.H40 is out of range for a model with 32 attention"),
        # grouped-query attention: a key or value head is a KV group (TransformerLens #980)
        ("k:L4.H8", r"^head 8 of part k:L4.H8 is out of range: k heads are the model's 8 KV "
                    r"groups \(0\.\.7\), each read by 4 query heads under grouped-query "
                    r"attention$"),
        ("v:L4.H31", r"v heads are the model's 8 KV groups"),
    ],
)
def test_a_part_out_of_the_model_is_one_line(text, match):
    config = Qwen3Config(num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8)
    with pytest.raises(PatchingError, match=match) as info:
        PatchSpec.parse(text).check(config)
    assert "\n" not in str(info.value)
