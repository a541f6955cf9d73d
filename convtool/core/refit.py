"""Least-squares refit of a pointwise (1x1) conv from captured activations (pure numpy).

The maths
---------
A converted layer computes ``Y_hat = P Z + b``: ``Z`` is the depthwise output (``Cin * r``
channels), ``P`` the pointwise weight and ``b`` its bias; the 1x1 conv applies the same
matrix at every position, so each sample *and* each spatial position is one column of ``Z``
(1-D, 2-D and 3-D alike: all positions are flattened).  Given the ORIGINAL layer's output
``Y`` at the same positions, the refit solves, for each group ``gi`` of the pointwise conv
(``group = g``, ``Z`` channels ``[gi * d, (gi + 1) * d)``, ``Y`` channels
``[gi * m, (gi + 1) * m)``) separately,

    min over A = [P_g  b_g]   ||Y_g - A Za||^2 + lam * ||P_g - P0_g||^2,     Za = [Z_g; 1]

a ridge regression pulled towards the data-free factors ``P0`` (not towards zero), with the
bias unregularised.  Its normal equations ``A (Za Za^T + lam D) = Y Za^T + lam D A0``
(``D`` = identity with a 0 for the bias row) only need the sums ``Za Za^T`` (``(d+1)^2``),
``Y Za^T`` (``m x (d+1)``) and ``||Y||^2``, which :class:`NormalEquations` accumulates in
float64 batch by batch: activations are never held beyond one batch.

Regulariser.  ``lam = alpha * (d + 1) / n * trace(Za Za^T) / (d + 1)``
``= alpha * trace(Za Za^T) / n``: with ``n`` samples (positions) the data term grows like
``n * E[z^2]``, so the relative strength of the prior is ``alpha * unknowns / samples`` - small
deep layers with few samples per unknown are pulled towards the data-free weights (ridge
towards zero overfits them: 800 samples for 129 unknowns took one measured layer's held-out
error from 0.51 to 0.90).  ``alpha`` is chosen from :data:`ALPHAS` by the error on held-out
samples, and the refit is kept only when that held-out error is lower than the data-free one.

Guarantees.  Because ``A0`` is feasible, the solution's data term on the samples it was fitted
on is never above the data-free one (for every ``lam >= 0``); the held-out check guards
against overfitting.  All errors here are relative L2 errors ``||Y - Y_hat|| / ||Y||``,
computed from the accumulated sums (no second pass over the data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Candidate ridge strengths (relative to samples per unknown), tried on held-out data.
ALPHAS: tuple[float, ...] = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _flatten(a: np.ndarray, group: int) -> np.ndarray:
    """``(N, C, *spatial)`` -> ``(g, C / g, N * prod(spatial))`` in float64."""
    n, c = a.shape[:2]
    if c % group:
        raise ValueError(f"{c} channels are not divisible by {group} groups")
    a = np.asarray(a, dtype=np.float64).reshape(n, group, c // group, -1)
    return a.transpose(1, 2, 0, 3).reshape(group, c // group, -1)


@dataclass
class NormalEquations:
    """Streaming sums for the per-group least squares ``Y ~ A [Z; 1]``.

    ``zz``: ``(g, d+1, d+1)``, ``yz``: ``(g, m, d+1)``, ``yy``: ``(g,)`` (``||Y_g||^2``),
    ``count``: number of positions (columns) seen.
    """

    zz: np.ndarray
    yz: np.ndarray
    yy: np.ndarray
    count: int = 0

    @classmethod
    def empty(cls, group: int, z_channels: int, y_channels: int) -> NormalEquations:
        d, m = z_channels // group, y_channels // group
        return cls(np.zeros((group, d + 1, d + 1)), np.zeros((group, m, d + 1)), np.zeros(group))

    @property
    def group(self) -> int:
        return int(self.zz.shape[0])

    def update(self, z: np.ndarray, y: np.ndarray, positions: np.ndarray | None = None) -> None:
        """Add one batch: ``z`` ``(N, Cz, *spatial)``, ``y`` ``(N, Cy, *spatial)`` (same spatial).

        ``positions``: optional indices into the flattened ``N * prod(spatial)`` columns, to
        subsample huge activations.
        """
        if z.shape[0] != y.shape[0] or z.shape[2:] != y.shape[2:]:
            raise ValueError(f"activation shapes do not match: Z {z.shape}, Y {y.shape}")
        zg = _flatten(z, self.group)
        yg = _flatten(y, self.group)
        if positions is not None:
            zg, yg = zg[:, :, positions], yg[:, :, positions]
        for gi in range(self.group):  # 2-D products go to BLAS; stacked ones may not
            za = np.concatenate([zg[gi], np.ones((1, zg.shape[2]))], axis=0)
            self.zz[gi] += za @ za.T
            self.yz[gi] += yg[gi] @ za.T
            self.yy[gi] += float(np.vdot(yg[gi], yg[gi]))
        self.count += int(zg.shape[2])

    def merged(self, other: NormalEquations) -> NormalEquations:
        return NormalEquations(self.zz + other.zz, self.yz + other.yz, self.yy + other.yy, self.count + other.count)

    def sq_error(self, a: np.ndarray) -> float:
        """``sum_g ||Y_g - A_g Za_g||^2`` for augmented weights ``a`` ``(g, m, d+1)``."""
        a = np.asarray(a, dtype=np.float64)
        cross = float(np.vdot(a, self.yz))
        quad = sum(float(np.vdot(a[gi] @ self.zz[gi], a[gi])) for gi in range(self.group))
        return max(float(self.yy.sum() - 2.0 * cross + quad), 0.0)

    def rel_error(self, a: np.ndarray) -> float:
        """Relative L2 error ``||Y - Y_hat|| / ||Y||`` of augmented weights ``a``."""
        total = float(self.yy.sum())
        if total <= 0.0:
            return 0.0 if self.sq_error(a) <= 0.0 else float("inf")
        return float(np.sqrt(self.sq_error(a) / total))


def augment(weight: np.ndarray, bias: np.ndarray | None, group: int) -> np.ndarray:
    """Pointwise weight ``(Cout, d, 1, ...)`` + bias -> augmented ``(g, m, d+1)`` in float64."""
    cout, d = weight.shape[:2]
    w = np.asarray(weight, dtype=np.float64).reshape(group, cout // group, d)
    b = np.zeros(cout) if bias is None else np.asarray(bias, dtype=np.float64).reshape(cout)
    return np.concatenate([w, b.reshape(group, cout // group, 1)], axis=2)


def split_augmented(a: np.ndarray, like_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augmented ``(g, m, d+1)`` -> (weight shaped and typed like ``like_weight``, bias)."""
    g, m, _ = a.shape
    w = a[:, :, :-1].reshape(like_weight.shape).astype(like_weight.dtype)
    b = a[:, :, -1].reshape(g * m).astype(like_weight.dtype)
    return w, b


def ridge_lambda(eq: NormalEquations, alpha: float) -> np.ndarray:
    """Per-group ``lam = alpha * trace(Z Z^T) / n`` (``alpha`` x unknowns / samples, relative
    to the data term); see the module docstring."""
    n = max(eq.count, 1)
    trace = np.trace(eq.zz[:, :-1, :-1], axis1=1, axis2=2)
    return alpha * trace / n


def solve(eq: NormalEquations, a0: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge solution towards ``a0`` (bias unregularised), augmented ``(g, m, d+1)``.

    Solves ``A (ZZ + lam D) = YZ + lam D A0`` per group; a tiny relative jitter, also pulling
    towards ``A0``, keeps rank-deficient ``ZZ`` (dead channels, ``alpha = 0``) solvable
    without breaking the "never worse than ``A0`` on the fitted data" guarantee.
    """
    g, k, _ = eq.zz.shape
    lam = ridge_lambda(eq, alpha)
    mask = np.ones(k)
    mask[-1] = 0.0
    out = np.empty_like(np.asarray(a0, dtype=np.float64))
    for gi in range(g):
        out[gi] = _solve_one(eq, a0, lam, mask, gi, k)
    return out


def _solve_one(eq: NormalEquations, a0: np.ndarray, lam: np.ndarray, mask: np.ndarray, gi: int, k: int) -> np.ndarray:
    zz = eq.zz[gi]
    scale = max(float(np.trace(zz)) / k, 1e-300)
    reg = lam[gi] * mask + 1e-10 * scale
    lhs = zz + np.diag(reg)
    rhs = eq.yz[gi] + a0[gi] * reg
    try:
        return np.linalg.solve(lhs, rhs.T).T
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(lhs, rhs.T, rcond=None)[0].T


def few_blas_threads():
    """One BLAS thread, for the accumulation and the solves: multi-threaded OpenBLAS on matrices
    of a few hundred rows was measured 50-100x slower on a loaded 2-core machine
    (``threadpoolctl``, a dependency)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class RefitResult:
    """Outcome of one layer's refit; errors are relative L2 of the layer output."""

    weights: np.ndarray  # augmented (g, m, d+1), float64: the kept weights
    accepted: bool  # False: the data-free weights were kept
    alpha: float | None
    error_before: float  # held-out, data-free weights
    error_after: float  # held-out, kept weights
    fit_error_before: float  # on all calibration samples (fit + held out)
    fit_error_after: float
    fit_positions: int
    held_positions: int


def refit(fit: NormalEquations, held: NormalEquations | None, a0: np.ndarray,
          alphas: tuple[float, ...] = ALPHAS, final_on_all: bool = True) -> RefitResult:
    """Choose ``alpha`` on ``held``, keep the refit only if it lowers the held-out error.

    ``held=None`` (too few samples to hold any out) validates on ``fit`` itself, where the
    refit never loses.  With ``final_on_all`` the kept solution is recomputed on fit + held
    samples with the chosen ``alpha`` (more data, same prior); the reported held-out error is
    the one measured before that final solve, so it stays an honest held-out estimate.
    """
    with few_blas_threads():
        return _refit(fit, held, a0, alphas, final_on_all)


def _refit(fit: NormalEquations, held: NormalEquations | None, a0: np.ndarray, alphas: tuple[float, ...],
           final_on_all: bool) -> RefitResult:
    check = held if held is not None and held.count else fit
    before = check.rel_error(a0)
    best_alpha, best_err, best_a = None, before, a0
    for alpha in alphas:
        a = solve(fit, a0, alpha)
        err = check.rel_error(a)
        if np.isfinite(err) and err < best_err:
            best_alpha, best_err, best_a = alpha, err, a
    accepted = best_alpha is not None
    everything = fit if check is fit else fit.merged(check)
    kept = best_a if accepted else np.asarray(a0, dtype=np.float64)
    if accepted and final_on_all and check is not fit:
        kept = solve(everything, a0, best_alpha)
    return RefitResult(
        weights=kept,
        accepted=accepted, alpha=best_alpha, error_before=before, error_after=best_err,
        fit_error_before=everything.rel_error(a0), fit_error_after=everything.rel_error(kept),
        fit_positions=fit.count, held_positions=held.count if held is not None else 0,
    )
