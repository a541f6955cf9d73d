"""core/bnfold.py: folding an inference BatchNormalization into the Conv before it."""

from __future__ import annotations

import numpy as np
import pytest

from convtool.core.bnfold import fold_batchnorm


def test_fold_batchnorm_matches_direct_formula():
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    s, beta, m, v = rng.uniform(0.5, 2, 4), rng.standard_normal(4), rng.standard_normal(4), rng.uniform(0.1, 2, 4)
    fw, fb = fold_batchnorm(w, b, s, beta, m, v, 1e-5)
    x = rng.standard_normal((3, 3, 3))
    conv = np.einsum("oijk,ijk->o", w, x) + b
    bn = s * (conv - m) / np.sqrt(v + 1e-5) + beta
    assert np.allclose(np.einsum("oijk,ijk->o", fw, x) + fb, bn)


def test_fold_without_a_bias_and_in_the_weight_dtype():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 2, 3)).astype(np.float16)
    s, beta, m, v = (rng.uniform(0.5, 2, 4).astype(np.float16), rng.standard_normal(4).astype(np.float16),
                     rng.standard_normal(4).astype(np.float16), rng.uniform(0.1, 2, 4).astype(np.float16))
    fw, fb = fold_batchnorm(w, None, s, beta, m, v, 1e-5)
    assert fw.dtype == np.float16 and fb is not None and fb.dtype == np.float16 and fb.shape == (4,)
    scale = s.astype(np.float64) / np.sqrt(v.astype(np.float64) + 1e-5)
    np.testing.assert_allclose(fw, w * scale[:, None, None], rtol=2e-3)
    np.testing.assert_allclose(fb, beta - m * scale, rtol=2e-3, atol=2e-3)


def test_parameters_of_the_wrong_length_are_refused():
    w = np.ones((4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"BatchNormalization var has shape \(3,\), expected \(4,\)"):
        fold_batchnorm(w, None, np.ones(4), np.zeros(4), np.zeros(4), np.ones(3), 1e-5)
