"""core/factorize.py: properties of the pure-numpy factorisation (hypothesis draws the geometries)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtool.core.factorize import decompose, factors, mac_ratio, rank_for_energy, reconstruct, relative_error


@st.composite
def kernels(draw):
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.lists(st.integers(1, 4), min_size=dims, max_size=dims)))
    group = draw(st.integers(1, 3))
    cout = group * draw(st.integers(1, 5))
    cin_g = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([np.float32, np.float16, np.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    w = np.random.default_rng(seed).standard_normal((cout, cin_g, *kernel)).astype(dtype)
    orientation = draw(st.sampled_from(["depthwise_first", "pointwise_first"]))
    return w, group, orientation


TOL = {np.dtype(np.float16): 2e-2, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


@settings(max_examples=150, deadline=None)
@given(kernels())
def test_full_rank_is_exact_and_dtype_kept(case):
    w, group, orientation = case
    dec = decompose(w, group, orientation)
    f = factors(dec, dec.full_rank)
    assert f.first.dtype == w.dtype and f.second.dtype == w.dtype
    err = np.linalg.norm(reconstruct(f, group) - w.astype(np.float64)) / max(np.linalg.norm(w.astype(np.float64)), 1e-30)
    assert err < TOL[w.dtype]
    assert relative_error(dec, dec.full_rank) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(kernels())
def test_error_never_grows_with_rank_and_matches_reconstruction(case):
    w, group, orientation = case
    w = w.astype(np.float64)
    dec = decompose(w, group, orientation)
    errors = [relative_error(dec, r) for r in range(1, dec.full_rank + 1)]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))
    for r, predicted in enumerate(errors, start=1):
        actual = np.linalg.norm(reconstruct(factors(dec, r), group) - w) / np.linalg.norm(w)
        assert actual == pytest.approx(predicted, abs=1e-7)


@settings(max_examples=100, deadline=None)
@given(kernels(), st.integers(1, 6))
def test_factor_shapes(case, rank):
    w, group, orientation = case
    cout, cin_g, *kernel = w.shape
    dec = decompose(w, group, orientation)
    f = factors(dec, rank)
    r = min(rank, dec.full_rank)
    assert f.rank == r
    ones = (1,) * len(kernel)
    if orientation == "depthwise_first":
        assert f.first.shape == (cin_g * group * r, 1, *kernel)
        assert f.second.shape == (cout, cin_g * r, *ones)
    else:
        assert f.first.shape == (cout * r, cin_g, *ones)
        assert f.second.shape == (cout, r, *kernel)


def test_rank_one_kernel_is_exact_at_rank_one():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((6, 4)), rng.standard_normal((4, 9))
    w = np.einsum("oi,ik->oik", u, v).reshape(6, 4, 3, 3)
    dec = decompose(w)
    assert relative_error(dec, 1) < 1e-12
    assert rank_for_energy(dec, 0.999) == 1


def test_energy_rank_is_smallest_rank_reaching_energy():
    rng = np.random.default_rng(2)
    dec = decompose(rng.standard_normal((16, 8, 3, 3)))
    for energy in (0.3, 0.5, 0.9, 0.99, 1.0):
        r = rank_for_energy(dec, energy)
        kept = np.square(dec.s[..., :r]).sum(-1) / np.square(dec.s).sum(-1)
        assert kept.mean() >= energy - 1e-12
        if r > 1:
            kept_less = np.square(dec.s[..., : r - 1]).sum(-1) / np.square(dec.s).sum(-1)
            assert kept_less.mean() < energy


def test_mac_ratio_matches_brief_example():
    # 3x3, 64 -> 64 at rank 1: 1/64 + 1/9 of the MACs (36,864 -> 4,672 weights)
    assert mac_ratio(64, 64, 9, 1, "depthwise_first") == pytest.approx(4672 / 36864)
