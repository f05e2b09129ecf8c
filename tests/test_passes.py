"""The pure builders of one forward pass (`patching.passes`), against hand-worked layouts."""

from __future__ import annotations

import pytest
import torch

from patching.effects import position_groups
from patching.passes import (
    STREAM,
    EditRows,
    compact,
    donor_pass,
    layout_order,
    receiver_pass,
)

T = torch.tensor


def test_layout_order_is_latest_joiner_first_and_donor_fed_first_within_a_block():
    entry = T([1, 3, 1, 2, 3])
    fed = T([False, False, True, True, True])
    # block 3: row 4 (fed) then row 1; block 2: row 3; block 1: row 2 (fed) then row 0
    assert layout_order(entry, fed).tolist() == [4, 1, 3, 2, 0]


def test_compact_gives_a_slice_only_for_a_contiguous_ascending_range():
    assert compact(T([2, 3, 4])) == slice(2, 5)
    assert torch.equal(compact(T([2, 4])), T([2, 4]))
    assert torch.equal(compact(T([3, 2])), T([3, 2]))


def test_a_receiver_pass_of_three_patched_rows_and_two_histories():
    """4 layers. Cache rows 0..2 are patched: row 0 joins at the final norm (block 4) fed by
    the donor, row 1 at block 2 from history 1, row 2 at block 1 from history 0; rows 3, 4 are
    the histories, which run blocks < 3."""
    plan = receiver_pass(
        entry=T([4, 2, 1]), fed=T([True, False, False]), history_of=T([0, 1, 0]),
        donor_of=T([1, 0, 0]), histories=2, history_depth=3, layers=4,
        parts=[EditRows((STREAM, 4), T([0])), EditRows(("mlp", 2), T([1, 2]))],
    )
    assert plan.first == (3, 5)
    assert plan.windows == ((3, 5), (2, 5), (1, 5), (1, 3), (0, 3))
    assert plan.starts == (3, 2, 1, 1)
    assert plan.incoming(3) == (1, 5) and plan.incoming(0) == (3, 5)
    assert [j for j in range(5) if plan.reshapes(j)] == [1, 2, 3, 4]
    # block 1: row 2 joins from history 0, the incoming batch's row 0 (cache row 3)
    assert plan.joins[1].fed is None and plan.joins[1].history.tolist() == [0]
    # block 2: row 1 joins from history 1, which is incoming row 2 (cache rows 2..4)
    assert plan.joins[2].history.tolist() == [2]
    # the final norm: row 0 joins fed by donor row 1
    fed = plan.joins[4].fed
    assert fed.rows == slice(0, 1) and fed.source == slice(1, 2)
    assert len(plan.joins[4].history) == 0
    assert set(plan.joins) == {1, 2, 4}
    # edits are in their block's batch: mlp of block 2 runs cache rows 1.., so rows 0 and 1
    assert plan.edits[("mlp", 2)].rows == slice(0, 2)
    assert torch.equal(plan.edits[("mlp", 2)].source, T([0, 0]))
    assert plan.edits[(STREAM, 4)].rows == slice(0, 1)
    # per-row arguments: each patched row shares its history row's, histories their own
    assert plan.source.tolist() == [0, 1, 0, 0, 1]


def test_no_history_rows_run_when_every_row_is_fed():
    plan = receiver_pass(T([2, 2]), T([True, True]), T([0, 0]), T([0, 1]), 1, 0, 3)
    assert plan.windows == (None, None, (0, 2), (0, 2))
    assert plan.joins[2].fed.source == slice(0, 2) and len(plan.joins[2].history) == 0


def test_edits_of_one_key_merge_with_their_masks():
    cols = T([True, False, True, False])
    where = T([[True, False]])
    plan = receiver_pass(
        T([0, 0, 0]), T([False, False, False]), T([0, 0, 0]), T([2, 1, 0]), 1, 1, 1,
        parts=[EditRows(("head", 0), T([0]), cols, where), EditRows(("head", 0), T([2]))],
    )
    edit = plan.edits[("head", 0)]
    assert torch.equal(edit.rows, T([0, 2])) and torch.equal(edit.source, T([2, 0]))
    assert edit.cols.shape == (2, 1, 4)
    assert edit.cols[0, 0].tolist() == cols.tolist() and edit.cols[1, 0].all()
    assert edit.where[..., 0].tolist() == [[True, False], [True, True]]


def test_builders_refuse_an_inconsistent_layout():
    with pytest.raises(ValueError, match="not in layout_order"):
        receiver_pass(T([1, 2]), T([False, False]), T([0, 0]), T([0, 0]), 1, 3, 3)
    with pytest.raises(ValueError, match="does not run block 0"):
        receiver_pass(T([1]), T([False]), T([0]), T([0]), 1, 3, 3,
                      parts=[EditRows(("mlp", 0), T([0]))])


def test_a_donor_pass_drops_rows_after_their_depth():
    plan = donor_pass(T([3, 1, 1, 0]), layers=3)
    assert plan.windows == ((0, 3), (0, 1), (0, 1), None)
    assert plan.first == (0, 4)


@pytest.mark.parametrize(
    ("rows", "pass_cost", "groups"),
    [
        (100, 1, [[0], [1], [2], [3]]),  # a pass is cheap: one per position
        (1, 10_000, [[0, 1, 2, 3]]),  # a pass is dear: one for all
        (10, 25, [[0, 1], [2, 3]]),  # hand-worked below
    ],
)
def test_position_groups_minimise_the_cost(rows, pass_cost, groups):
    """Positions 0..3 of 10 query slots; a pass for p..q costs pass_cost + rows x (number of
    positions) x (10 - p). With rows 10, cost 25: {0,1}+{2,3} = 25+200 + 25+160 = 410 beats
    four passes (100+90+80+70 + 100 = 440) and {0,1,2,3} (25+400 = 425)."""
    assert position_groups([3, 1, 0, 2], rows, 10, pass_cost) == groups
