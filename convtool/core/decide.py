"""Is a replacement measurably faster?  One statistic for the speedup and its interval, and the
decision rule, as pure arithmetic on timings.

Input: ``n`` interleaved runs of the original (``a_i``) and of its replacement (``b_i``), taken
in the same loop (A B, B A, A B, ...) so that run ``i`` of each saw the same machine state;
optionally the *round* each pair came from (:func:`convtool.runtime.timing.time_rounds` creates
fresh sessions for every round).

**The statistic.** The paired log-ratios ``l_i = ln(a_i / b_i)``; the speedup is
``S = exp(median(l))`` and its ~95 % interval is a pair of order statistics of the same
``l_i``, ``[exp(l_(lo)), exp(l_(hi))]``, the set of medians a sign test does not reject.  One
statistic gives both, so ``S`` is always inside its interval (a ratio of medians, which an
earlier version printed beside this interval, is a different statistic and was not).  Why
this one: it needs no assumption about the shape of latency distributions, which are skewed
and often bimodal at 2+ threads; it is paired, so machine drift that hits both runs of a pair
cancels; the median ignores the occasional descheduled run.

* Independent pairs: the exact sign-test interval, ``lo = k``, ``hi = n + 1 - k`` with ``k``
  the largest integer such that ``P(Binomial(n, 1/2) <= k - 1) <= alpha / 2`` (at least 1: with
  fewer than 6 pairs no interval reaches 95 %, and the full range is given).
* Pairs in rounds (clusters): a session's speed is partly a property of the session (at 2
  threads on a busy 2-core machine one session of a sub-millisecond model can run 20 % faster
  than a twin for tens of runs), so runs of one round are not independent and the interval
  above would be too narrow.  The clustered sign test (Rosner, Glynn and Lee 2003) is inverted
  instead: a median ``t`` is kept when ``(sum_i sign(l_i - t))^2 <= z^2 V(t)``, with the
  between-round variance ``V(t) = R / (R - 1) sum_r (sum_{i in r} sign(l_i - t))^2`` over the
  ``R`` rounds, never below ``n`` (the independent case).  The interval is the hull of the
  kept order statistics and the independent interval.
* Several looks (sequential timing stops as soon as the interval decides, see below): the
  interval at any look is a *repeated* confidence interval with Pocock's constant for the
  planned number of looks (``z = 2.41`` for 5 looks instead of 1.96), so stopping early does
  not inflate the error rate (Jennison and Turnbull, 1989).

**The rule** (each layer's record quotes the numbers it was decided on), with ``margin`` the
smallest speedup worth a conversion:

* **convert** when ``S >= 1 + margin`` *and* the interval's lower end is above 1;
* **keep, resolved**: the interval's upper end is below 1 (clearly slower) or below
  ``1 + margin`` (cannot be worth the margin);
* otherwise **not resolved**: keep the original (the safe choice) and say so ("not resolved
  at N runs").  :func:`resolved` is what a sequential timer asks after every look.

No timing is taken here; tests inject timings.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Speedup", "Verdict", "paired_interval", "pocock_z", "resolved", "speedup", "verdict"]

_Z95 = 1.96

#: Pocock's two-sided 5 % constants by number of planned looks (Jennison and Turnbull, table 2.1).
_POCOCK = {1: 1.960, 2: 2.178, 3: 2.289, 4: 2.361, 5: 2.413, 6: 2.453, 7: 2.485, 8: 2.512, 9: 2.535, 10: 2.555}


def pocock_z(looks: int) -> float:
    """The critical value of a 95 % repeated confidence interval over ``looks`` planned looks."""
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    return _POCOCK.get(looks, 2.672)  # 2.672 is the constant for 20 looks: conservative up to there


@dataclass(frozen=True)
class Speedup:
    """``exp(median(ln(a_i / b_i)))`` and its interval (module docstring); ``runs`` pairs."""

    speedup: float
    ci_low: float
    ci_high: float
    runs: int
    rounds: int = 1


@dataclass(frozen=True)
class Verdict:
    """The outcome for one layer (or one whole model)."""

    convert: bool
    speedup: float  # exp(median of the paired log-ratios ln(original / replacement))
    ci_low: float  # its ~95 % interval (same statistic)
    ci_high: float
    original_ms: float  # medians, for display
    replacement_ms: float
    runs: int
    reason: str
    resolved: bool = True  # False: the interval did not decide by the cap; the original is kept


@functools.lru_cache(maxsize=4096)
def _order_k(n: int, z: float) -> int:
    """Largest ``k >= 1`` with ``P(Binomial(n, 1/2) <= k - 1) <= alpha / 2``, ``alpha = erfc(z / sqrt 2)``."""
    half_alpha = math.erfc(z / math.sqrt(2.0)) / 2.0
    log_half_n = n * math.log(0.5)
    lg_n1 = math.lgamma(n + 1)
    cdf, k = 0.0, 0
    for j in range(n // 2 + 1):
        cdf += math.exp(lg_n1 - math.lgamma(j + 1) - math.lgamma(n - j + 1) + log_half_n)
        if cdf > half_alpha:
            break
        k = j + 1
    return max(1, k)


def _log_ratios(original_ms: Sequence[float], replacement_ms: Sequence[float]) -> np.ndarray:
    a = np.asarray(original_ms, dtype=np.float64)
    b = np.asarray(replacement_ms, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("need the same, non-zero number of original and replacement runs")
    return np.log(np.maximum(a, 1e-12) / np.maximum(b, 1e-12))


def _interval(logs: np.ndarray, rounds: np.ndarray | None, z: float) -> tuple[float, float]:
    """Order-statistic interval of the median of ``logs`` (module docstring), in log space."""
    s = np.sort(logs)
    n = s.size
    k = _order_k(n, z)
    low, high = s[k - 1], s[n - k]
    if rounds is None:
        return float(low), float(high)
    ids, inverse = np.unique(rounds, return_inverse=True)
    r = ids.size
    if r < 2:  # one session draw says nothing about the next one
        return float(s[0]), float(s[-1])
    per_round = np.empty((n, r))  # per round, sum of sign(l_i - t) at every order statistic t
    for j in range(r):
        mine = np.sort(logs[inverse == j])
        per_round[:, j] = mine.size - np.searchsorted(mine, s, "right") - np.searchsorted(mine, s, "left")
    total = per_round.sum(axis=1)
    var = np.maximum(r / (r - 1) * (per_round ** 2).sum(axis=1), n)
    kept = s[total ** 2 <= z * z * var]
    if kept.size:
        low, high = min(low, kept[0]), max(high, kept[-1])
    return float(low), float(high)


def speedup(original_ms: Sequence[float], replacement_ms: Sequence[float], *,
            rounds: Sequence[int] | None = None, looks: int = 1) -> Speedup:
    """The speedup of the replacement and its ~95 % interval (module docstring).

    ``rounds``: the round (fresh sessions) each pair came from, ``None`` for independent
    pairs; ``looks``: how many looks the sequential timing planned (1 for a fixed count).
    """
    logs = _log_ratios(original_ms, replacement_ms)
    groups = None if rounds is None else np.asarray(rounds)
    if groups is not None and groups.shape != logs.shape:
        raise ValueError("one round id per pair is required")
    low, high = _interval(logs, groups, pocock_z(looks))
    mid = float(np.median(logs))
    mid = min(max(mid, low), high)  # equal in exact arithmetic; guards the last bit of rounding
    return Speedup(math.exp(mid), math.exp(low), math.exp(high), int(logs.size),
                   1 if groups is None else int(np.unique(groups).size))


def paired_interval(original_ms: Sequence[float], replacement_ms: Sequence[float], *,
                    rounds: Sequence[int] | None = None, looks: int = 1) -> tuple[float, float]:
    """The ~95 % interval of :func:`speedup` alone."""
    s = speedup(original_ms, replacement_ms, rounds=rounds, looks=looks)
    return s.ci_low, s.ci_high


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _decides(s: Speedup, margin: float) -> bool:
    return (s.speedup >= 1.0 + margin and s.ci_low > 1.0) or s.ci_high < 1.0 + margin or s.ci_high < 1.0


def resolved(original_ms: Sequence[float], replacement_ms: Sequence[float], *, margin: float,
             rounds: Sequence[int] | None = None, looks: int = 1) -> bool:
    """Does the interval decide the rule yet (convert, or keep for a reason more runs cannot change)?"""
    return _decides(speedup(original_ms, replacement_ms, rounds=rounds, looks=looks), margin)


def verdict(original_ms: Sequence[float], replacement_ms: Sequence[float], *, margin: float, what: str = "",
            source: str = "measured", rounds: Sequence[int] | None = None, looks: int = 1) -> Verdict:
    """Apply the rule of the module docstring.

    ``what`` ends the reason (e.g. ``"at rank 2"``); ``source`` says where the timings came
    from (``"measured"`` or ``"cached"``); ``rounds`` / ``looks`` as in :func:`speedup`.
    """
    s = speedup(original_ms, replacement_ms, rounds=rounds, looks=looks)
    med_a = float(np.median(np.asarray(original_ms, dtype=np.float64)))
    med_b = float(np.median(np.asarray(replacement_ms, dtype=np.float64)))
    sp, low, high, n = s.speedup, s.ci_low, s.ci_high, s.runs
    ci = f"95% CI {low:.2f}-{high:.2f}x"
    suffix = f"{' ' + what if what else ''} ({source}: {med_a:.3g} -> {med_b:.3g} ms, {ci}, {n} runs)"
    args = (sp, low, high, med_a, med_b, n)
    faster = f"{_x(sp)} faster" if sp >= 1.0 else f"{_x(1.0 / sp)} slower"
    if sp >= 1.0 + margin and low > 1.0:
        return Verdict(True, *args, f"replacement {faster}{suffix}")
    if high < 1.0:
        return Verdict(False, *args, f"replacement {faster}{suffix}")
    if high < 1.0 + margin:
        return Verdict(False, *args, f"replacement {faster}, below the {margin:.0%} margin{suffix}")
    why = "within noise" if margin <= 0 else f"within noise or the {margin:.0%} margin"
    return Verdict(False, *args, f"not resolved at {n} runs: replacement {faster}, {why}{suffix}",
                   resolved=False)
