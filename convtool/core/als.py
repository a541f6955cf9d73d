"""Data-aware fit of BOTH factors of a depthwise-separable replacement: alternating least squares
on streamed input-patch moments (pure numpy).

Setting
-------
A Conv layer (any of 1-D / 2-D / 3-D, any group, strides, pads, dilations) with the BN-folded
kernel ``W`` ``(Cout, Cin_g, *k)`` and bias ``b`` is replaced by a rank-``r`` pair (see
``factorize.py`` for the data-free SVD version and the layouts).  For one group (groups are
independent: each output depends on its own group's inputs only) let ``n = Cin_g``,
``m = Cout_g``, ``K = prod(k)``, and let ``p`` be the input patch under the kernel at one
output position, flattened channel-major (``p[i * K + k]``, see ``patches.py``); the layer
computes ``y = W p + b`` with ``W`` seen as an ``m x nK`` matrix.  A factor pair computes
``y_hat = A p + c`` with an *effective kernel* ``A`` of the same shape:

* depthwise-first: ``A[:, i] = P_i V_i^T`` per input channel ``i``; ``V_i`` ``(K x r)`` are the
  depthwise kernels ``v_ij``, ``P_i`` ``(m x r)`` the pointwise columns ``i * r + j``;
* pointwise-first: ``A[o] = U_o Vs_o^T`` per output channel ``o`` (``A[o]`` as ``n x K``);
  ``U_o`` ``(n x r)`` are the 1x1 weights, ``Vs_o`` ``(K x r)`` the spatial kernels.

Objective.  Given calibration batches - the layer INPUT ``x`` as the converted model sees it
and the TARGET ``y`` = the ORIGINAL layer's output (so ``y`` need not equal ``W * x``) - we
minimise the mean squared output error over all positions ``E||y - A p - c||^2``.  It only
involves the moments ``S = E[p_a p_a^T]`` (``p_a = [p; 1]``), ``C = E[y p_a^T]`` and
``E||y||^2``, which :class:`PatchMoments` streams in float64, batch by batch::

    err(A, c) = E||y||^2 - 2 <[A c], C> + <[A c] S, [A c]>.

The bias is unregularised, so it is eliminated exactly: ``c* = E[y] - A E[p]``, leaving
``f(A) = yyc - 2 <A, Cc> + <A Sc, A>`` with the centred moments ``Sc = Cov(p)``,
``Cc = Cov(y, p)``.  Every error reported here is computed from the moments (no second pass
over the data) as the relative L2 error ``||y - y_hat|| / ||y||``; values below ~1e-7 are at
the float64 cancellation floor of that formula.

Regulariser.  Ridge towards the ORIGINAL kernel, on the effective kernel::

    F(A) = f(A) + lam ||A - W||^2,     lam = alpha * trace(Sc) / N

(``N`` positions: the prior's weight relative to the data term is ``alpha * unknowns /
samples``, as in ``calibrate/refit.py``).  ``F`` is just ``f`` on modified moments
(``Sc + lam I``, ``Cc + lam W``), so both alternating steps below keep their closed forms,
``lam -> infinity`` gives back the data-free SVD factors, and - because the data-free pointwise
weights are ``P0_i = W_i V_i`` for orthonormal SVD kernels ``V_i`` - the pointwise step with
the SVD kernels is ``refit.py``'s "ridge towards the data-free weights" (on this module's
``lam`` scale; the prior does not depend on how the scale is split between the two factors).  ``alpha`` is chosen among
:data:`ALPHAS` by the error on held-out moments (``held``; without them, on ``fit``).

Alternating steps (depthwise-first; pointwise-first is the same with the roles of channels
and outputs swapped, one small solve per output channel).

* pointwise step, ``V`` fixed: with ``z = V^T p`` (the depthwise outputs, ``nr`` of them),
  ``G = V^T Sc' V`` and ``Cz = Cc' V``, the normal equations are ``P G = Cz`` (``nr x nr``,
  one right-hand side per output).
* depthwise step, ``P`` fixed: the output is linear in the kernels,
  ``y_hat = sum_{i,j} P[:, ij] v_ij^T p_i``, so with ``Q = P^T P`` the normal equations are
  ``H theta = g`` over all ``theta = (v_ij)`` of the group, ``H[(i k j), (b l m)] =
  Sc'[(i k), (b l)] Q[(i j), (b m)]``, ``g[i k j] = sum_o Cc'[o, (i k)] P[o, ij]`` - the exact
  joint solve over every channel of the group (size ``n K r``).  Above ``dense_limit``
  unknowns it runs preconditioned conjugate gradients, warm-started at the current kernels,
  with the per-channel block-diagonal part of ``H`` (the "each channel alone" approximation)
  as preconditioner: CG iterates minimise the quadratic over a growing space that contains
  the start, so even a truncated solve never increases ``F``.
* after each depthwise step ``V_i = Q_i R_i`` (QR) and ``P_i <- P_i R_i^T``: same ``A``,
  orthonormal kernels, well-scaled pointwise weights (as in the SVD factors).

Both steps minimise ``F`` exactly over their block (a tiny proximal term towards the current
value, ``1e-10`` of the mean curvature, keeps rank-deficient systems - dead channels, collinear
columns - solvable without ever moving ``F`` up), so ``F`` never increases: more iterations
never hurt the fit objective, and any iteration is kept only if ``F`` did not rise (a
safeguard against round-off).  Iterations stop after ``iterations`` rounds or when ``F``
improves by less than ``tol`` of its value at ``A = 0``.

Initialisation.  Whitened SVD.  Depthwise-first, per input channel: with ``Sc'_ii = L_i L_i^T``
(plus a ``1e-6`` relative ridge so ``L_i`` is invertible), ``W_i L_i = U s T^T``; the rank-r
minimiser of ``||(W_i - A_i) L_i||^2`` - the error channel ``i`` alone would cause - is
``P_i = U_r s_r``, ``V_i = L_i^{-T} T_r``.  Pointwise-first, per output channel, over the
whole ``nK`` covariance through its Kronecker approximation ``Sc' ~ S_chan (x) S_tap``
(channel and tap covariances, each the partial trace of ``Sc'``): the SVD of
``L_chan^T W_o L_tap`` gives the exact minimiser when the covariance separates.  The ALS starts
from whichever of {whitened kernels, SVD kernels}, each followed by a pointwise step, has the
lower ``F`` (``ALSResult.start``); since "SVD kernels + pointwise step" is exactly the
pointwise-only refit, the ALS result is, for the same ``alpha``, never worse on the fitted data
than that refit, which is never worse than the data-free factors: the pointwise step minimises
``F`` over the pointwise weights and bias, and the data-free ones (with any bias) are among
the candidates.  Both guarantees hold for ``F``; at ``alpha = 0`` for the fit error itself, and
so for the reported fit errors when ``held`` is None (``alpha = 0`` being in the grid, the
choice on ``fit`` can only do better).  On held-out data nothing is guaranteed: that is what
the held-out choice of ``alpha`` and the caller's "keep the best held-out candidate" are for.

Cases handled: depthwise-first and pointwise-first (branches / repeat / multiplier layouts use
the depthwise-first factors), 1-D / 2-D / 3-D kernels, any strides / pads / dilations (through
the patches), any group count, ``Cin_g = 1`` too, float16 / float32 / float64 weights (all
maths in float64, weights returned in the input dtype; errors are those of the float64
factors), dead (constant) input channels, rank clamped to the full rank (at full rank the
fit is exact for any target).

Memory bound and what happens above it (:class:`PatchMoments`).  Full moments cost, per
group, ``(nK + 1)^2`` float64 (``8 (nK + 1)^2`` bytes) plus ``m (nK + 1)`` for ``C``, and
``(nK + 1)^2 / 2`` multiply-adds per position to accumulate (a BLAS ``syrk``), i.e. about
``nK / (2m)`` times the layer's own forward pass.  The default :data:`FULL_LIMIT` ``= 1152``
(128 channels x 3x3) keeps that at <= 10.6 MB per group and <= 0.66 M multiply-adds per
position (4.5x the forward pass of a 128 -> 128 3x3 layer; subsample positions to spend
less), and one pass over ``S`` (what a PCG step or a pointwise step costs) at ~3 ms.  Above it (``Cin_g * K > full_limit``) the moments are
collected in a *subspace* ("subspace" mode): each input channel's patch is projected on
``q = max(1, full_limit // Cin_g)`` tap directions (or ``taps``), the top right singular
vectors of the channel's kernel slice ``W_i`` (``m x K``), and the full cross-channel moments
of those ``n q`` features are kept, ``C`` too in those coordinates (memory ``8 (n q + 1)^2``
bytes per group, i.e. the same bound, or ``8 (n + 1)^2`` when ``n > full_limit``).  In that subspace everything above stays
EXACT - errors, held-out choice, monotone ALS - for factors whose depthwise kernels lie in the
span of those directions, which holds for the data-free and pointwise-only factors when
``rank <= q``, and the ALS (whitened start included, whitened within the subspace) is
restricted to it.  Per-channel ``K x K`` blocks alone (a
block-diagonal covariance) were rejected: without the cross-channel terms neither the output
error nor the pointwise solve is computable, so the held-out "keep it only if it helps" test
would be guesswork.  Cases not covered, returned as the data-free factors with errors ``nan``
and ``mode`` saying why: pointwise-first with subspace moments (its spatial kernels differ per
output channel and do not share per-input-channel directions), and ``rank > q`` in subspace
mode (pass ``taps=rank`` to :meth:`PatchMoments.for_layer` to cover it).

Cost of a fit.  Per alpha and iteration and group: the depthwise step, dense
``(nKr)^3 / 3`` flops (``<= dense_limit`` unknowns, default 512) or PCG (block-Jacobi
preconditioned, warm-started; it typically converges in under 10 steps) at one pass over
``S`` (``~(nK)^2 r``) per step; the pointwise step one pass over ``S`` plus ``(nr)^3 / 3``
(pointwise-first: one ``m r^2 (nK)^2`` GEMM per step and ``m`` small solves).  Measured with one
BLAS thread (CPU seconds, 6 alphas x up to 10 rounds, on a shared 2-core machine):
64 -> 64 3x3, 51200 positions: accumulate 1.0 s, fit 0.3 s (rank 1) / 0.9 s (rank 2);
128 -> 128: 3.4 s, 1.7 s / 4.5 s; 256 -> 256 (subspace, q = 4): 6.4 s, 2.8 s / 6.3 s.  Run it
with one BLAS thread (``calibrate.refit.few_blas_threads``): this module imports numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np

from .patches import conv_geometry, extract_patches, flatten_outputs

Orientation = Literal["depthwise_first", "pointwise_first"]

#: Largest ``Cin_g * K`` with full cross-channel moments (see the module docstring).
FULL_LIMIT = 1152
#: Largest depthwise-step system (``Cin_g * K * r`` unknowns) solved densely; PCG above it.
DENSE_LIMIT = 512
#: Candidate ridge strengths (relative to samples per unknown), tried on held-out moments.
ALPHAS: tuple[float, ...] = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Default maximum number of ALS rounds (depthwise step + pointwise step).
ITERATIONS = 10
#: Stop when a round improves the objective by less than this fraction of its value at A = 0.
TOL = 1e-7

_PROX = 1e-10  # proximal jitter, relative to the mean curvature
_WHITEN_RIDGE = 1e-6  # ridge added to the covariances before Cholesky, relative
_TINY = 1e-300


# --------------------------------------------------------------------------- moments


@dataclass
class PatchMoments:
    """Streaming float64 sums of one layer's patch moments, per group.

    ``pp``: ``(g, D+1, D+1)`` sums of ``p_a p_a^T``, ``yp``: ``(g, m, D+1)`` sums of
    ``y p_a^T``, ``yy``: ``(g,)`` sums of ``||y_g||^2``, ``count``: positions seen, where
    ``p_a = [p; 1]`` and ``p`` is the group's patch (``D = Cin_g * K``, full mode) or its
    projection on ``basis`` (``D = Cin_g * q``, subspace mode; ``basis`` ``(Cin, K, q)`` holds
    orthonormal tap directions per input channel).  Memory: ``8 * g * ((D+1)^2 + m (D+1))``
    bytes; see the module docstring for the limit and what happens above it.
    """

    group: int
    cout_g: int
    kernel_shape: tuple[int, ...]
    cin_g: int
    basis: np.ndarray | None
    pp: np.ndarray
    yp: np.ndarray
    yy: np.ndarray
    count: int = 0

    @classmethod
    def for_layer(cls, weight: np.ndarray, group: int = 1, *, full_limit: int = FULL_LIMIT,
                  taps: int | None = None) -> PatchMoments:
        """Empty moments for a Conv with kernel ``weight`` ``(Cout, Cin_g, *k)`` and ``group``.

        Full moments when ``Cin_g * K <= full_limit`` (and ``taps`` is None or ``>= K``);
        otherwise subspace moments over ``q = taps or max(1, full_limit // Cin_g)`` tap
        directions per input channel, taken from ``weight`` (pass the same, BN-folded, kernel
        to the fit).
        """
        w = np.asarray(weight)
        if w.ndim < 3 or w.ndim > 5:
            raise ValueError(f"expected a 1-D, 2-D or 3-D conv weight, got shape {w.shape}")
        cout, cin_g = int(w.shape[0]), int(w.shape[1])
        kshape = tuple(int(v) for v in w.shape[2:])
        k = math.prod(kshape)
        if group < 1 or cout % group:
            raise ValueError(f"group {group} does not divide {cout} output channels")
        basis = None
        if cin_g * k > full_limit or (taps is not None and taps < k):
            q = min(int(taps) if taps is not None else max(1, full_limit // cin_g), k)
            if q < 1:
                raise ValueError(f"taps must be >= 1, got {taps}")
            if q < k:
                basis = _tap_basis(w, group, q)
        t = k if basis is None else int(basis.shape[2])
        d, m = cin_g * t, cout // group
        return cls(group, m, kshape, cin_g, basis, np.zeros((group, d + 1, d + 1)),
                   np.zeros((group, m, d + 1)), np.zeros(group))

    # -- properties
    @property
    def mode(self) -> str:
        """``"full"`` or ``"subspace"``."""
        return "full" if self.basis is None else "subspace"

    @property
    def kernel_size(self) -> int:
        return math.prod(self.kernel_shape)

    @property
    def taps(self) -> int:
        """Coordinates kept per input channel: ``K`` (full) or ``q`` (subspace)."""
        return self.kernel_size if self.basis is None else int(self.basis.shape[2])

    @property
    def dim(self) -> int:
        """``D``: length of one group's (projected) patch vector."""
        return self.cin_g * self.taps

    @property
    def nbytes(self) -> int:
        return int(self.pp.nbytes + self.yp.nbytes + self.yy.nbytes)

    # -- accumulation
    def empty_like(self) -> PatchMoments:
        """Empty moments of the same layer and basis (e.g. for the held-out samples)."""
        return PatchMoments(self.group, self.cout_g, self.kernel_shape, self.cin_g, self.basis,
                            np.zeros_like(self.pp), np.zeros_like(self.yp), np.zeros_like(self.yy))

    def update(self, patches: np.ndarray, y: np.ndarray, positions: np.ndarray | None = None) -> None:
        """Add positions: ``patches`` ``(R, Cin, K)`` (:func:`patches.extract_patches`) and ``y``
        ``(R, Cout)`` (:func:`patches.flatten_outputs`; an ``(N, Cout, *out)`` array is
        flattened here), same row order.  ``positions``: optional row indices (subsampling,
        seeded by the caller)."""
        p = np.asarray(patches)
        yv = np.asarray(y)
        if yv.ndim != 2:
            yv = flatten_outputs(yv)
        cin, cout = self.cin_g * self.group, self.cout_g * self.group
        if p.ndim != 3 or p.shape[1:] != (cin, self.kernel_size):
            raise ValueError(f"patches must be (rows, {cin}, {self.kernel_size}), got {p.shape}")
        if yv.shape != (p.shape[0], cout):
            raise ValueError(f"outputs must be ({p.shape[0]}, {cout}), got {yv.shape}")
        if positions is not None:
            positions = np.asarray(positions)
            p, yv = p[positions], yv[positions]
        rows = int(p.shape[0])
        step = max(256, (1 << 23) // (self.dim + 1))  # <= ~64 MB of float64 temporaries
        for s in range(0, rows, step):
            self._add(p[s:s + step], yv[s:s + step])
        self.count += rows

    def update_conv(self, x: np.ndarray, y: np.ndarray, strides=None, pads=None, dilations=None,
                    positions: np.ndarray | None = None, max_elements: int = 1 << 24) -> None:
        """Add one batch given as tensors: ``x`` ``(N, Cin, *spatial)`` (the layer's input in
        the converted model), ``y`` ``(N, Cout, *out_spatial)`` (the original layer's output);
        ONNX ``strides`` / ``pads`` / ``dilations``.  Patches are extracted image-chunk by
        image-chunk (at most ``max_elements`` patch elements at a time).  ``positions``: optional
        row indices (or a boolean mask) into the batch's ``N * P`` positions (image-major, as
        :func:`patches.flatten_outputs`); ``auto_pad`` must be resolved into ``pads`` first."""
        x = np.asarray(x)
        y = np.asarray(y)
        _, _, _, out = conv_geometry(x.shape[2:], self.kernel_shape, strides, pads, dilations)
        if y.shape != (x.shape[0], self.cout_g * self.group, *out):
            raise ValueError(f"outputs must be {(x.shape[0], self.cout_g * self.group, *out)}, got {y.shape}")
        n_img, npos = int(x.shape[0]), math.prod(out)
        per = max(1, max_elements // max(1, npos * x.shape[1] * self.kernel_size))
        if positions is not None:
            positions = np.asarray(positions)
            positions = np.flatnonzero(positions) if positions.dtype == bool else np.sort(positions.astype(np.int64))
        for a in range(0, n_img, per):
            b = min(a + per, n_img)
            sel = None
            if positions is not None:
                lo, hi = np.searchsorted(positions, [a * npos, b * npos])
                if lo == hi:
                    continue
                sel = positions[lo:hi] - a * npos
            patches = extract_patches(x[a:b], self.kernel_shape, strides, pads, dilations)
            self.update(patches, flatten_outputs(y[a:b]), sel)

    def _add(self, p: np.ndarray, y: np.ndarray) -> None:
        p = p.astype(np.float64, copy=False)
        y = y.astype(np.float64, copy=False)
        if self.basis is not None:
            p = np.matmul(p.transpose(1, 0, 2), self.basis).transpose(1, 0, 2)  # (R, Cin, q)
        rows, n, m, d = p.shape[0], self.cin_g, self.cout_g, self.dim
        pa = np.empty((rows, d + 1))
        pa[:, d] = 1.0
        for gi in range(self.group):  # 2-D products go to BLAS (syrk for pa.T @ pa)
            pa[:, :d] = p[:, gi * n:(gi + 1) * n].reshape(rows, d)
            self.pp[gi] += pa.T @ pa
            yg = y[:, gi * m:(gi + 1) * m]
            self.yp[gi] += yg.T @ pa
            self.yy[gi] += float(np.einsum("ij,ij->", yg, yg))

    def _check_compatible(self, other: PatchMoments) -> None:
        same = (self.group, self.cout_g, self.kernel_shape, self.cin_g, self.pp.shape) == (
            other.group, other.cout_g, other.kernel_shape, other.cin_g, other.pp.shape)
        if same and (self.basis is None) == (other.basis is None) and (
                self.basis is None or np.array_equal(self.basis, other.basis)):
            return
        raise ValueError("moments of different layers (or different subspaces) cannot be combined")

    def __iadd__(self, other: PatchMoments) -> Self:
        self._check_compatible(other)
        self.pp += other.pp
        self.yp += other.yp
        self.yy += other.yy
        self.count += other.count
        return self

    def merged(self, other: PatchMoments) -> PatchMoments:
        """New moments holding the positions of both."""
        self._check_compatible(other)
        return PatchMoments(self.group, self.cout_g, self.kernel_shape, self.cin_g, self.basis,
                            self.pp + other.pp, self.yp + other.yp, self.yy + other.yy,
                            self.count + other.count)

    # -- evaluation
    def sq_error(self, kernel: np.ndarray, bias: np.ndarray) -> float:
        """Mean squared output error of the effective ``kernel`` ``(g, m, D)`` (moment
        coordinates) and ``bias`` ``(g, m)``."""
        if self.count == 0:
            raise ValueError("no positions accumulated")
        total = 0.0
        for gi in range(self.group):
            aa = np.concatenate([kernel[gi], bias[gi][:, None]], axis=1)
            total += float(self.yy[gi] - 2.0 * np.vdot(aa, self.yp[gi]) + np.vdot(aa @ self.pp[gi], aa))
        return max(total, 0.0) / self.count

    def rel_error(self, kernel: np.ndarray, bias: np.ndarray) -> float:
        """``||y - y_hat|| / ||y||`` of an effective kernel in moment coordinates."""
        sq = self.sq_error(kernel, bias)
        ref = float(self.yy.sum()) / self.count
        if ref <= 0.0:
            return 0.0 if sq <= 0.0 else float("inf")
        return float(np.sqrt(sq / ref))

    def reduce(self, kernel: np.ndarray, tol: float = 1e-3) -> np.ndarray:
        """Effective kernel ``(Cout, Cin_g, *k)`` or ``(g, m, n, K)`` -> moment coordinates
        ``(g, m, D)``.  Subspace mode: the kernel is projected on the basis, and a ValueError is
        raised when more than ``tol`` (relative) of it lies outside (its error is not computable
        from these moments; float16 rounding of in-span factors stays far below 1e-3)."""
        g, m, n, k = self.group, self.cout_g, self.cin_g, self.kernel_size
        a = np.asarray(kernel, dtype=np.float64).reshape(g, m, n, k)
        if self.basis is None:
            return a.reshape(g, m, n * k)
        b = self.basis.reshape(g, n, k, self.taps)
        red = np.einsum("gonk,gnkt->gont", a, b)
        outside = a - np.einsum("gont,gnkt->gonk", red, b)
        scale = float(np.linalg.norm(a))
        if float(np.linalg.norm(outside)) > tol * max(scale, _TINY):
            raise ValueError("kernel leaves the subspace these moments were collected in")
        return red.reshape(g, m, n * self.taps)


def _tap_basis(w: np.ndarray, group: int, q: int) -> np.ndarray:
    """Top-``q`` right singular vectors of every depthwise-first slice ``W_i`` (``m x K``):
    ``(Cin, K, q)``, orthonormal columns, in decreasing singular value."""
    cout, cin_g = w.shape[:2]
    k = math.prod(w.shape[2:])
    mats = np.asarray(w, dtype=np.float64).reshape(group, cout // group, cin_g, k).transpose(0, 2, 1, 3)
    _, vecs = np.linalg.eigh(np.swapaxes(mats, -1, -2) @ mats)  # ascending
    return np.ascontiguousarray(vecs[..., ::-1][..., :q].reshape(group * cin_g, k, q))


# --------------------------------------------------------------------------- per-group problem


@dataclass
class _Problem:
    """One group's regularised problem in mean form: ``F(A) = const - 2 <A, C> + <A S, A>``."""

    s: np.ndarray  # (D, D)  Sc + lam I
    c: np.ndarray  # (m, D)  Cc + lam W
    const: float  # yyc + lam ||W||^2
    mu: np.ndarray  # (D,)
    ybar: np.ndarray  # (m,)
    n: int
    t: int

    def objective(self, a: np.ndarray) -> float:
        return float(self.const - 2.0 * np.vdot(a, self.c) + np.vdot(a @ self.s, a))

    def bias(self, a: np.ndarray) -> np.ndarray:
        return self.ybar - a @ self.mu


def _problems(mom: PatchMoments, w_red: np.ndarray, alpha: float) -> list[_Problem]:
    """Centred, regularised problems of every group; ``w_red`` ``(g, m, D)``."""
    out = []
    nn = mom.count
    d = mom.dim
    for gi in range(mom.group):
        pp, yp = mom.pp[gi] / nn, mom.yp[gi] / nn
        mu, ybar = pp[d, :d], yp[:, d]
        sc = pp[:d, :d] - np.outer(mu, mu)
        sc = 0.5 * (sc + sc.T)
        cc = yp[:, :d] - np.outer(ybar, mu)
        yyc = float(mom.yy[gi] / nn - ybar @ ybar)
        lam = alpha * float(np.trace(sc)) / nn
        out.append(_Problem(sc + lam * np.eye(d), cc + lam * w_red[gi],
                            yyc + lam * float(np.vdot(w_red[gi], w_red[gi])), mu, ybar, mom.cin_g, mom.taps))
    return out


def _prox_solve(h: np.ndarray, rhs: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, float]:
    """``x = argmin x^T h x - 2 rhs^T x + eps ||x - prev||^2`` and the value ``x^T h x - 2 rhs^T x``
    (without the proximal term): ``h`` ``(d, d)`` with ``rhs`` ``(d,)`` or ``(rows, d)`` (one
    solution per row, values summed), or ``h`` ``(B, d, d)`` with ``rhs`` ``(B, d)``.
    Overwrites ``h`` (callers pass freshly built systems)."""
    dim = h.shape[-1]
    eps = _PROX * max(float(np.trace(h, axis1=-2, axis2=-1).max()) / dim, _TINY)
    diag = np.einsum("...ii->...i", h)  # a view: add eps in place, no (d, d) identity
    diag += eps
    r = rhs + eps * prev
    try:
        if h.ndim == 2:  # one system, many right-hand sides (rows of r): a single factorisation
            x = np.linalg.solve(h, r.T).T if r.ndim == 2 else np.linalg.solve(h, r)
        else:
            x = np.linalg.solve(h, r[..., None])[..., 0]
    except np.linalg.LinAlgError:
        if h.ndim == 2:
            x = np.linalg.lstsq(h, r.T if r.ndim == 2 else r, rcond=None)[0]
            x = x.T if r.ndim == 2 else x
        else:
            x = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(h, r)])
    if h.ndim == 2:
        quad = float(np.vdot(x @ h, x))
    else:
        quad = float(np.einsum("bi,bij,bj->", x, h, x))
    return x, quad - eps * float(np.vdot(x, x)) - 2.0 * float(np.vdot(x, rhs))


def _chol(cov: np.ndarray) -> np.ndarray:
    """Cholesky of a batch of covariances after a small relative ridge."""
    dim = cov.shape[-1]
    diag = np.trace(cov, axis1=-2, axis2=-1) / dim
    floor = 1e-12 * max(float(np.mean(diag)), 0.0) + _TINY
    ridge = _WHITEN_RIDGE * np.maximum(diag, 0.0) + floor
    return np.linalg.cholesky(cov + ridge[..., None, None] * np.eye(dim))


# --------------------------------------------------------------------------- depthwise-first


class _DepthwiseFirst:
    """``V`` ``(n, t, r)`` depthwise kernels, ``P`` ``(m, n, r)`` pointwise weights."""

    def __init__(self, dense_limit: int, cg_steps: int):
        self.dense_limit, self.cg_steps = dense_limit, cg_steps

    @staticmethod
    def effective(p: np.ndarray, v: np.ndarray) -> np.ndarray:
        m, n, _ = p.shape
        return np.einsum("oij,ikj->oik", p, v).reshape(m, n * v.shape[1])

    @staticmethod
    def data_free(w3: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """``w3`` ``(m, n, t)`` -> SVD factors per input channel."""
        u, s, vh = np.linalg.svd(w3.transpose(1, 0, 2), full_matrices=False)  # (n, m, q) ...
        return vh[:, :r, :].transpose(0, 2, 1), (u[:, :, :r] * s[:, None, :r]).transpose(1, 0, 2)

    def whitened(self, pr: _Problem, w3: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        n, t = pr.n, pr.t
        s4 = pr.s.reshape(n, t, n, t)
        lo = _chol(np.einsum("ikil->ikl", s4))  # (n, t, t)
        u, s, vh = np.linalg.svd(w3.transpose(1, 0, 2) @ lo, full_matrices=False)
        v = np.linalg.solve(np.swapaxes(lo, -1, -2), vh[:, :r, :].transpose(0, 2, 1))
        p = (u[:, :, :r] * s[:, None, :r]).transpose(1, 0, 2)
        return self.normalise(v, p)

    @staticmethod
    def normalise(v: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, rr = np.linalg.qr(v)
        return q, np.einsum("oij,ilj->oil", p, rr)

    @staticmethod
    def pointwise(pr: _Problem, v: np.ndarray, p_prev: np.ndarray) -> np.ndarray:
        n, t, r = v.shape
        m = pr.c.shape[0]
        # X[b, (i,k), m'] = sum_l S[(i,k), (b,l)] v[b, l, m']
        x = pr.s.reshape(n * t, n, t).transpose(1, 0, 2) @ v
        x = x.reshape(n, n, t, r).transpose(1, 2, 0, 3).reshape(n, t, n * r)  # [i, k, (b, m')]
        gz = (v.transpose(0, 2, 1) @ x).reshape(n * r, n * r)  # [(i, j), (b, m')]
        gz = 0.5 * (gz + gz.T)
        cz = (pr.c.reshape(m, n, t).transpose(1, 0, 2) @ v).transpose(1, 0, 2).reshape(m, n * r)
        p, value = _prox_solve(gz, cz, p_prev.reshape(m, n * r))
        return p.reshape(m, n, r), pr.const + value

    def depthwise(self, pr: _Problem, p: np.ndarray, v_prev: np.ndarray) -> np.ndarray:
        m, n, r = p.shape
        t = pr.t
        pm = p.reshape(m, n * r)
        q = (pm.T @ pm).reshape(n, r, n, r)
        rhs = pr.c.reshape(m, n, t).transpose(1, 2, 0) @ p.transpose(1, 0, 2)  # (n, t, r)
        s4 = pr.s.reshape(n, t, n, t)
        dim = n * t * r
        if dim <= self.dense_limit:  # S and Q are symmetric, so is H
            h = (s4[:, :, None, :, :, None] * q[:, None, :, :, None, :]).reshape(dim, dim)
            return _prox_solve(h, rhs.reshape(dim), v_prev.reshape(dim))[0].reshape(n, t, r)
        return self._pcg(s4, q, rhs, v_prev)

    def _pcg(self, s4: np.ndarray, q: np.ndarray, rhs: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """Preconditioned CG on ``H theta = rhs`` from ``v0`` (block-Jacobi per channel)."""
        n, t, _, _ = s4.shape
        r = q.shape[1]
        s_cols = s4.transpose(2, 0, 1, 3).reshape(n, n * t, t)  # [b, (i,k), l]
        q_rows = q.reshape(n, r, n * r).transpose(0, 2, 1)  # [i, (b,m), j]
        sd = np.einsum("ikil->ikl", s4)
        qd = np.einsum("ijim->ijm", q)
        blocks = np.einsum("ikl,ijm->ikjlm", sd, qd).reshape(n, t * r, t * r)
        eps = _PROX * max(float(np.trace(blocks, axis1=1, axis2=2).sum()) / (n * t * r), _TINY)
        blocks = blocks + eps * np.eye(t * r)
        try:
            pinv = np.linalg.inv(blocks)
        except np.linalg.LinAlgError:
            pinv = np.linalg.pinv(blocks)

        def hmul(th: np.ndarray) -> np.ndarray:
            x = (s_cols @ th).reshape(n, n, t, r).transpose(1, 2, 0, 3).reshape(n, t, n * r)
            return x @ q_rows + eps * th

        def precond(res: np.ndarray) -> np.ndarray:
            return (pinv @ res.reshape(n, t * r, 1)).reshape(n, t, r)

        target = rhs + eps * v0  # prox term towards the start, as in the dense solve
        x = v0.copy()
        res = target - hmul(x)
        z = precond(res)
        d = z.copy()
        rz = float(np.vdot(res, z))
        stop = 1e-10 * max(float(np.linalg.norm(target)), _TINY)
        for _ in range(self.cg_steps):
            if float(np.linalg.norm(res)) <= stop or rz <= 0.0:
                break
            hd = hmul(d)
            curv = float(np.vdot(d, hd))
            if curv <= 0.0:
                break
            step = rz / curv
            x += step * d
            res -= step * hd
            z = precond(res)
            rz_new = float(np.vdot(res, z))
            d = z + (rz_new / rz) * d
            rz = rz_new
        return x


# --------------------------------------------------------------------------- pointwise-first


class _PointwiseFirst:
    """``V`` = ``Vs`` ``(m, t, r)`` spatial kernels, ``P`` = ``U`` ``(m, n, r)`` 1x1 weights."""

    @staticmethod
    def effective(u: np.ndarray, vs: np.ndarray) -> np.ndarray:
        m, n, _ = u.shape
        return np.einsum("oij,okj->oik", u, vs).reshape(m, n * vs.shape[1])

    @staticmethod
    def data_free(w3: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        u, s, vh = np.linalg.svd(w3, full_matrices=False)  # (m, n, q), (m, q), (m, q, t)
        return vh[:, :r, :].transpose(0, 2, 1), u[:, :, :r] * s[:, None, :r]

    def whitened(self, pr: _Problem, w3: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        n, t = pr.n, pr.t
        s4 = pr.s.reshape(n, t, n, t)
        lc = _chol(np.einsum("ikbk->ib", s4) / t)
        lt = _chol(np.einsum("ikil->kl", s4) / n)
        uu, s, vh = np.linalg.svd(lc.T @ w3 @ lt, full_matrices=False)
        u = np.linalg.solve(lc.T, uu[:, :, :r] * s[:, None, :r])
        vs = np.linalg.solve(lt.T, vh[:, :r, :].transpose(0, 2, 1))
        return self.normalise(vs, u)

    @staticmethod
    def normalise(vs: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, rr = np.linalg.qr(vs)
        return q, np.einsum("oij,olj->oil", u, rr)

    @staticmethod
    def _blocks(pr: _Problem, tap_major: bool) -> np.ndarray:
        """``S`` as ``(t*t, n*n)`` ``[(k, l), (i, b)]`` (tap-major) or ``(n*n, t*t)``."""
        n, t = pr.n, pr.t
        s4 = pr.s.reshape(n, t, n, t)
        if tap_major:
            return np.ascontiguousarray(s4.transpose(1, 3, 0, 2)).reshape(t * t, n * n)
        return np.ascontiguousarray(s4.transpose(0, 2, 1, 3)).reshape(n * n, t * t)

    @staticmethod
    def _two_sided(f: np.ndarray, blocks: np.ndarray, inner: int, outer: int) -> np.ndarray:
        """``H[o, (a, j), (c, m')] = sum_{x, y} f[o, x, j] f[o, y, m'] B[(x, y), (a, c)]`` for
        every ``o``: one GEMM with ``(x, y)`` as the inner dimension, chunked over ``o``."""
        m, _, r = f.shape
        out = np.empty((m, outer * r, outer * r))
        step = max(1, (1 << 23) // max(1, r * r * max(inner * inner, outer * outer)))
        for a in range(0, m, step):
            fc = f[a:a + step]
            c = fc.shape[0]
            wts = (fc.transpose(0, 2, 1)[:, :, None, :, None] * fc.transpose(0, 2, 1)[:, None, :, None, :])
            hb = (wts.reshape(c * r * r, inner * inner) @ blocks).reshape(c, r, r, outer, outer)
            out[a:a + c] = hb.transpose(0, 3, 1, 4, 2).reshape(c, outer * r, outer * r)
        return out

    def pointwise(self, pr: _Problem, vs: np.ndarray, u_prev: np.ndarray) -> tuple[np.ndarray, float]:
        # H_o[(i, j), (b, m')] = sum_{k, l} vs[o, k, j] vs[o, l, m'] S[(i, k), (b, l)]
        m, t, r = vs.shape
        n = pr.n
        rhs = pr.c.reshape(m, n, t) @ vs  # (m, n, r)
        h = self._two_sided(vs, self._blocks(pr, tap_major=True), t, n)
        h = 0.5 * (h + np.swapaxes(h, 1, 2))
        u, value = _prox_solve(h, rhs.reshape(m, n * r), u_prev.reshape(m, n * r))
        return u.reshape(m, n, r), pr.const + value

    def depthwise(self, pr: _Problem, u: np.ndarray, vs_prev: np.ndarray) -> np.ndarray:
        # H_o[(k, j), (l, m')] = sum_{i, b} u[o, i, j] u[o, b, m'] S[(i, k), (b, l)]
        m, n, r = u.shape
        t = pr.t
        rhs = pr.c.reshape(m, n, t).transpose(0, 2, 1) @ u  # (m, t, r)
        h = self._two_sided(u, self._blocks(pr, tap_major=False), n, t)
        h = 0.5 * (h + np.swapaxes(h, 1, 2))
        return _prox_solve(h, rhs.reshape(m, t * r), vs_prev.reshape(m, t * r))[0].reshape(m, t, r)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class Errors:
    """Relative output errors ``||y - y_hat|| / ||y||`` on the fitted and held-out moments."""

    fit: float
    held: float | None


@dataclass(frozen=True)
class ALSResult:
    """Outcome of one layer's fit.  Weights in ``weight``'s dtype, layouts as ``factorize.py``:

    depthwise-first: ``first`` ``(Cin * r, 1, *k)`` (channel ``c * r + j`` = kernel ``v_j`` of
    input channel ``c``), ``second`` ``(Cout, Cin_g * r, 1, ...)`` (column ``i * r + j`` of
    group ``gi``); pointwise-first: ``first`` ``(Cout * r, Cin_g, 1, ...)`` (1x1 weights of
    output ``o``, term ``j`` at channel ``o * r + j``), ``second`` ``(Cout, r, *k)``.
    ``bias`` ``(Cout,)`` belongs to the second conv.  ``refit_*``: the pointwise-only refit
    (SVD depthwise kernels, least-squares pointwise weights, its own alpha).

    Errors: ``data_free`` (SVD factors, original bias), ``pointwise`` (the refit), ``als``;
    ``fit`` on ``fit`` (on fit + held with ``final_on_all``), ``held`` on ``held`` (measured
    before any final solve), ``None`` without held moments, ``nan`` when not computable.
    ``history``: sqrt of the regularised objective over ``E||y||^2`` after the start and each
    round, summed over groups (equal to the fit error at ``alpha = 0``).
    """

    first: np.ndarray
    second: np.ndarray
    bias: np.ndarray
    rank: int
    orientation: Orientation
    mode: str
    alpha: float | None
    iterations: int
    start: str
    data_free: Errors
    pointwise: Errors
    als: Errors
    refit_first: np.ndarray
    refit_second: np.ndarray
    refit_bias: np.ndarray
    refit_alpha: float | None
    history: tuple[float, ...]
    fit_positions: int
    held_positions: int

    @property
    def best(self) -> str:
        """``"als"``, ``"pointwise"`` or ``"data-free"``: lowest held-out error (fit error
        without held moments); ties go to the simpler candidate."""
        def key(e: Errors) -> float:
            v = e.held if e.held is not None else e.fit
            return v if np.isfinite(v) else float("inf")
        order = [("data-free", self.data_free), ("pointwise", self.pointwise), ("als", self.als)]
        best_name, best_err = order[0][0], key(order[0][1])
        for name, e in order[1:]:
            if key(e) < best_err:
                best_name, best_err = name, key(e)
        return best_name


@dataclass
class _Run:
    v: list[np.ndarray]
    p: list[np.ndarray]
    kernel: np.ndarray  # (g, m, D)
    bias: np.ndarray  # (g, m)
    history: list[float]
    iterations: int
    start: str


def fit_depthwise_first(weight: np.ndarray, bias: np.ndarray | None, fit: PatchMoments,
                        held: PatchMoments | None = None, rank: int = 1, *,
                        iterations: int = ITERATIONS, alphas: tuple[float, ...] = ALPHAS,
                        tol: float = TOL, final_on_all: bool = False,
                        dense_limit: int = DENSE_LIMIT, cg_steps: int = 100) -> ALSResult:
    """Fit depthwise kernels and pointwise weights of a depthwise-first rank-``rank`` pair.

    ``weight`` ``(Cout, Cin_g, *k)``: the BN-folded original kernel (the one the moments were
    built for), ``bias`` ``(Cout,)`` or None; ``fit`` / ``held``: moments of the same layer.
    ``alpha`` is chosen among ``alphas`` on ``held`` (on ``fit`` without it); with
    ``final_on_all`` the chosen ``alpha`` is re-solved on fit + held.  ``dense_limit``: largest
    depthwise system solved densely (PCG above it, at most ``cg_steps`` steps per solve).
    """
    return _fit("depthwise_first", _DepthwiseFirst(dense_limit, cg_steps), weight, bias, fit, held,
                rank, iterations, alphas, tol, final_on_all)


def fit_pointwise_first(weight: np.ndarray, bias: np.ndarray | None, fit: PatchMoments,
                        held: PatchMoments | None = None, rank: int = 1, *,
                        iterations: int = ITERATIONS, alphas: tuple[float, ...] = ALPHAS,
                        tol: float = TOL, final_on_all: bool = False) -> ALSResult:
    """Fit 1x1 weights and spatial kernels of a pointwise-first rank-``rank`` pair (full
    moments only: with subspace moments the data-free factors are returned, errors ``nan``)."""
    return _fit("pointwise_first", _PointwiseFirst(), weight, bias, fit, held, rank, iterations,
                alphas, tol, final_on_all)


def _fit(orientation, ops, weight, bias, fit, held, rank, iterations, alphas, tol, final_on_all) -> ALSResult:
    w = np.asarray(weight)
    g = fit.group
    if w.shape[:2] != (fit.cout_g * g, fit.cin_g) or tuple(w.shape[2:]) != fit.kernel_shape:
        raise ValueError(f"weight {w.shape} does not match the moments' layer")
    if held is not None:
        fit._check_compatible(held)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if fit.count == 0:
        raise ValueError("no fit positions accumulated")
    if not alphas:
        raise ValueError("alphas must not be empty")
    m, n, k = fit.cout_g, fit.cin_g, fit.kernel_size
    w64 = w.astype(np.float64).reshape(g, m, n, k)
    b0 = np.zeros((g, m)) if bias is None else np.asarray(bias, dtype=np.float64).reshape(g, m)
    r = min(rank, m if orientation == "depthwise_first" else n, k)
    has_held = held is not None and held.count > 0
    held_m = held if has_held else None

    # data-free factors, full coordinates
    df_v, df_p = zip(*(ops.data_free(w64[gi], r) for gi in range(g)))
    df_first, df_second = _layout(orientation, list(df_v), list(df_p), w.shape, r)
    reason, df_kernel = None, None
    if fit.mode != "full" and orientation == "pointwise_first":
        reason = "data-free (layer too large for full moments)"
    elif fit.mode != "full" and r > fit.taps:
        reason = "data-free (rank above the moments' subspace)"
    else:
        try:
            df_kernel = fit.reduce(_kernel(orientation, df_first, df_second, g, r))
        except ValueError:  # subspace basis from another kernel, or ties at its boundary
            reason = "data-free (factors outside the moments' subspace)"
    if reason is not None:
        nan = Errors(float("nan"), float("nan") if has_held else None)
        bias_out = b0.reshape(-1).astype(w.dtype)
        return ALSResult(df_first.astype(w.dtype), df_second.astype(w.dtype), bias_out, r, orientation,
                         reason, None, 0, "data-free", nan, nan, nan, df_first.astype(w.dtype),
                         df_second.astype(w.dtype), bias_out, None, (), fit.count,
                         held.count if held is not None else 0)

    w_red = fit.reduce(w64, tol=float("inf"))  # projection of W (the prior's target)
    v0 = [_to_moment_coords(fit, gi, df_v[gi]) for gi in range(g)]
    w3 = w_red.reshape(g, m, n, fit.taps)

    def errs(kernel, b, on_fit):
        return on_fit.rel_error(kernel, b), (held_m.rel_error(kernel, b) if held_m is not None else None)

    # candidates per alpha, chosen on held (or fit)
    best_b = best_a = None
    for alpha in alphas:
        probs = _problems(fit, w_red, alpha)
        base, als = _solve_all(ops, probs, w3, v0, list(df_p), r, iterations, tol)
        for run, slot in ((base, "b"), (als, "a")):
            check = (held_m if held_m is not None else fit).rel_error(run.kernel, run.bias)
            if not np.isfinite(check):
                continue
            cur = best_b if slot == "b" else best_a
            if cur is None or check < cur[0]:
                if slot == "b":
                    best_b = (check, alpha, run)
                else:
                    best_a = (check, alpha, run)
    if best_a is None or best_b is None:
        raise FloatingPointError("the fit produced no finite candidate")
    (held_b, alpha_b, run_b), (held_a, alpha_a, run_a) = best_b, best_a
    everything = fit
    if final_on_all and held_m is not None:
        everything = fit.merged(held_m)
        run_b = _solve_all(ops, _problems(everything, w_red, alpha_b), w3, v0, list(df_p), r, iterations, tol)[0]
        run_a = _solve_all(ops, _problems(everything, w_red, alpha_a), w3, v0, list(df_p), r, iterations, tol)[1]

    df_err = Errors(*errs(df_kernel, b0, everything))
    b_err = Errors(everything.rel_error(run_b.kernel, run_b.bias), held_b if held_m is not None else None)
    a_err = Errors(everything.rel_error(run_a.kernel, run_a.bias), held_a if held_m is not None else None)
    ref = float(everything.yy.sum()) / everything.count
    hist = tuple(float(np.sqrt(max(h, 0.0) / ref)) if ref > 0 else 0.0 for h in run_a.history)
    a_first, a_second = _layout(orientation, *_to_full(fit, run_a), w.shape, r)
    b_first, b_second = _layout(orientation, *_to_full(fit, run_b), w.shape, r)
    return ALSResult(
        first=a_first.astype(w.dtype), second=a_second.astype(w.dtype),
        bias=run_a.bias.reshape(-1).astype(w.dtype), rank=r, orientation=orientation, mode=fit.mode,
        alpha=alpha_a, iterations=run_a.iterations, start=run_a.start,
        data_free=df_err, pointwise=b_err, als=a_err,
        refit_first=b_first.astype(w.dtype), refit_second=b_second.astype(w.dtype),
        refit_bias=run_b.bias.reshape(-1).astype(w.dtype), refit_alpha=alpha_b,
        history=hist, fit_positions=fit.count, held_positions=held.count if held is not None else 0,
    )


def _solve_all(ops, probs, w3, v0, p0, r, iterations, tol) -> tuple[_Run, _Run]:
    """Pointwise-only refit and ALS for every group at one alpha."""
    base_v, base_p, als_v, als_p = [], [], [], []
    hists: list[list[float]] = []
    iters, starts = 0, set()
    for gi, pr in enumerate(probs):
        # (b) SVD kernels + pointwise step
        pb, fb = ops.pointwise(pr, v0[gi], p0[gi])
        base_v.append(v0[gi])
        base_p.append(pb)
        # whitened start
        vw, pw = ops.whitened(pr, w3[gi], r)
        pw, fw = ops.pointwise(pr, vw, pw)
        if fw < fb:
            v, p, f, start = vw, pw, fw, "whitened"
        else:
            v, p, f, start = v0[gi], pb, fb, "svd"
        starts.add(start)
        hist = [f]
        scale = max(pr.const, _TINY)
        done = 0
        for _ in range(iterations):
            v_new = ops.depthwise(pr, p, v)
            v_new, p_mid = ops.normalise(v_new, p)
            p_new, f_new = ops.pointwise(pr, v_new, p_mid)
            if not np.isfinite(f_new) or f_new > f:  # round-off safeguard: keep the better one
                break
            done += 1
            gain = f - f_new
            v, p, f = v_new, p_new, f_new
            hist.append(f)
            if gain <= tol * scale:
                break
        iters = max(iters, done)
        als_v.append(v)
        als_p.append(p)
        hists.append(hist)
    # groups may stop at different rounds: each carries its last value forward
    rounds = max(len(h) for h in hists)
    total = [sum(h[min(i, len(h) - 1)] for h in hists) for i in range(rounds)]
    base = _finish(ops, probs, base_v, base_p, [], 0, "svd")
    als = _finish(ops, probs, als_v, als_p, total, iters, "+".join(sorted(starts)))
    return base, als


def _finish(ops, probs, vs, ps, hist, iters, start) -> _Run:
    kernel = np.stack([ops.effective(p, v) for v, p in zip(vs, ps)])
    bias = np.stack([pr.bias(kernel[gi]) for gi, pr in enumerate(probs)])
    return _Run(vs, ps, kernel, bias, hist, iters, start)


def _to_moment_coords(mom: PatchMoments, gi: int, v: np.ndarray) -> np.ndarray:
    """Full-tap kernels -> moment coordinates (depthwise-first: per input channel basis)."""
    if mom.basis is None:
        return v
    n = mom.cin_g
    b = mom.basis[gi * n:(gi + 1) * n]  # (n, K, q)
    return np.swapaxes(b, 1, 2) @ v  # (n, q, r)


def _to_full(mom: PatchMoments, run: _Run) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if mom.basis is None:
        return run.v, run.p
    n = mom.cin_g
    vs = [mom.basis[gi * n:(gi + 1) * n] @ v for gi, v in enumerate(run.v)]
    return vs, run.p


def _layout(orientation: str, vs: list[np.ndarray], ps: list[np.ndarray], wshape: tuple[int, ...],
            r: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group factors (full tap coordinates) -> the two conv weights (float64)."""
    kshape = tuple(wshape[2:])
    ones = (1,) * len(kshape)
    v = np.stack(vs)  # DF: (g, n, K, r); PF: (g, m, K, r)
    p = np.stack(ps)  # DF: (g, m, n, r); PF: (g, m, n, r)
    g, m, n, _ = p.shape
    if orientation == "depthwise_first":
        first = v.transpose(0, 1, 3, 2).reshape(g * n * r, 1, *kshape)
        second = p.reshape(g * m, n * r, *ones)
    else:
        first = p.transpose(0, 1, 3, 2).reshape(g * m * r, n, *ones)
        second = v.transpose(0, 1, 3, 2).reshape(g * m, r, *kshape)
    return first, second


def _kernel(orientation: str, first: np.ndarray, second: np.ndarray, group: int, r: int) -> np.ndarray:
    """The effective kernel ``(Cout, Cin_g, *k)`` (float64) of a rank-``r`` factor pair."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if orientation == "depthwise_first":
        kshape = first.shape[2:]
        cout = second.shape[0]
        cin_g = second.shape[1] // r
        v = first.reshape(group, cin_g, r, -1)
        p = second.reshape(group, cout // group, cin_g, r)
        return np.einsum("gonr,gnrk->gonk", p, v).reshape(cout, cin_g, *kshape)
    kshape = second.shape[2:]
    cout = second.shape[0]
    cin_g = first.shape[1]
    a = first.reshape(group, cout // group, r, cin_g)
    v = second.reshape(group, cout // group, r, -1)
    return np.einsum("gori,gork->goik", a, v).reshape(cout, cin_g, *kshape)


def output_error(moments: PatchMoments, first: np.ndarray, second: np.ndarray, bias: np.ndarray | None,
                 orientation: Orientation) -> float:
    """Relative output error ``||y - y_hat|| / ||y||`` of any factor pair (layouts as
    :class:`ALSResult`, bias of the second conv) on ``moments``.  Subspace moments: only for
    factors whose depthwise kernels lie in the moments' subspace (ValueError otherwise)."""
    if orientation == "depthwise_first":
        r = np.asarray(first).shape[0] // (moments.cin_g * moments.group)
    elif orientation == "pointwise_first":
        r = np.asarray(second).shape[1]
    else:
        raise ValueError(f"unknown orientation {orientation!r}")
    kernel = _kernel(orientation, first, second, moments.group, r)
    return kernel_error(moments, kernel, bias)


def kernel_error(moments: PatchMoments, kernel: np.ndarray, bias: np.ndarray | None) -> float:
    """Relative output error of a plain Conv kernel ``(Cout, Cin_g, *k)`` + bias on ``moments``
    (e.g. the original layer: how far the converted model's input already moved its output)."""
    g, m = moments.group, moments.cout_g
    b = np.zeros((g, m)) if bias is None else np.asarray(bias, dtype=np.float64).reshape(g, m)
    return moments.rel_error(moments.reduce(kernel), b)
