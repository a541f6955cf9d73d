"""core/equalize.py: cross-layer equalization is exact in float and balances the ranges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtool.core.equalize import channel_ranges, equalize_pair, imbalance
from convtool.core.factorize import decompose, factors, reconstruct


@settings(max_examples=40, deadline=None)
@given(group=st.sampled_from([1, 2]), cin_g=st.integers(1, 4), cout_g=st.integers(1, 5), k=st.sampled_from([1, 3]),
       dims=st.integers(1, 3), rank=st.integers(1, 3), seed=st.integers(0, 1000))
def test_equalized_factors_compute_the_same_kernel(group, cin_g, cout_g, k, dims, rank, seed):
    rng = np.random.default_rng(seed)
    kernel = (k,) * dims
    if np.prod(kernel) == 1:
        kernel = (2,) * dims
    w = rng.standard_normal((group * cout_g, cin_g, *kernel)) * rng.uniform(0.01, 10, (group * cout_g, 1, *[1] * dims))
    f = factors(decompose(w, group), rank)
    eq = equalize_pair(f.first, f.second, group)
    before = reconstruct(f, group)
    after = reconstruct(type(f)(eq.first, eq.second, f.rank, f.orientation), group)
    assert np.max(np.abs(after - before)) <= 1e-10 * max(1.0, np.max(np.abs(before)))
    r1, r2 = eq.ranges_after
    nonzero = (eq.ranges_before[0] > 0) & (eq.ranges_before[1] > 0)
    np.testing.assert_allclose(r1[nonzero], r2[nonzero], rtol=1e-9)
    assert eq.first.dtype == w.dtype and eq.second.shape == f.second.shape


def test_scale_is_sqrt_of_the_range_ratio_and_moves_the_bias_with_the_kernel():
    first = np.array([[[1.0, -2.0]], [[0.5, 0.25]]], dtype=np.float32)  # (2, 1, 2): r1 = 2, 0.5
    second = np.array([[[8.0], [1.0]], [[-2.0], [0.5]]], dtype=np.float32)  # (2, 2, 1): r2 = 8, 1
    bias = np.array([3.0, -1.0], dtype=np.float32)
    eq = equalize_pair(first, second, 1, bias)
    np.testing.assert_allclose(eq.scales, [2.0, np.sqrt(2.0)])
    np.testing.assert_allclose(eq.first_bias, bias * eq.scales, rtol=1e-6)
    np.testing.assert_allclose(eq.first[:, 0, 1], first[:, 0, 1] * eq.scales, rtol=1e-6)
    np.testing.assert_allclose(eq.second[:, :, 0], second[:, :, 0] / eq.scales, rtol=1e-6)
    assert imbalance(*eq.ranges_before) > 1.4 and imbalance(*eq.ranges_after) == pytest.approx(1.0)


def test_grouped_second_conv_reads_its_own_channels():
    # pointwise_first: a 1x1 conv to Cout*r channels, then a conv with group = Cout reading r each
    rng = np.random.default_rng(0)
    first = rng.standard_normal((6, 4, 1, 1))
    second = rng.standard_normal((3, 2, 3, 3)) * np.array([1.0, 100.0]).reshape(1, 2, 1, 1)
    r1, r2 = channel_ranges(first, second, 3)
    np.testing.assert_allclose(r2, [np.abs(second[o, j]).max() for o in range(3) for j in range(2)])
    eq = equalize_pair(first, second, 3)
    x = rng.standard_normal(4)
    mid_before = first[:, :, 0, 0] @ x
    mid_after = eq.first[:, :, 0, 0] @ x
    out_before = np.array([sum(second[o, j] * mid_before[o * 2 + j] for j in range(2)) for o in range(3)])
    out_after = np.array([sum(eq.second[o, j] * mid_after[o * 2 + j] for j in range(2)) for o in range(3)])
    np.testing.assert_allclose(out_after, out_before, rtol=1e-10, atol=1e-12)


def test_zero_channels_keep_scale_one_and_bad_shapes_are_refused():
    first = np.zeros((2, 1, 3))
    first[0] = 1.0
    second = np.ones((4, 2, 1))
    eq = equalize_pair(first, second, 1)
    assert eq.scales[1] == 1.0 and np.all(np.isfinite(eq.second))
    with pytest.raises(ValueError, match="reads 4 channels"):
        equalize_pair(first, np.ones((4, 4, 1)), 1)
    with pytest.raises(ValueError, match="does not divide"):
        equalize_pair(first, second, 3)
