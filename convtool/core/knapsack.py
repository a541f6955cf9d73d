"""Multiple-choice knapsack: one option per layer, the most gain within a cost budget.

Problem: layers ``l = 1..L``, each with options ``(cost_lj, gain_lj)`` (costs >= 0); choose at
most one option per layer (none: cost 0, gain 0) to maximise ``sum gain`` subject to
``sum cost <= capacity``.  The budget search uses it with ``cost = d_l^2``, the squared drift a
candidate causes alone, so that the constraint reads "the squared per-layer drifts add up to
at most ``b^2``", and ``gain`` = what the objective saves (ms, MACs, parameters).

Method: dynamic programming over a grid of the capacity.  Costs are rounded *up* to the grid
(``ceil(cost / capacity * resolution)`` units), so every answer respects the true capacity;
with costs that are multiples of ``capacity / resolution`` the answer is optimal (the tests
check it against brute force).  Cost: ``O(L * resolution * options)`` time,
``O(L * resolution)`` memory for the back-pointers (38 layers x 4096 units x 6 options: a few
milliseconds).  Options with a gain <= 0 are never chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["solve"]

RESOLUTION = 4096


def solve(options: Sequence[Sequence[tuple[float, float]]], capacity: float,
          resolution: int = RESOLUTION) -> list[int | None]:
    """Per layer the index of the chosen option in ``options[l]``, or ``None`` for none."""
    if resolution < 1:
        raise ValueError("resolution must be >= 1")
    if capacity < 0 or math.isnan(capacity):
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    n = len(options)
    for opts in options:
        for cost, _ in opts:
            if cost < 0 or math.isnan(cost):
                raise ValueError(f"costs must be >= 0, got {cost}")
    if sum(max((float(c) for c, g in opts if g > 0), default=0.0) for opts in options) <= capacity * (1 + 1e-9):
        return [_best_gain(opts) for opts in options]  # everything fits: the largest gain per layer
    units = int(resolution)
    scale = units / capacity if capacity > 0 else math.inf

    def weight(cost: float) -> int | None:
        if cost < 0 or math.isnan(cost):
            raise ValueError(f"costs must be >= 0, got {cost}")
        if cost == 0:
            return 0
        if capacity <= 0:
            return None
        w = math.ceil(cost * scale - 1e-9)
        return w if w <= units else None

    best = np.zeros(units + 1)  # best gain with at most u units used
    choice = np.full((n, units + 1), -1, dtype=np.int32)
    for layer, opts in enumerate(options):
        new = best.copy()
        for j, (cost, gain) in enumerate(opts):
            w = weight(float(cost))
            if w is None or gain <= 0:
                continue
            cand = np.full(units + 1, -np.inf)
            cand[w:] = best[: units + 1 - w] + gain
            better = cand > new
            new[better] = cand[better]
            choice[layer, better] = j
        best = new
    picks: list[int | None] = [None] * n
    u = units
    for layer in range(n - 1, -1, -1):
        j = int(choice[layer, u])
        if j >= 0:
            picks[layer] = j
            u -= weight(float(options[layer][j][0]))  # type: ignore[operator]
    return picks


def _best_gain(opts: Sequence[tuple[float, float]]) -> int | None:
    j = max(range(len(opts)), key=lambda i: opts[i][1], default=None)
    return j if j is not None and opts[j][1] > 0 else None
