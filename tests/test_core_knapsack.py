"""core/knapsack.py: the multiple-choice knapsack, optimal against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtool.core.knapsack import solve


def brute(options, capacity):
    best, best_pick = 0.0, [None] * len(options)
    for pick in itertools.product(*[[None, *range(len(o))] for o in options]):
        cost = sum(options[i][j][0] for i, j in enumerate(pick) if j is not None)
        gain = sum(options[i][j][1] for i, j in enumerate(pick) if j is not None)
        if cost <= capacity + 1e-12 and gain > best + 1e-12:
            best, best_pick = gain, list(pick)
    return best, best_pick


def value(options, pick):
    return sum(options[i][j][1] for i, j in enumerate(pick) if j is not None)


def cost(options, pick):
    return sum(options[i][j][0] for i, j in enumerate(pick) if j is not None)


layer = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 20)), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(st.lists(layer, min_size=1, max_size=5), st.integers(0, 30))
def test_optimal_on_integer_costs_against_brute_force(options, capacity):
    options = [[(float(c), float(g)) for c, g in o] for o in options]
    pick = solve(options, float(capacity), resolution=max(capacity, 1))
    best, _ = brute(options, capacity)
    assert cost(options, pick) <= capacity + 1e-9
    assert value(options, pick) == pytest.approx(best)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 5)), min_size=1, max_size=3), min_size=1,
                max_size=5), st.floats(0.01, 2))
def test_real_costs_never_exceed_the_capacity(options, capacity):
    pick = solve(options, capacity)
    assert cost(options, pick) <= capacity * (1 + 1e-9)
    assert value(options, pick) <= brute(options, capacity)[0] + 1e-9


def test_picks_the_better_option_per_layer_and_leaves_what_does_not_fit():
    options = [[(1.0, 1.0), (2.0, 5.0)], [(3.0, 4.0)], [(10.0, 100.0)]]
    assert solve(options, 5.0, resolution=5) == [1, 0, None]
    assert solve(options, 0.0) == [None, None, None]


def test_free_options_with_gain_are_always_taken_and_no_gain_never():
    assert solve([[(0.0, 2.0)], [(0.0, 0.0)], [(1.0, -1.0)]], 0.0) == [0, None, None]


def test_bad_capacity_and_costs_are_refused():
    with pytest.raises(ValueError):
        solve([[(1.0, 1.0)]], -1.0)
    with pytest.raises(ValueError):
        solve([[(-1.0, 1.0)]], 1.0)
