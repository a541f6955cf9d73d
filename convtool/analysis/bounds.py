"""Upper confidence bounds for a drift budget measured on held-out samples (pure numpy).

A budget is a promise about data the search never saw; a number measured on ``n`` held-out
samples is only an estimate of it.  The search accepts a plan when the *upper bound* keeps the
budget, and says how many samples a budget would need when the held-out set cannot certify it.

* ``top1`` (``1 - top-1 agreement``): ``k`` disagreements in ``n`` samples; the one-sided
  Clopper-Pearson bound is the ``p`` with ``P(Binomial(n, p) <= k) = 1 - confidence``, found by
  bisection on the exact binomial tail (no scipy).  With ``k = 0`` it is
  ``1 - (1 - confidence)^(1/n)``: 0 of 19 bounds the rate at 14.6 %, so ``n >= ln(0.05) /
  ln(1 - B)`` samples are needed before any plan can be certified at budget ``B``.
* ``rel_l2`` (the per-channel drift of :mod:`convtool.analysis.drift`): a bootstrap over
  held-out samples.  Per output, per sample and channel, the squared reference norm and the
  squared error are summed once; each of ``resamples`` replicates draws ``n`` samples with
  replacement and recomputes the drift from those sums (the same formula, floor included),
  worst output first.  The bound is the replicates' ``confidence`` quantile.  With fewer than
  :data:`MIN_BOOTSTRAP` samples there is no useful bootstrap; the bound is then ``None`` and
  callers say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["MIN_BOOTSTRAP", "clopper_pearson_upper", "samples_needed", "bootstrap_drift_upper", "drift_upper"]

MIN_BOOTSTRAP = 5
RESAMPLES = 2000


def _binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``, summed in log space."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(0, k + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper bound of a rate with ``k`` events in ``n`` trials."""
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if k == n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = k / n, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _binom_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def samples_needed(budget: float, confidence: float = 0.95) -> int:
    """The fewest held-out samples with which 0 disagreements certify a ``top1`` budget."""
    if budget <= 0:
        return math.inf  # type: ignore[return-value]
    if budget >= 1:
        return 1
    return int(math.ceil(math.log(1.0 - confidence) / math.log1p(-budget)))


def _sums(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample (rows) and channel (columns): sums of ``a^2`` and ``(b - a)^2``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.shape[0]
    if a.ndim < 3:  # whole-tensor form: one "channel"
        return (a * a).reshape(n, -1).sum(1)[:, None], ((b - a) ** 2).reshape(n, -1).sum(1)[:, None]
    axes = tuple(range(2, a.ndim))
    return np.sum(a * a, axis=axes), np.sum((b - a) ** 2, axis=axes)


def _drift_from_sums(norm2: np.ndarray, err2: np.ndarray, per_channel: bool) -> np.ndarray:
    """Drift per replicate from summed ``(R, C)`` squared norms and errors."""
    norms, diffs = np.sqrt(norm2), np.sqrt(err2)
    if not per_channel:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(norms[:, 0] > 0, diffs[:, 0] / np.where(norms[:, 0] > 0, norms[:, 0], 1.0),
                           np.where(diffs[:, 0] > 0, np.inf, 0.0))
        return out
    floor = 1e-3 * np.sqrt(np.mean(norm2, axis=1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = diffs / np.maximum(norms, floor)
        out = np.sqrt(np.mean(ratio ** 2, axis=1))
    zero = floor[:, 0] == 0
    out[zero] = np.where(diffs[zero].any(axis=1), np.inf, 0.0)
    return out


def bootstrap_drift_upper(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                          confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> float | None:
    """Bootstrap upper bound of the worst output's per-channel drift (module docstring)."""
    names = list(reference)
    n = int(np.asarray(reference[names[0]]).shape[0]) if names else 0
    if n < MIN_BOOTSTRAP or any(np.asarray(reference[k]).ndim < 1 or np.asarray(reference[k]).shape[0] != n
                                for k in names):
        return None
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # (R, n)
    worst = np.zeros(resamples)
    for name in names:
        a, b = np.asarray(reference[name]), np.asarray(candidate[name])
        norm2, err2 = _sums(a, b)
        worst = np.maximum(worst, _drift_from_sums(counts @ norm2, counts @ err2, a.ndim >= 3))
    return float(np.quantile(worst, confidence))


def drift_upper(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], metric: str,
                top1_agreement: float | None, samples: int, confidence: float = 0.95) -> float | None:
    """The upper bound of ``metric`` (``top1``: Clopper-Pearson, ``rel_l2``: bootstrap)."""
    if metric == "top1":
        if top1_agreement is None:
            return None
        k = int(round((1.0 - top1_agreement) * samples))
        return clopper_pearson_upper(k, samples, confidence)
    return bootstrap_drift_upper(reference, candidate, confidence)
