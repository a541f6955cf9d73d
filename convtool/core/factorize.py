"""Low-rank factorisation of a convolution kernel into depthwise + pointwise factors.

Pure numpy: this module knows nothing about ONNX.

The maths
---------
Let ``W`` be a Conv weight of shape ``(Cout, Cin_g, k_1, ..., k_d)`` with ``g`` groups
(``Cout = g * Cout_g``, ``Cin = g * Cin_g``) and ``K = prod(k)`` kernel elements.
For group ``gi`` and each of its input channels ``i`` the slice ``W[gi, :, i]``, reshaped to
a ``Cout_g x K`` matrix ``M``, has the SVD ``M = sum_j s_j u_j v_j^T``.  Keeping the top
``r`` terms gives the separable form

* depthwise Conv (``group = Cin``, ``Cin * r`` outputs): output channel ``c * r + j`` of input
  channel ``c = gi * Cin_g + i`` uses the kernel ``v_j`` reshaped to ``k``;
* pointwise 1x1 Conv (``group = g``, ``Cin * r -> Cout``): weight ``P[gi * Cout_g + o, i * r + j]
  = s_j u_j[o]``, plus the original bias.

Because convolution is linear in the kernel, the pair computes exactly the original Conv
when ``r = min(Cout_g, K)`` ("full rank"), and the relative Frobenius error of the kernel is
``sqrt(sum of dropped s_j^2 / sum of all s_j^2)`` otherwise.  The Conv's strides, pads,
dilations and auto_pad move to the depthwise Conv unchanged, so both convs run at the
original output resolution and the MACs per output pixel drop by the factor
``r / Cout_g + r / K``.

Pointwise-first orientation (``orientation="pointwise_first"``) factorises each *output*
channel instead: ``W[o]`` as ``Cin_g x K`` = ``sum_j s_j u_j v_j^T``; a 1x1 Conv
(``group = g``, ``Cin -> Cout * r``) with weight ``s_j u_j`` feeds a depthwise-style Conv
(``group = Cout``, ``Cout * r -> Cout``) whose kernel is ``v_j``.  MACs per pixel become
``Cin_g * Cout * r`` (at input resolution) plus ``Cout * r * K``, which is cheaper when a
layer has many more inputs than outputs.

Supported: 1-D, 2-D and 3-D kernels, any group count (each group factorises separately;
depthwise kernels, ``Cin_g == 1``, are not candidates), float16 / float32 / float64 weights.
All decompositions run in float64 in one batched ``numpy.linalg.svd`` call per layer; the
factors are returned in the weight's own dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Orientation = Literal["depthwise_first", "pointwise_first"]


@dataclass(frozen=True)
class Decomposition:
    """Batched SVD of one kernel, ready to be truncated at any rank.

    ``u``: ``(g, n, m, q)``, ``s``: ``(g, n, q)``, ``vt``: ``(g, n, q, K)`` where, for the
    depthwise-first orientation, ``n = Cin_g`` slices of ``m = Cout_g x K`` matrices and,
    for pointwise-first, ``n = Cout_g`` slices of ``m = Cin_g x K`` matrices.
    """

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    kernel_shape: tuple[int, ...]
    group: int
    dtype: np.dtype
    orientation: Orientation

    @property
    def full_rank(self) -> int:
        """The rank at which the factorisation is exact: ``min(m, K)``."""
        return int(self.s.shape[-1])

    @property
    def slices(self) -> int:
        """Number of factorised matrices per group (``Cin_g`` or ``Cout_g``)."""
        return int(self.s.shape[1])

    @property
    def rows(self) -> int:
        """Rows of each matrix (``Cout_g`` for depthwise-first, ``Cin_g`` for pointwise-first)."""
        return int(self.u.shape[2])


def decompose(
    weight: np.ndarray, group: int = 1, orientation: Orientation = "depthwise_first"
) -> Decomposition:
    """SVD of every per-channel kernel slice of ``weight`` in one batched call."""
    if weight.ndim < 3 or weight.ndim > 5:
        raise ValueError(f"expected a 1-D, 2-D or 3-D conv weight, got shape {weight.shape}")
    cout, cin_g = weight.shape[:2]
    kernel_shape = tuple(int(k) for k in weight.shape[2:])
    k = int(np.prod(kernel_shape))
    if group < 1 or cout % group:
        raise ValueError(f"group {group} does not divide {cout} output channels")
    cout_g = cout // group
    w = np.asarray(weight, dtype=np.float64).reshape(group, cout_g, cin_g, k)
    if orientation == "depthwise_first":
        mats = w.transpose(0, 2, 1, 3)  # (g, Cin_g, Cout_g, K)
    elif orientation == "pointwise_first":
        mats = w  # (g, Cout_g, Cin_g, K)
    else:
        raise ValueError(f"unknown orientation {orientation!r}")
    u, s, vt = _svd(mats)
    return Decomposition(u, s, vt, kernel_shape, group, np.dtype(weight.dtype), orientation)


def _svd(mats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of a batch of ``m x K`` matrices.

    When ``K <= m`` (the usual case: 9 kernel taps, many channels) it goes through the
    ``K x K`` Gram matrices: ``M^T M = V diag(s^2) V^T`` and ``u_j s_j = M v_j``.  Because ``V``
    is a complete orthonormal basis, ``M V V^T = M`` exactly at full rank whatever the
    conditioning; only singular values below ~1e-8 of the largest lose relative accuracy,
    which moves the reported error by less than that.  It is several times faster than
    LAPACK's batched SVD on conv-sized batches.
    """
    m, k = mats.shape[-2:]
    if k > m:
        return np.linalg.svd(mats, full_matrices=False)
    evals, evecs = np.linalg.eigh(np.swapaxes(mats, -1, -2) @ mats)
    evals, evecs = evals[..., ::-1], evecs[..., ::-1]
    s = np.sqrt(np.clip(evals, 0.0, None))
    us = mats @ evecs
    u = np.divide(us, s[..., None, :], out=np.zeros_like(us), where=s[..., None, :] > 0)
    return u, s, np.swapaxes(evecs, -1, -2)


def relative_error(dec: Decomposition, rank: int) -> float:
    """Relative Frobenius error ``||W - W_r|| / ||W||`` of the rank-``rank`` kernel."""
    energy = np.square(dec.s)
    total = float(energy.sum())
    if total == 0.0:
        return 0.0
    dropped = float(energy[..., rank:].sum())
    return float(np.sqrt(max(dropped, 0.0) / total))


def retained_energy(dec: Decomposition) -> np.ndarray:
    """Mean over slices of the fraction of spectral energy kept, for ranks 1..full_rank."""
    energy = np.square(dec.s).reshape(-1, dec.full_rank)
    totals = energy.sum(axis=1, keepdims=True)
    kept = np.cumsum(energy, axis=1)
    frac = np.divide(kept, totals, out=np.ones_like(kept), where=totals > 0)
    return frac.mean(axis=0)


def rank_for_energy(dec: Decomposition, energy: float) -> int:
    """Smallest rank whose retained energy, averaged over slices, reaches ``energy``."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    frac = retained_energy(dec)
    # tolerate float round-off at energy=1.0
    hits = np.nonzero(frac >= energy - 1e-12)[0]
    return int(hits[0]) + 1 if hits.size else dec.full_rank


def mac_ratio(cout_g: int, cin_g: int, kernel_size: int, rank: int, orientation: Orientation) -> float:
    """MACs per output pixel of the replacement divided by the original conv's.

    Depthwise-first: ``r / Cout_g + r / K``.  Pointwise-first: ``r / K + r / Cin_g`` (assuming
    the 1x1 conv runs at output resolution, which is true for stride 1).
    """
    if orientation == "depthwise_first":
        return rank / cout_g + rank / kernel_size
    return rank / kernel_size + rank / cin_g


@dataclass(frozen=True)
class Factors:
    """The two weights of the replacement, in the original dtype.

    Depthwise-first: ``first`` is the depthwise weight ``(Cin * r, 1, *k)``, ``second`` the
    pointwise weight ``(Cout, Cin_g * r, 1, ...)``.  Pointwise-first: ``first`` is the 1x1
    weight ``(Cout * r, Cin_g, 1, ...)``, ``second`` the depthwise weight ``(Cout, r, *k)``.
    """

    first: np.ndarray
    second: np.ndarray
    rank: int
    orientation: Orientation


def factors(dec: Decomposition, rank: int) -> Factors:
    """Truncate ``dec`` at ``rank`` (clamped to the full rank) and build both weights."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    r = min(rank, dec.full_rank)
    g, n, m = dec.group, dec.slices, dec.rows
    ones = (1,) * len(dec.kernel_shape)
    u = dec.u[..., :r]  # (g, n, m, r)
    s = dec.s[..., :r]  # (g, n, r)
    vt = dec.vt[:, :, :r, :]  # (g, n, r, K)
    spatial = vt.reshape(g * n * r, 1, *dec.kernel_shape)  # channel (gi*n + i)*r + j
    # mixing weight: out row gi*m + o, input column i*r + j  ->  s_j u_j[o]
    mix = (u * s[:, :, None, :]).transpose(0, 2, 1, 3).reshape(g * m, n * r, *ones)
    if dec.orientation == "depthwise_first":
        first, second = spatial, mix
    else:
        # 1x1 conv: output channel (gi*n + i)*r + j reads the Cin_g inputs of its group with
        # weight s_j u_j; then a grouped conv (group = Cout) sums the r channels of each output.
        first = (u * s[:, :, None, :]).transpose(0, 1, 3, 2).reshape(g * n * r, m, *ones)
        second = vt.reshape(g * n, r, *dec.kernel_shape)
    return Factors(first.astype(dec.dtype), second.astype(dec.dtype), r, dec.orientation)


def reconstruct(f: Factors, group: int) -> np.ndarray:
    """The (float64) kernel that the factor pair computes; for tests and error checks."""
    first = f.first.astype(np.float64)
    second = f.second.astype(np.float64)
    r = f.rank
    if f.orientation == "depthwise_first":
        k_shape = first.shape[2:]
        cin = first.shape[0] // r
        cout = second.shape[0]
        cin_g, cout_g = cin // group, cout // group
        v = first.reshape(group, cin_g, r, -1)  # (g, Cin_g, r, K)
        p = second.reshape(group, cout_g, cin_g, r)  # (g, Cout_g, Cin_g, r)
        w = np.einsum("gonr,gnrk->gonk", p, v)
        return w.reshape(cout, cin_g, *k_shape)
    k_shape = second.shape[2:]
    cout = second.shape[0]
    cin_g = first.shape[1]
    cout_g = cout // group
    a = first.reshape(group, cout_g, r, cin_g)  # s_j u_j per output
    v = second.reshape(group, cout_g, r, -1)
    w = np.einsum("gori,gork->goik", a, v)
    return w.reshape(cout, cin_g, *k_shape)
