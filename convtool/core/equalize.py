"""Cross-layer equalization of two linear convs in a row (Nagel et al. 2019, "Data-Free
Quantization Through Weight Equalization and Bias Correction", section 4.1).

Pure numpy: this module knows nothing about ONNX.

The maths
---------
A converted layer computes, per rank component ``j`` of input channel ``i``, a depthwise
kernel ``v_j`` followed by a pointwise column ``s_j u_j``, with nothing in between.  The split
of scale between the two is free: for any ``c_j > 0``

    (s_j u_j / c_j) * conv(x, c_j v_j)  ==  (s_j u_j) * conv(x, v_j)

exactly (convolution is linear; a bias of the first conv is scaled with its kernel,
``c_j b_j``).  The SVD puts all scale into the pointwise column (``v_j`` has unit norm), so
columns of weak components are tiny next to strong ones, and INT8 - one scale per pointwise
output row, one per intermediate tensor - rounds them away.  With

    r1_m = max |first weight of channel m|,  r2_m = max |second weight of input channel m|

(for the depthwise -> pointwise pair: the depthwise kernel of channel ``m`` and column ``m`` of
the pointwise weight over all output rows of its group), the scale ``c_m = sqrt(r2_m / r1_m)``
makes both ranges ``sqrt(r1_m r2_m)``: each channel's share of the first conv's range equals
its share of the second's, the balance Nagel et al. show maximises the total precision of the
pair under per-tensor quantization.

Generic form (:func:`equalize_pair`): a first conv with ``M`` output channels (weight
``(M, ...)``, optional bias ``(M,)``) whose output feeds only a second conv with ``group = g``
and weight ``(N, M / g, ...)``; channel ``m`` of the intermediate tensor is input column
``m mod (M / g)`` of the second conv's output rows of group ``m // (M / g)``.  That covers
every emitted layout (see :mod:`convtool.graph.emit`): ``multiplier`` (depthwise with
multiplier ``r`` -> pointwise), ``repeat`` (the depthwise after the Concat -> pointwise),
``branches`` (each branch's depthwise -> pointwise) and ``pointwise_first`` (1x1 -> grouped
conv with ``group = Cout``).  Channels where either range is 0 keep ``c = 1``.

Computed in float64, returned in the weights' own dtype; exact up to that dtype's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Equalized", "channel_ranges", "equalize_pair", "imbalance"]


@dataclass(frozen=True)
class Equalized:
    """The rescaled weights (in the input dtype) and the scale applied to each channel."""

    first: np.ndarray
    first_bias: np.ndarray | None
    second: np.ndarray
    scales: np.ndarray  # (M,) float64: first channel m was multiplied by scales[m]
    ranges_before: tuple[np.ndarray, np.ndarray]
    ranges_after: tuple[np.ndarray, np.ndarray]


def _check(first: np.ndarray, second: np.ndarray, group: int) -> tuple[int, int]:
    m = first.shape[0]
    if group < 1 or second.shape[0] % group:
        raise ValueError(f"group {group} does not divide the second conv's {second.shape[0]} outputs")
    if second.shape[1] * group != m:
        raise ValueError(f"the second conv reads {second.shape[1] * group} channels, the first writes {m}")
    return m, second.shape[0] // group


def channel_ranges(first: np.ndarray, second: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """``(r1, r2)``: per intermediate channel, the max |weight| of the first conv's output
    channel and of the second conv's input column (over its group's output rows)."""
    m, n_g = _check(first, second, group)
    r1 = np.abs(first.astype(np.float64).reshape(m, -1)).max(axis=1)
    w2 = np.abs(second.astype(np.float64)).reshape(group, n_g, m // group, -1)  # (g, N_g, M_g, K2)
    r2 = w2.max(axis=(1, 3)).reshape(m)
    return r1, r2


def imbalance(r1: np.ndarray, r2: np.ndarray) -> float:
    """Geometric mean over channels of ``max(p1/p2, p2/p1)``, where ``p`` is a channel's range
    relative to its conv's largest one (1 = perfectly balanced; channels with a zero range are
    left out)."""
    keep = (r1 > 0) & (r2 > 0)
    if not keep.any():
        return 1.0
    p1 = r1[keep] / r1[keep].max()
    p2 = r2[keep] / r2[keep].max()
    return float(np.exp(np.mean(np.abs(np.log(p1 / p2)))))


def equalize_pair(first: np.ndarray, second: np.ndarray, group: int,
                  first_bias: np.ndarray | None = None) -> Equalized:
    """Rescale channel ``m`` of ``first`` (and ``first_bias``) by ``c_m = sqrt(r2_m / r1_m)``
    and input column ``m`` of ``second`` by ``1 / c_m`` (see the module docstring)."""
    m, n_g = _check(first, second, group)
    r1, r2 = channel_ranges(first, second, group)
    scales = np.ones(m, dtype=np.float64)
    ok = (r1 > 0) & (r2 > 0)
    scales[ok] = np.sqrt(r2[ok] / r1[ok])
    shape1 = (m,) + (1,) * (first.ndim - 1)
    new_first = (first.astype(np.float64) * scales.reshape(shape1)).astype(first.dtype)
    new_bias = None if first_bias is None else (first_bias.astype(np.float64) * scales).astype(first_bias.dtype)
    w2 = second.astype(np.float64).reshape(group, n_g, m // group, *second.shape[2:])
    inv = (1.0 / scales).reshape(group, 1, m // group, *(1,) * (second.ndim - 2))
    new_second = (w2 * inv).reshape(second.shape).astype(second.dtype)
    after = channel_ranges(new_first, new_second, group)
    return Equalized(new_first, new_bias, new_second, scales, (r1, r2), after)
