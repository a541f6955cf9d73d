"""core/decide.py: the latency decision rule, as arithmetic on injected timings (no test asserts
that anything is faster)."""

from __future__ import annotations

import pytest
from builders import noisy

from convtool.core.decide import paired_interval, verdict


def test_clearly_faster_converts():
    v = verdict(noisy(2.0), noisy(1.0, seed=1), margin=0.05, what="at rank 1")
    assert v.convert
    assert v.speedup == pytest.approx(2.0, rel=0.1)
    assert v.ci_low > 1.0
    assert v.reason.startswith("replacement ") and "x faster at rank 1 (measured" in v.reason


def test_clearly_slower_keeps_with_reason():
    v = verdict(noisy(1.0), noisy(1.31, seed=1), margin=0.05, what="at rank 2")
    assert not v.convert
    assert v.ci_high < 1.0
    assert v.reason.startswith("replacement 1.3") and "slower at rank 2 (measured" in v.reason


def test_within_noise_keeps():
    a = noisy(1.0, spread=0.3)
    b = noisy(0.98, spread=0.3, seed=5)
    v = verdict(a, b, margin=0.05)
    assert not v.convert
    assert "noise" in v.reason


def test_below_margin_keeps_even_when_consistent():
    a = [1.03] * 30
    b = [1.0] * 30
    v = verdict(a, b, margin=0.05)
    assert v.ci_low > 1.0 and not v.convert
    assert verdict(a, b, margin=0.01).convert


def test_bimodal_original_does_not_fool_the_rule():
    # the original is fast half the time, slow the other half (a 2-thread bimodal session):
    # the replacement beats it only in the slow half -> not above noise
    a = [1.0, 3.0] * 20
    b = [1.5] * 40
    v = verdict(a, b, margin=0.05)
    assert not v.convert


def test_cached_source_is_said():
    v = verdict(noisy(2.0), noisy(1.0, seed=1), margin=0.05, source="cached")
    assert "(cached:" in v.reason


def test_paired_interval_orders_and_covers():
    low, high = paired_interval([2.0] * 10, [1.0] * 10)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    low, high = paired_interval(noisy(2.0, n=100), noisy(1.0, n=100, seed=3))
    assert low < 2.0 < high
    with pytest.raises(ValueError):
        paired_interval([1.0], [1.0, 2.0])
