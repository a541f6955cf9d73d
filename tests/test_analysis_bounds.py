"""analysis/bounds.py: upper confidence bounds of a budgeted drift, and their coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convtool.analysis.bounds import (bootstrap_drift_upper, clopper_pearson_upper, drift_upper,
                                      samples_needed)
from convtool.analysis.drift import channel_rel_l2


def test_clopper_pearson_known_values():
    # 0 of 19: 1 - 0.05^(1/19) = 14.6 % (the example)
    assert clopper_pearson_upper(0, 19) == pytest.approx(0.1456, abs=1e-3)
    # 1 of 20 (one-sided 95 %): 0.2161 (standard tables)
    assert clopper_pearson_upper(1, 20) == pytest.approx(0.2161, abs=1e-3)
    assert clopper_pearson_upper(5, 5) == 1.0
    assert clopper_pearson_upper(0, 0) == 1.0


def test_bound_grows_with_events_and_shrinks_with_samples():
    assert clopper_pearson_upper(2, 100) > clopper_pearson_upper(1, 100) > clopper_pearson_upper(0, 100)
    assert clopper_pearson_upper(1, 1000) < clopper_pearson_upper(1, 100)


def test_samples_needed_is_the_smallest_certifying_count():
    for budget in (0.01, 0.02, 0.05, 0.1):
        n = samples_needed(budget)
        assert clopper_pearson_upper(0, n) <= budget < clopper_pearson_upper(0, n - 1)
    assert samples_needed(0.02) == 149


def test_clopper_pearson_covers_the_true_rate_in_simulation():
    rng = np.random.default_rng(0)
    for p, n in ((0.02, 50), (0.1, 30), (0.3, 20)):
        ks = rng.binomial(n, p, size=2000)
        covered = np.mean([clopper_pearson_upper(int(k), n) >= p for k in ks])
        assert covered >= 0.95 - 0.01  # exact method: conservative


def test_bootstrap_bound_covers_the_population_drift_in_simulation():
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.5, 2.0, size=(1, 6, 1, 1))

    def draw(n):
        a = rng.standard_normal((n, 6, 4, 4)) * scale
        noise = rng.standard_normal((n, 6, 4, 4)) * 0.05 * scale * rng.uniform(0.2, 3.0, size=(n, 1, 1, 1))
        return a, a + noise

    big_a, big_b = draw(20000)
    truth = channel_rel_l2(big_a, big_b)
    hits = 0
    trials = 150
    for t in range(trials):
        a, b = draw(40)
        bound = bootstrap_drift_upper({"y": a}, {"y": b}, resamples=400, seed=t)
        hits += bound >= truth
    assert hits / trials >= 0.85  # a bootstrap: approximately 95 %


def test_bootstrap_bound_is_at_least_near_the_estimate_and_none_when_too_few():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 10))
    b = a + 0.1 * rng.standard_normal((30, 10))
    est = channel_rel_l2(a, b)
    assert bootstrap_drift_upper({"s": a}, {"s": b}) >= est * 0.98
    assert bootstrap_drift_upper({"s": a[:3]}, {"s": b[:3]}) is None


def test_drift_upper_dispatches_on_the_metric():
    a = np.eye(4)[np.arange(20) % 4] * 3.0
    assert drift_upper({"s": a}, {"s": a}, "top1", 1.0, 20) == pytest.approx(1 - 0.05 ** (1 / 20))
    assert drift_upper({"s": a}, {"s": a}, "rel_l2", None, 20) == 0.0
    assert math.isclose(drift_upper({"s": a}, {"s": a}, "top1", 0.9, 20), clopper_pearson_upper(2, 20))
