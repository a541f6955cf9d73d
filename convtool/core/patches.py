"""Input patches of a convolution, as rows of a matrix (pure numpy).

A Conv with kernel ``k = (k_1, ..., k_d)`` (``K = prod(k)`` taps), strides ``s``, dilations
``dl`` and pads ``[begin_1..begin_d, end_1..end_d]`` (ONNX order, zero padding) computes, at
each output position ``q`` of each image ``n``,

    y[n, o, q] = b[o] + sum_{i, k} W[o, i, k] * patch[n, q][i, k]

where ``patch[n, q][i, k] = xpad[n, i, q * s + k * dl]``.  :func:`extract_patches` returns
those patches for every image and output position as an array ``(N * P, Cin, K)``
(``P = prod(out_spatial)``): row ``n * P + q`` with ``q`` the C-order index of the output
position, i.e. the order of ``y.reshape(N, Cout, P)`` read image by image, position by
position, which is what :func:`flatten_outputs` gives for ``y``.  The tap index is the C-order
index into ``k``, matching ``W.reshape(Cout, Cin_g, K)``.  Groups are the caller's business
(input channel ``c`` belongs to group ``c // Cin_g``).

1-D, 2-D and 3-D convs are handled alike through ``numpy.lib.stride_tricks.
sliding_window_view`` (no Python loop over positions); ``auto_pad`` must be resolved into
explicit pads by the caller.  The result is a copy of ``N * P * Cin * K`` elements in the
input's dtype: feed images in batches (see ``PatchMoments.update_conv`` in ``als.py``, which
chunks by image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_geometry(
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Normalised ``(strides, pads, dilations, out_spatial)`` for an input of ``spatial`` size."""
    d = len(kernel)
    if len(spatial) != d:
        raise ValueError(f"{len(spatial)}-D input for a {d}-D kernel")
    strides = tuple(int(s) for s in (strides if strides is not None else (1,) * d))
    dilations = tuple(int(v) for v in (dilations if dilations is not None else (1,) * d))
    pads = tuple(int(p) for p in (pads if pads is not None else (0,) * (2 * d)))
    if len(strides) != d or len(dilations) != d or len(pads) != 2 * d:
        raise ValueError(f"strides {strides}, dilations {dilations}, pads {pads} do not fit a {d}-D kernel")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0 or min(kernel) < 1:
        raise ValueError(f"invalid geometry: kernel {tuple(kernel)}, strides {strides}, pads {pads}, dilations {dilations}")
    out = []
    for i in range(d):
        extent = (int(kernel[i]) - 1) * dilations[i] + 1
        padded = int(spatial[i]) + pads[i] + pads[i + d]
        if padded < extent:
            raise ValueError(f"axis {i}: padded size {padded} is smaller than the dilated kernel {extent}")
        out.append((padded - extent) // strides[i] + 1)
    return strides, pads, dilations, tuple(out)


def extract_patches(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
) -> np.ndarray:
    """Patches ``(N * P, Cin, K)`` of ``x`` ``(N, Cin, *spatial)`` at every output position.

    ONNX semantics: ``pads = [begin_1..begin_d, end_1..end_d]``, zero padding.  Rows are ordered
    image-major, then output position in C order (as :func:`flatten_outputs`); taps in C order
    of ``kernel``.
    """
    x = np.asarray(x)
    d = len(kernel)
    if x.ndim != d + 2 or d < 1:
        raise ValueError(f"expected an (N, C, *spatial) input for a {d}-D kernel, got shape {x.shape}")
    kernel = tuple(int(k) for k in kernel)
    strides, pads, dilations, out = conv_geometry(x.shape[2:], kernel, strides, pads, dilations)
    if any(pads):
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + d]) for i in range(d)])
    extent = tuple((k - 1) * dl + 1 for k, dl in zip(kernel, dilations))
    win = sliding_window_view(x, extent, axis=tuple(range(2, 2 + d)))  # (N, C, *pos, *extent)
    index = (slice(None), slice(None))
    index += tuple(slice(0, o * s, s) for o, s in zip(out, strides))
    index += tuple(slice(None, None, dl) for dl in dilations)
    win = win[index]  # (N, C, *out, *kernel)
    perm = (0, *range(2, 2 + d), 1, *range(2 + d, 2 + 2 * d))
    n, c = x.shape[:2]
    return np.ascontiguousarray(win.transpose(perm)).reshape(n * int(np.prod(out)), c, int(np.prod(kernel)))


def flatten_outputs(y: np.ndarray) -> np.ndarray:
    """``(N, Cout, *out_spatial)`` -> ``(N * P, Cout)``, rows in the order of :func:`extract_patches`."""
    y = np.asarray(y)
    if y.ndim < 2:
        raise ValueError(f"expected an (N, C, ...) output, got shape {y.shape}")
    n, c = y.shape[:2]
    return y.reshape(n, c, -1).transpose(0, 2, 1).reshape(-1, c)
