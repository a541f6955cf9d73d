"""Patch extraction (pure numpy) against a direct convolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtool.core.patches import conv_geometry, extract_patches, flatten_outputs


def direct_conv(x, w, b, group, strides, pads, dilations):
    """Reference Conv (ONNX semantics) written tap by tap with einsum: no patch matrices."""
    d = x.ndim - 2
    k = w.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + d]) for i in range(d)])
    out = [(xp.shape[2 + i] - (k[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(d)]
    n = x.shape[0]
    cout, cin_g = w.shape[:2]
    y = np.zeros((n, group, cout // group, *out))
    wg = w.reshape(group, cout // group, cin_g, *k)
    for tap in np.ndindex(*k):
        sl = tuple(slice(tap[i] * dilations[i], tap[i] * dilations[i] + (out[i] - 1) * strides[i] + 1, strides[i])
                   for i in range(d))
        xs = xp[(slice(None), slice(None)) + sl].reshape(n, group, cin_g, *out)
        y += np.einsum("ngi...,gmi->ngm...", xs, wg[(Ellipsis, *tap)])
    y = y.reshape(n, cout, *out)
    if b is not None:
        y += b.reshape(1, cout, *([1] * d))
    return y


@st.composite
def geometries(draw):
    d = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(d))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(d))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(2 * d))
    spatial = []
    for i in range(d):
        extent = (kernel[i] - 1) * dilations[i] + 1
        lo = max(1, extent - pads[i] - pads[i + d])
        spatial.append(draw(st.integers(lo, lo + (5 if d < 3 else 2))))
    group = draw(st.sampled_from([1, 2]))
    return kernel, strides, pads, dilations, tuple(spatial), group


@settings(max_examples=60, deadline=None)
@given(geometries(), st.integers(0, 2**31 - 1))
def test_patches_times_kernel_is_the_convolution(geo, seed):
    kernel, strides, pads, dilations, spatial, group = geo
    rng = np.random.default_rng(seed)
    cin_g, cout_g, n = 2, 3, 2
    x = rng.standard_normal((n, cin_g * group, *spatial))
    w = rng.standard_normal((cout_g * group, cin_g, *kernel))
    b = rng.standard_normal(cout_g * group)
    ref = direct_conv(x, w, b, group, strides, pads, dilations)
    p = extract_patches(x, kernel, strides, pads, dilations)
    assert p.shape == (n * math.prod(ref.shape[2:]), cin_g * group, math.prod(kernel))
    # groups are the caller's business: group gi reads its own channels of the patches
    k = math.prod(kernel)
    pg = p.reshape(p.shape[0], group, cin_g * k)
    wg = w.reshape(group, cout_g, cin_g * k)
    y = np.einsum("rgd,gmd->rgm", pg, wg).reshape(p.shape[0], -1) + b
    np.testing.assert_allclose(y, flatten_outputs(ref), rtol=1e-10, atol=1e-10)
    _, _, _, out = conv_geometry(spatial, kernel, strides, pads, dilations)
    assert out == ref.shape[2:]


def test_row_order_is_image_major_then_position():
    x = np.arange(2 * 1 * 3 * 4, dtype=np.float64).reshape(2, 1, 3, 4)
    p = extract_patches(x, (1, 1))
    np.testing.assert_array_equal(p[:, 0, 0], x.reshape(-1))
    y = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    f = flatten_outputs(y)
    assert f.shape == (8, 3)
    np.testing.assert_array_equal(f[5], y[1, :, 0, 1])  # image 1, position 1


def test_dtype_is_kept_and_bad_geometry_rejected():
    x = np.ones((1, 2, 4, 4), dtype=np.float32)
    assert extract_patches(x, (3, 3), pads=(1, 1, 1, 1)).dtype == np.float32
    with pytest.raises(ValueError):
        extract_patches(x, (5, 5))
    with pytest.raises(ValueError):
        extract_patches(x, (3,))
    with pytest.raises(ValueError):
        extract_patches(x, (3, 3), pads=(1, 1))
