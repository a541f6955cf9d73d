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


# --- one statistic: the point estimate never leaves its own interval ------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from convtool.core.decide import pocock_z, resolved, speedup  # noqa: E402

_ms = st.floats(min_value=1e-4, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def _paired(draw):
    n = draw(st.integers(1, 80))
    a = draw(st.lists(_ms, min_size=n, max_size=n))
    b = draw(st.lists(_ms, min_size=n, max_size=n))
    rounds = draw(st.one_of(st.none(), st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    return a, b, rounds, draw(st.integers(1, 12))


@settings(max_examples=300, deadline=None)
@given(_paired(), st.floats(0.0, 0.5))
def test_no_speedup_is_ever_outside_its_own_interval(drawn, margin):
    a, b, rounds, looks = drawn
    s = speedup(a, b, rounds=rounds, looks=looks)
    assert s.ci_low <= s.speedup <= s.ci_high
    v = verdict(a, b, margin=margin, rounds=rounds, looks=looks)
    assert (v.speedup, v.ci_low, v.ci_high) == (s.speedup, s.ci_low, s.ci_high)
    assert v.ci_low <= v.speedup <= v.ci_high
    assert v.resolved == resolved(a, b, margin=margin, rounds=rounds, looks=looks)
    assert not (v.convert and not v.resolved)
    if not v.resolved:
        assert v.reason.startswith(f"not resolved at {len(a)} runs")


@settings(max_examples=100, deadline=None)
@given(_paired())
def test_rounds_and_looks_only_widen_the_interval(drawn):
    a, b, rounds, looks = drawn
    plain = speedup(a, b)
    clustered = speedup(a, b, rounds=rounds if rounds is not None else list(range(len(a))), looks=looks)
    assert clustered.speedup == plain.speedup
    assert clustered.ci_low <= plain.ci_low and clustered.ci_high >= plain.ci_high


def test_the_statistic_is_the_median_of_paired_log_ratios():
    a = [1.0, 2.0, 4.0, 1.0, 3.0]
    b = [1.0, 1.0, 1.0, 2.0, 1.0]  # ratios 1, 2, 4, 0.5, 3: median 2 (a ratio of medians would say 2 / 1 = 2 too)
    assert speedup(a, b).speedup == pytest.approx(2.0)
    a, b = [1.0, 1.0, 10.0], [2.0, 0.5, 1.0]  # ratios 0.5, 2, 10 -> 2; ratio of medians 1 / 1 = 1
    assert speedup(a, b).speedup == pytest.approx(2.0)


def test_exact_sign_test_interval_small_n():
    logs = list(range(1, 21))  # 20 pairs: the exact 95 % sign-test interval is [l_(6), l_(15)]
    a = [float(2.0 ** v) for v in logs]
    s = speedup(a, [1.0] * 20)
    assert (s.ci_low, s.ci_high) == (pytest.approx(2.0 ** 6), pytest.approx(2.0 ** 15))
    assert speedup([2.0] * 3, [1.0] * 3).ci_low == pytest.approx(2.0)  # under 6 pairs: the full range


def test_session_effects_widen_the_interval():
    # two rounds of fresh sessions that disagree (one session draw 20 % faster): pooled as if
    # independent the interval is narrow; as rounds it admits both
    a = noisy(1.2, n=40, spread=0.01) + noisy(1.0, n=40, spread=0.01, seed=1)
    b = noisy(1.0, n=40, spread=0.01, seed=2) + noisy(1.0, n=40, spread=0.01, seed=3)
    rounds = [0] * 40 + [1] * 40
    narrow = speedup(a, b)
    wide = speedup(a, b, rounds=rounds)
    assert wide.ci_high - wide.ci_low > narrow.ci_high - narrow.ci_low


def test_pocock_constants_grow_with_looks():
    assert pocock_z(1) == pytest.approx(1.96)
    assert pocock_z(5) > pocock_z(2) > pocock_z(1)
    with pytest.raises(ValueError):
        pocock_z(0)


def test_not_resolved_keeps_the_original_and_says_so():
    a = noisy(1.0, n=30, spread=0.3)
    v = verdict(a, noisy(1.0, n=30, spread=0.3, seed=7), margin=0.0, what="end to end")
    assert not v.convert and not v.resolved
    assert v.reason.startswith("not resolved at 30 runs: replacement ") and "95% CI" in v.reason
