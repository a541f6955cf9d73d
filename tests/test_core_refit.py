"""core/refit.py: the least-squares refit (pure numpy): exactness, streaming, guarantees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtool.core.refit import NormalEquations, augment, refit, solve, split_augmented


def _layer(rng, n=6, group=1, d_g=3, m_g=4, spatial=(5, 4)):
    """Random Z, a true pointwise map, noisy Y, and perturbed "data-free" weights."""
    z = rng.standard_normal((n, group * d_g, *spatial))
    w = rng.standard_normal((group * m_g, d_g, *([1] * len(spatial))))
    b = rng.standard_normal(group * m_g)
    y = _pointwise(z, w, b, group) + 0.05 * rng.standard_normal((n, group * m_g, *spatial))
    w0 = w + 0.5 * rng.standard_normal(w.shape)
    return z, y, w, b, w0


def _pointwise(z, w, b, group):
    n, c = z.shape[:2]
    cout, d_g = w.shape[:2]
    zg = z.reshape(n, group, d_g, -1)
    wg = w.reshape(group, cout // group, d_g)
    y = np.einsum("gmd,ngdp->ngmp", wg, zg).reshape(n, cout, *z.shape[2:])
    return y + b.reshape(1, cout, *([1] * (z.ndim - 2)))


def _accumulate(z, y, group, batch=None):
    eq = NormalEquations.empty(group, z.shape[1], y.shape[1])
    step = batch or z.shape[0]
    for s in range(0, z.shape[0], step):
        eq.update(z[s:s + step], y[s:s + step])
    return eq


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("spatial", [(7,), (5, 4), (3, 3, 2)])
def test_unregularised_solution_matches_lstsq(group, spatial):
    rng = np.random.default_rng(0)
    z, y, _, _, w0 = _layer(rng, group=group, spatial=spatial)
    eq = _accumulate(z, y, group)
    a = solve(eq, augment(w0, None, group), alpha=0.0)
    d_g, m_g = z.shape[1] // group, y.shape[1] // group
    for gi in range(group):
        zg = z[:, gi * d_g:(gi + 1) * d_g].transpose(1, 0, *range(2, z.ndim)).reshape(d_g, -1)
        yg = y[:, gi * m_g:(gi + 1) * m_g].transpose(1, 0, *range(2, y.ndim)).reshape(m_g, -1)
        za = np.vstack([zg, np.ones((1, zg.shape[1]))])
        expected = np.linalg.lstsq(za.T, yg.T, rcond=None)[0].T
        np.testing.assert_allclose(a[gi], expected, rtol=1e-6, atol=1e-8)


def test_ridge_matches_direct_solve_towards_prior():
    rng = np.random.default_rng(1)
    z, y, _, _, w0 = _layer(rng, n=2, spatial=(3,))
    eq = _accumulate(z, y, 1)
    a0 = augment(w0, np.zeros(y.shape[1]), 1)
    a = solve(eq, a0, alpha=1.0)
    zf = z.transpose(1, 0, 2).reshape(z.shape[1], -1)
    yf = y.transpose(1, 0, 2).reshape(y.shape[1], -1)
    za = np.vstack([zf, np.ones((1, zf.shape[1]))])
    lam = np.trace(zf @ zf.T) / zf.shape[1]
    reg = np.diag([lam] * zf.shape[0] + [0.0])
    # minimise ||Y - A Za||^2 + lam ||P - P0||^2 directly via the stacked least squares
    rows = np.hstack([za, np.sqrt(reg)[:, :-1]])
    targets = np.hstack([yf, a0[0][:, :-1] @ np.sqrt(reg)[:-1, :-1]])
    expected = np.linalg.lstsq(rows.T, targets.T, rcond=None)[0].T
    np.testing.assert_allclose(a[0], expected, rtol=1e-6, atol=1e-8)


def test_streaming_equals_batch():
    rng = np.random.default_rng(2)
    z, y, *_ = _layer(rng, n=9, group=2)
    whole = _accumulate(z, y, 2)
    streamed = _accumulate(z, y, 2, batch=2)
    for attr in ("zz", "yz", "yy"):
        np.testing.assert_allclose(getattr(streamed, attr), getattr(whole, attr), rtol=1e-12)
    assert streamed.count == whole.count
    a0 = augment(rng.standard_normal((8, 3, 1, 1)), None, 2)
    np.testing.assert_allclose(solve(streamed, a0, 0.1), solve(whole, a0, 0.1), rtol=1e-9)


def test_error_from_sums_equals_direct_error():
    rng = np.random.default_rng(3)
    z, y, w, b, w0 = _layer(rng, group=2)
    eq = _accumulate(z, y, 2)
    pred = _pointwise(z, w0, b, 2)
    direct = np.linalg.norm(y - pred) / np.linalg.norm(y)
    assert eq.rel_error(augment(w0, b, 2)) == pytest.approx(direct, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), group=st.sampled_from([1, 2, 4]), n=st.integers(1, 6),
       d_g=st.integers(1, 6), m_g=st.integers(1, 5), noise=st.floats(0.0, 3.0))
def test_refit_never_increases_error_on_its_calibration_data(seed, group, n, d_g, m_g, noise):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, group * d_g, 3, 2))
    y = rng.standard_normal((n, group * m_g, 3, 2)) * noise + _pointwise(
        z, rng.standard_normal((group * m_g, d_g, 1, 1)), np.zeros(group * m_g), group)
    w0 = rng.standard_normal((group * m_g, d_g, 1, 1))
    a0 = augment(w0, None, group)
    fit = _accumulate(z, y, group)
    half = max(1, n // 2)
    held = _accumulate(z[:half], y[:half], group)
    res = refit(fit, held, a0)
    assert res.error_after <= res.error_before + 1e-12
    # on all of its calibration data the kept weights are never worse than the data-free ones
    assert res.fit_error_after <= res.fit_error_before * (1 + 1e-9) + 1e-12
    for alpha in (0.0, 0.01, 1.0, 100.0):
        assert fit.rel_error(solve(fit, a0, alpha)) <= fit.rel_error(a0) * (1 + 1e-9) + 1e-12


def test_refit_rejected_when_held_out_gets_worse():
    rng = np.random.default_rng(4)
    # fit data: pure noise, unrelated to the held-out relation; the prior is the truth
    d, m = 6, 3
    w = rng.standard_normal((m, d, 1, 1))
    z_held = rng.standard_normal((4, d, 8))
    y_held = _pointwise(z_held, w, np.zeros(m), 1)
    z_fit = rng.standard_normal((1, d, 8))
    y_fit = rng.standard_normal((1, m, 8)) * 10
    res = refit(_accumulate(z_fit, y_fit, 1), _accumulate(z_held, y_held, 1), augment(w, None, 1))
    assert not res.accepted
    np.testing.assert_array_equal(res.weights, augment(w, None, 1))
    assert res.error_after == res.error_before


def test_split_augmented_roundtrip_keeps_dtype():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 3, 1, 1)).astype(np.float16)
    b = rng.standard_normal(8).astype(np.float16)
    w2, b2 = split_augmented(augment(w, b, 2), w)
    assert w2.dtype == np.float16 and w2.shape == w.shape and b2.shape == (8,)
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(b2, b)


def test_subsampled_positions():
    rng = np.random.default_rng(6)
    z, y, *_ = _layer(rng, n=2)
    eq = NormalEquations.empty(1, z.shape[1], y.shape[1])
    eq.update(z, y, positions=np.array([0, 5, 7]))
    assert eq.count == 3
