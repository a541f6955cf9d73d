"""Is a replacement measurably faster?  The decision rule, as pure arithmetic on timings.

Input: ``n`` interleaved runs of the original conv (``a_i``) and of its replacement
(``b_i``), taken in the same loop (A B, B A, A B, ...) so that run ``i`` of each saw the same
machine state.

Rule (each layer's record quotes the numbers it was decided on):

* speedup ``S = median(a) / median(b)`` (a ratio of medians, as ``convtool report`` reports);
* noise: the paired log-ratios ``l_i = ln(a_i / b_i)`` give a distribution-free ~95 %
  confidence interval for their median, the order statistics ``[l_(k), l_(n+1-k)]`` with
  ``k = floor((n - 1.96 sqrt(n)) / 2)`` (at least 1) - the sign-test interval, which needs no
  assumption about the (often bimodal) shape of latency distributions;
* **convert** when ``S >= 1 + margin`` *and* the interval's lower end ``exp(l_(k)) > 1``,
  i.e. the replacement is faster by at least the margin and in clearly more than half of the
  paired runs;
* otherwise keep the original conv, and say why: clearly slower (the interval's upper end is
  below 1), or within noise / below the margin.

No timing is taken here; tests inject timings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Verdict", "paired_interval", "verdict"]

_Z95 = 1.96


@dataclass(frozen=True)
class Verdict:
    """The outcome for one layer (or one whole model)."""

    convert: bool
    speedup: float  # median(original) / median(replacement)
    ci_low: float  # ~95 % interval of the paired speedup
    ci_high: float
    original_ms: float  # medians
    replacement_ms: float
    runs: int
    reason: str


def paired_interval(original_ms: Sequence[float], replacement_ms: Sequence[float]) -> tuple[float, float]:
    """Distribution-free ~95 % interval of the median paired speedup ``a_i / b_i``."""
    a = np.asarray(original_ms, dtype=np.float64)
    b = np.asarray(replacement_ms, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("need the same, non-zero number of original and replacement runs")
    logs = np.sort(np.log(np.maximum(a, 1e-12) / np.maximum(b, 1e-12)))
    n = logs.size
    k = max(1, int(math.floor((n - _Z95 * math.sqrt(n)) / 2)))
    return float(math.exp(logs[k - 1])), float(math.exp(logs[n - k]))


def _x(v: float) -> str:
    return f"{v:.2f}x"


def verdict(original_ms: Sequence[float], replacement_ms: Sequence[float], *, margin: float, what: str = "",
            source: str = "measured") -> Verdict:
    """Apply the rule of the module docstring.

    ``what`` ends the reason (e.g. ``"at rank 2"``); ``source`` says where the timings came
    from (``"measured"`` or ``"cached"``).
    """
    a = np.asarray(original_ms, dtype=np.float64)
    b = np.asarray(replacement_ms, dtype=np.float64)
    low, high = paired_interval(a, b)
    med_a, med_b = float(np.median(a)), float(np.median(b))
    speedup = med_a / med_b if med_b > 0 else math.inf
    suffix = f"{' ' + what if what else ''} ({source}: {med_a:.3g} -> {med_b:.3g} ms, {a.size} runs)"
    ci = f"95% CI {low:.2f}-{high:.2f}x"
    if speedup >= 1.0 + margin and low > 1.0:
        return Verdict(True, speedup, low, high, med_a, med_b, int(a.size), f"replacement {_x(speedup)} faster{suffix}")
    if speedup < 1.0 and high < 1.0:
        reason = f"replacement {_x(1.0 / speedup)} slower{suffix}"
    elif speedup >= 1.0:
        reason = f"replacement {_x(speedup)} faster, not above noise or the {margin:.0%} margin ({ci}){suffix}"
    else:
        reason = f"replacement {_x(1.0 / speedup)} slower, within noise ({ci}){suffix}"
    return Verdict(False, speedup, low, high, med_a, med_b, int(a.size), reason)
