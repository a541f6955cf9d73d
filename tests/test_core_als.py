"""ALS fit of both factors on streamed patch moments (pure numpy): maths and guarantees."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_patches import direct_conv

from convtool.core import als
from convtool.core.patches import extract_patches, flatten_outputs

DF, PF = "depthwise_first", "pointwise_first"


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small solves run 10-100x slower with OpenBLAS threads spinning on a loaded machine; the
    calibration driver runs these fits under ``calibrate.refit.few_blas_threads`` likewise."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
GEOMETRIES = {  # d: (kernel, spatial, strides, pads, dilations)
    1: ((3,), (11,), (1,), (1, 0), (2,)),
    2: ((3, 3), (7, 6), (2, 1), (1, 0, 0, 1), (1, 1)),
    3: ((2, 2, 2), (4, 4, 3), (1, 1, 1), (0, 1, 0, 0, 1, 0), (1, 1, 1)),
}


def correlated_input(rng, n, cin, spatial, mean=0.4):
    """Non-white inputs: spatially smoothed, channels mixed, non-zero mean."""
    x = rng.standard_normal((n, cin, *spatial))
    for ax in range(2, x.ndim):
        x = x + 0.9 * np.roll(x, 1, axis=ax) + 0.6 * np.roll(x, 2, axis=ax)
    mix = np.eye(cin) + 0.8 * rng.standard_normal((cin, cin))
    return np.einsum("dc,nc...->nd...", mix, x) + mean


def make_layer(seed, d=2, group=1, cin_g=3, cout_g=4, n=6, target="perturbed", noise=0.05):
    """Weight, bias, input and target of a random layer (target: ``exact`` = W * x + b,
    ``perturbed`` = another kernel plus noise, as the original model's output would be)."""
    kernel, spatial, strides, pads, dilations = GEOMETRIES[d]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((group * cout_g, cin_g, *kernel))
    b = rng.standard_normal(group * cout_g)
    x = correlated_input(rng, n, group * cin_g, spatial)
    geo = (strides, pads, dilations)
    if target == "exact":
        y = direct_conv(x, w, b, group, *geo)
    else:
        w_true = w + 0.3 * rng.standard_normal(w.shape)
        y = direct_conv(x, w_true, b + 0.1, group, *geo)
        y = y + noise * np.std(y) * rng.standard_normal(y.shape)
    return w, b, x, y, geo


def moments(w, group, x, y, geo, **kw):
    m = als.PatchMoments.for_layer(w, group, **kw)
    m.update_conv(x, y, *geo)
    return m


def fitter(orientation):
    return als.fit_depthwise_first if orientation == DF else als.fit_pointwise_first


def apply_factors(x, first, second, bias, orientation, group, geo):
    """The replacement pair run as two plain convolutions (independent of the moments)."""
    strides, pads, dilations = geo
    d = x.ndim - 2
    unit = ((1,) * d, (0,) * (2 * d), (1,) * d)
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if orientation == DF:
        z = direct_conv(x, first, None, x.shape[1], strides, pads, dilations)
        return direct_conv(z, second, bias, group, *unit)
    z = direct_conv(x, first, None, group, *unit)
    return direct_conv(z, second, bias, second.shape[0], strides, pads, dilations)


def rel(y, y_hat):
    return float(np.linalg.norm(y - y_hat) / np.linalg.norm(y))


def svd_kernel(w, group, rank, orientation):
    """The data-free rank-``rank`` effective kernel (truncated SVD of every slice)."""
    cout, cin_g = w.shape[:2]
    k = math.prod(w.shape[2:])
    wg = w.reshape(group, cout // group, cin_g, k)
    mats = wg.transpose(0, 2, 1, 3) if orientation == DF else wg
    u, s, vh = np.linalg.svd(mats, full_matrices=False)
    trunc = (u[..., :rank] * s[..., None, :rank]) @ vh[..., :rank, :]
    out = trunc.transpose(0, 2, 1, 3) if orientation == DF else trunc
    return out.reshape(w.shape)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("orientation", [DF, PF])
@pytest.mark.parametrize("d,group", [(1, 1), (2, 2), (3, 1)])
def test_full_rank_reproduces_the_layer(orientation, d, group):
    w, b, x, y, geo = make_layer(1, d=d, group=group, target="exact")
    mom = moments(w, group, x, y, geo)
    res = fitter(orientation)(w, b, mom, None, rank=99)
    assert res.data_free.fit < 1e-6
    assert res.pointwise.fit < 1e-6
    assert res.als.fit < 1e-6
    assert rel(y, apply_factors(x, res.first, res.second, res.bias, orientation, group, geo)) < 1e-6


@pytest.mark.parametrize("orientation", [DF, PF])
def test_full_rank_als_fits_any_target_exactly(orientation):
    # y comes from ANOTHER kernel: at full rank the depthwise factors must move too
    w, b, x, y, geo = make_layer(2, d=2, group=2, target="perturbed", noise=0.0)
    mom = moments(w, 2, x, y, geo)
    res = fitter(orientation)(w, b, mom, None, rank=99, alphas=(0.0,))
    assert res.als.fit < 1e-6
    assert res.data_free.fit > 0.1


def test_kernel_error_of_the_original_layer_is_zero():
    w, b, x, y, geo = make_layer(3, d=1, group=2, target="exact")
    mom = moments(w, 2, x, y, geo)
    assert als.kernel_error(mom, w, b) < 1e-6
    assert als.kernel_error(mom, w, None) > 0.05


# ----------------------------------------------------------------------------- guarantees


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), orientation=st.sampled_from([DF, PF]), d=st.sampled_from([1, 2, 3]),
       group=st.sampled_from([1, 2]), rank=st.integers(1, 2))
def test_on_fitted_data_als_beats_pointwise_beats_data_free(seed, orientation, d, group, rank):
    w, b, x, y, geo = make_layer(seed, d=d, group=group)
    mom = moments(w, group, x, y, geo)
    res = fitter(orientation)(w, b, mom, None, rank)
    assert res.als.fit <= res.pointwise.fit * (1 + 1e-9) + 1e-12
    assert res.pointwise.fit <= res.data_free.fit * (1 + 1e-9) + 1e-12
    assert res.data_free.held is None and res.als.held is None
    # the history is the fit error at alpha = 0 and never rises
    hist = fitter(orientation)(w, b, mom, None, rank, alphas=(0.0,)).history
    assert all(b_ <= a_ * (1 + 1e-9) for a_, b_ in pairwise(hist))


@pytest.mark.parametrize("orientation", [DF, PF])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_more_iterations_never_increase_the_objective(orientation, alpha):
    w, b, x, y, geo = make_layer(5, d=2, group=2, cin_g=4, cout_g=5)
    mom = moments(w, 2, x, y, geo)
    runs = [fitter(orientation)(w, b, mom, None, 1, alphas=(alpha,), iterations=k, tol=0.0) for k in range(7)]
    objective = [r.history[-1] for r in runs]
    assert all(b_ <= a_ * (1 + 1e-9) for a_, b_ in pairwise(objective))
    assert objective[-1] < objective[0]
    if alpha == 0.0:  # unregularised: the objective is the fit error itself
        errs = [r.als.fit for r in runs]
        assert all(b_ <= a_ * (1 + 1e-9) for a_, b_ in pairwise(errs))
        np.testing.assert_allclose(objective, errs, rtol=1e-6)


@pytest.mark.parametrize("orientation", [DF, PF])
def test_whitening_matters_als_strictly_beats_the_pointwise_refit_at_rank_1(orientation):
    w, b, x, y, geo = make_layer(6, d=2, group=1, cin_g=4, cout_g=6, n=8)
    fit_m = moments(w, 1, x[:6], y[:6], geo)
    held_m = moments(w, 1, x[6:], y[6:], geo)
    res = fitter(orientation)(w, b, fit_m, held_m, 1)
    assert res.als.fit < 0.9 * res.pointwise.fit
    assert res.als.held < 0.9 * res.pointwise.held < res.data_free.held
    assert res.best == "als"


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("orientation", [DF, PF])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_shapes_dtypes_and_layout(orientation, d, group, dtype):
    w, b, x, y, geo = make_layer(7, d=d, group=group, n=3)
    w = w.astype(dtype)
    b = b.astype(dtype)
    mom = moments(w, group, x, y, geo)
    r = 2
    res = fitter(orientation)(w, b, mom, None, r, iterations=3)
    cout, cin_g = w.shape[:2]
    kernel = w.shape[2:]
    ones = (1,) * d
    if orientation == DF:
        assert res.first.shape == (cin_g * group * r, 1, *kernel)
        assert res.second.shape == (cout, cin_g * r, *ones)
    else:
        assert res.first.shape == (cout * r, cin_g, *ones)
        assert res.second.shape == (cout, r, *kernel)
    assert res.refit_first.shape == res.first.shape and res.refit_second.shape == res.second.shape
    assert res.bias.shape == (cout,)
    for a in (res.first, res.second, res.bias, res.refit_first, res.refit_second, res.refit_bias):
        assert a.dtype == dtype
    assert res.rank == r and res.orientation == orientation and res.mode == "full"
    # the layout is the one the direct convolutions expect: they reproduce the reported error
    direct = rel(y, apply_factors(x, res.first, res.second, res.bias.astype(np.float64), orientation, group, geo))
    tol = 1e-4 if dtype == np.float32 else 2e-2
    assert abs(direct - res.als.fit) < tol
    assert abs(als.output_error(mom, res.first, res.second, res.bias, orientation) - direct) < 1e-6


@pytest.mark.parametrize("orientation", [DF, PF])
@pytest.mark.parametrize("d,group,rank", [(1, 2, 1), (2, 1, 2), (3, 2, 1)])
def test_moments_predict_the_directly_measured_errors(orientation, d, group, rank):
    w, b, x, y, geo = make_layer(8, d=d, group=group, n=8)
    fit_m = moments(w, group, x[:5], y[:5], geo)
    held_m = moments(w, group, x[5:], y[5:], geo)
    res = fitter(orientation)(w, b, fit_m, held_m, rank)
    cases = [(res.als, res.first, res.second, res.bias), (res.pointwise, res.refit_first, res.refit_second, res.refit_bias)]
    for errors, first, second, bias in cases:
        y_hat = apply_factors(x, first, second, bias, orientation, group, geo)
        assert abs(rel(y[:5], y_hat[:5]) - errors.fit) < 1e-7
        assert abs(rel(y[5:], y_hat[5:]) - errors.held) < 1e-7
    y_df = direct_conv(x, svd_kernel(w, group, res.rank, orientation), b, group, *geo)
    assert abs(rel(y[:5], y_df[:5]) - res.data_free.fit) < 1e-7
    assert abs(rel(y[5:], y_df[5:]) - res.data_free.held) < 1e-7


# ----------------------------------------------------------------------------- regulariser


def test_held_out_moments_choose_alpha():
    # few fitted positions for many unknowns and noisy targets: alpha = 0 overfits
    w, b, x, y, geo = make_layer(9, d=2, group=1, cin_g=6, cout_g=8, n=12, noise=0.8)
    p = extract_patches(x, w.shape[2:], *geo)
    t = flatten_outputs(y)
    order = np.random.default_rng(0).permutation(p.shape[0])
    fit_m = als.PatchMoments.for_layer(w)
    held_m = fit_m.empty_like()
    fit_m.update(p, t, positions=order[:70])
    held_m.update(p, t, positions=order[70:])
    alphas, kw = (0.0, 0.01, 0.1, 1.0), {"iterations": 4}
    res = als.fit_depthwise_first(w, b, fit_m, held_m, 2, alphas=alphas, **kw)
    singles = {a: als.fit_depthwise_first(w, b, fit_m, held_m, 2, alphas=(a,), **kw) for a in alphas}
    best = min(singles, key=lambda a: singles[a].als.held)
    assert res.alpha == best > 0.0
    assert res.als.held == singles[best].als.held < singles[0.0].als.held
    assert res.refit_alpha == min(singles, key=lambda a: singles[a].pointwise.held)
    assert res.best == "als" and res.als.held < res.pointwise.held < res.data_free.held
    # without held moments the choice is made on the fitted data, where alpha = 0 is not beaten
    no_held = als.fit_depthwise_first(w, b, fit_m, None, 2, alphas=alphas, **kw)
    assert no_held.pointwise.fit <= min(s.pointwise.fit for s in singles.values()) * (1 + 1e-9)
    assert no_held.als.fit <= min(s.als.fit for s in singles.values()) * (1 + 1e-9)
    # final_on_all re-solves on fit + held: reported held errors are the ones used to choose
    final = als.fit_depthwise_first(w, b, fit_m, held_m, 2, alphas=alphas, final_on_all=True, **kw)
    assert final.alpha == res.alpha and final.als.held == res.als.held
    assert final.fit_positions == 70


# ----------------------------------------------------------------------------- modes


def test_subspace_mode_matches_full_mode_when_the_data_live_in_the_subspace():
    rng = np.random.default_rng(10)
    cin, cout, k, q, rows = 5, 6, 9, 3, 600
    basis = np.linalg.qr(rng.standard_normal((cin, k, q)))[0]  # per-channel orthonormal (K, q)
    w = np.einsum("oiq,ikq->oik", rng.standard_normal((cout, cin, q)), basis).reshape(cout, cin, 3, 3)
    a = rng.standard_normal((rows, cin * q)) @ (np.eye(cin * q) + rng.standard_normal((cin * q, cin * q)))
    patches = np.einsum("riq,ikq->rik", a.reshape(rows, cin, q) + 0.3, basis)
    y = patches.reshape(rows, -1) @ (w + 0.2 * rng.standard_normal(w.shape)).reshape(cout, -1).T
    full = als.PatchMoments.for_layer(w)
    sub = als.PatchMoments.for_layer(w, taps=q)
    assert (full.mode, sub.mode, sub.taps) == ("full", "subspace", q)
    full.update(patches, y)
    sub.update(patches, y)
    for rank in (1, 2):
        rf = als.fit_depthwise_first(w, None, full, None, rank, alphas=(0.1,))
        rs = als.fit_depthwise_first(w, None, sub, None, rank, alphas=(0.1,))
        assert rs.mode == "subspace"
        for e_f, e_s in ((rf.data_free, rs.data_free), (rf.pointwise, rs.pointwise), (rf.als, rs.als)):
            assert abs(e_f.fit - e_s.fit) < 1e-7
        np.testing.assert_allclose(als._kernel(DF, rs.first, rs.second, 1, rank),
                                   als._kernel(DF, rf.first, rf.second, 1, rank), atol=1e-6)


def test_subspace_mode_is_exact_for_its_factors_and_keeps_the_ordering():
    w, b, x, y, geo = make_layer(11, d=2, group=2, cin_g=4, cout_g=5, n=5)
    mom = moments(w, 2, x, y, geo, full_limit=8)  # Cin_g * K = 36 > 8: q = 2 directions
    assert mom.mode == "subspace" and mom.taps == 2 and mom.dim == 8
    for rank in (1, 2):
        res = als.fit_depthwise_first(w, b, mom, None, rank)
        assert res.mode == "subspace"
        assert res.als.fit <= res.pointwise.fit * (1 + 1e-9) <= res.data_free.fit * (1 + 1e-9)
        direct = rel(y, apply_factors(x, res.first, res.second, res.bias, DF, 2, geo))
        assert abs(direct - res.als.fit) < 1e-7
    with pytest.raises(ValueError):
        als.kernel_error(mom, w, b)  # the original kernel leaves the subspace
    over = als.fit_depthwise_first(w, b, mom, None, 3)
    assert over.mode.startswith("data-free") and math.isnan(over.als.fit) and over.first.shape == (8 * 3, 1, 3, 3)
    pf = als.fit_pointwise_first(w, b, mom, None, 1)
    assert pf.mode == "data-free (layer too large for full moments)" and pf.second.shape == (10, 1, 3, 3)
    np.testing.assert_allclose(als._kernel(PF, pf.first, pf.second, 2, 1), svd_kernel(w, 2, 1, PF), atol=1e-12)


def test_conjugate_gradients_match_the_dense_depthwise_solve():
    w, b, x, y, geo = make_layer(12, d=2, group=1, cin_g=5, cout_g=6)
    mom = moments(w, 1, x, y, geo)
    dense = als.fit_depthwise_first(w, b, mom, None, 2, alphas=(0.0,), iterations=4, tol=0.0)
    pcg = als.fit_depthwise_first(w, b, mom, None, 2, alphas=(0.0,), iterations=4, tol=0.0, dense_limit=0)
    np.testing.assert_allclose(pcg.history, dense.history, rtol=1e-7)
    assert pcg.als.fit <= pcg.pointwise.fit


# ----------------------------------------------------------------------------- streaming


def test_streaming_batches_subsampling_and_merging():
    w, _, x, y, geo = make_layer(13, d=2, group=2, n=6)
    whole = moments(w, 2, x, y, geo)
    parts = als.PatchMoments.for_layer(w, 2)
    parts.update_conv(x[:2], y[:2], *geo)
    parts.update_conv(x[2:], y[2:], *geo, max_elements=1)  # one image per chunk
    for a, b_ in ((whole.pp, parts.pp), (whole.yp, parts.yp), (whole.yy, parts.yy)):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-9)
    assert whole.count == parts.count == flatten_outputs(y).shape[0]
    # subsampled positions: update_conv (chunked by image) == update on the selected rows
    sel = np.sort(np.random.default_rng(1).choice(whole.count, 40, replace=False))
    a = als.PatchMoments.for_layer(w, 2)
    mask = np.zeros(whole.count, dtype=bool)
    mask[sel] = True
    a.update_conv(x, y, *geo, positions=mask, max_elements=1)
    c = als.PatchMoments.for_layer(w, 2)
    c.update(extract_patches(x, w.shape[2:], *geo), flatten_outputs(y), sel)
    np.testing.assert_allclose(a.pp, c.pp, rtol=1e-12, atol=1e-9)
    assert a.count == c.count == 40
    # merging
    rest = np.setdiff1d(np.arange(whole.count), sel)
    d_ = als.PatchMoments.for_layer(w, 2)
    d_.update_conv(x, y, *geo, positions=rest)
    merged = a.merged(d_)
    np.testing.assert_allclose(merged.pp, whole.pp, rtol=1e-12, atol=1e-9)
    a += d_
    assert a.count == whole.count
    with pytest.raises(ValueError):
        whole.merged(als.PatchMoments.for_layer(w, 2, taps=2))


def test_memory_bound_and_mode_selection():
    w = np.zeros((8, 128, 3, 3))
    m = als.PatchMoments.for_layer(w)  # 128 * 9 = 1152 = FULL_LIMIT: still full
    assert m.mode == "full" and m.dim == 1152
    assert m.nbytes == 8 * ((1153) ** 2 + 8 * 1153 + 1)
    big = als.PatchMoments.for_layer(np.zeros((8, 256, 3, 3)))
    assert big.mode == "subspace" and big.taps == 4 and big.dim == 1024
    grouped = als.PatchMoments.for_layer(np.zeros((8, 256, 3, 3)), group=2)
    assert grouped.pp.shape == (2, 1025, 1025)
    with pytest.raises(ValueError):
        als.PatchMoments.for_layer(np.zeros((6, 4, 3)), group=4)


@pytest.mark.parametrize("orientation", [DF, PF])
def test_dead_channels_and_single_input_channel_groups(orientation):
    w, b, x, y, geo = make_layer(14, d=2, group=2, cin_g=3, cout_g=4)
    x[:, 1] = 0.0  # a dead input channel: singular moments
    x[:, 4] = 2.5  # a constant one (in the padded patches it is not constant at the borders)
    y = direct_conv(x, w, b, 2, *geo) + 0.1 * np.random.default_rng(0).standard_normal(y.shape)
    mom = moments(w, 2, x, y, geo)
    res = fitter(orientation)(w, b, mom, None, 1)
    assert np.all(np.isfinite(res.first)) and np.all(np.isfinite(res.second))
    assert res.als.fit <= res.pointwise.fit * (1 + 1e-9) <= res.data_free.fit * (1 + 1e-9)
    assert abs(rel(y, apply_factors(x, res.first, res.second, res.bias, orientation, 2, geo)) - res.als.fit) < 1e-7
    # Cin_g = 1 (a depthwise layer: group = Cin) still fits
    w1, b1, x1, y1, geo1 = make_layer(15, d=1, group=3, cin_g=1, cout_g=2)
    r1 = fitter(orientation)(w1, b1, moments(w1, 3, x1, y1, geo1), None, 1)
    assert r1.als.fit <= r1.pointwise.fit * (1 + 1e-9) <= r1.data_free.fit * (1 + 1e-9)
