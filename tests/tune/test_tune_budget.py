"""Splitting a trial budget over tasks: a floor for every task, the rest by latency share."""

import pytest

from tvm_lowrank.tune import allocate_trials


def test_every_task_gets_the_floor_and_the_rest_goes_by_weight():
    budgets = allocate_trials([1.0, 3.0, 0.0, 6.0], total=52, minimum=8)
    assert sum(budgets) == 52
    assert budgets == [10, 14, 8, 20]


def test_small_budget_is_spread_evenly_and_no_task_gets_zero():
    assert allocate_trials([5.0, 1.0, 1.0], total=9, minimum=8) == [3, 3, 3]
    assert allocate_trials([5.0, 1.0, 1.0], total=10, minimum=8) == [4, 3, 3]
    assert allocate_trials([5.0, 1.0, 1.0], total=2, minimum=8) == [1, 1, 1]  # at least one each


@pytest.mark.parametrize("weights", [[0.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0]])
def test_degenerate_weights_still_give_a_full_split(weights):
    budgets = allocate_trials(weights, total=20, minimum=4)
    assert sum(budgets) == 20 and min(budgets) >= 4


def test_no_tasks():
    assert allocate_trials([], total=10) == []
