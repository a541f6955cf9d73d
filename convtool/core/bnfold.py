"""Folding an inference-mode BatchNormalization into the Conv before it (pure numpy).

``BN(y) = scale * (y - mean) / sqrt(var + eps) + B``; with ``a = scale / sqrt(var + eps)``
the Conv+BN pair equals one Conv with weight ``a[o] * W[o]`` and bias ``a * (b - mean) + B``
(``b`` the Conv bias, zero when absent).  Computed in float64, returned in the weight dtype.
"""

from __future__ import annotations

import numpy as np


def fold_batchnorm(
    weight: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(weight, bias)`` of the single Conv equivalent to Conv followed by BN."""
    cout = weight.shape[0]
    for name, arr in (("scale", scale), ("B", beta), ("mean", mean), ("var", var)):
        if np.asarray(arr).shape != (cout,):
            raise ValueError(f"BatchNormalization {name} has shape {np.shape(arr)}, expected ({cout},)")
    a = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    b = np.zeros(cout) if bias is None else np.asarray(bias, np.float64)
    new_w = weight.astype(np.float64) * a.reshape((cout,) + (1,) * (weight.ndim - 1))
    new_b = a * (b - np.asarray(mean, np.float64)) + np.asarray(beta, np.float64)
    return new_w.astype(weight.dtype), new_b.astype(weight.dtype)
