"""The one number vocabulary of every renderer (terminal tables, summary lines, Markdown).

Every number a user reads goes through one of these functions, so ``convert`` and ``report``
(and anything added later) print the same quantity the same way:

* **counts** (parameters, MACs, FLOPs): three significant digits with an SI suffix,
  ``950``, ``4.74k``, ``37.1k``, ``611M``, ``1.01G``, ``2.30T``; unknown is ``unknown``,
  never 0;
* **before -> after**: ``37.1k→4.74k`` (one arrow, no spaces, so a cell never breaks inside
  a pair on a wide enough column);
* **ratios** (after / before, speedups): two decimals and ``x``: ``0.13x``, ``1.24x``;
* **percentages** (fractions of 1): one decimal: ``87.0%``; changes carry a sign, ``-87.0%``,
  ``+2.1%``; "faster" phrases for sentences keep the ratio (``0.82x (slower)``);
* **times**: milliseconds with three significant digits, ``0.412``, ``14.1``, ``152``;
  durations of a command in seconds or minutes;
* **errors and drifts** (relative, unitless): three significant digits keeping trailing
  zeros, ``0.897``, ``1.00``, ``0.0473``;
* **counted nouns** agree with their number: ``1 thread``, ``2 threads``, ``1 layer``
  (:func:`plural`; :func:`plurals` mends ``3 layer(s)`` in text that comes from elsewhere).

Changes are said one way in every command: ``MACs -56.9%`` (a signed change, as the totals
line writes it), never "56.9% fewer MACs" or "MACs removed"; a speedup is a ratio, ``0.82x``,
in tables and sentences alike.

Pure functions: numbers in, strings out.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "ARROW",
    "UNKNOWN",
    "count",
    "arrow",
    "counts",
    "ratio",
    "times",
    "pct",
    "signed_pct",
    "change",
    "faster",
    "faster_ci",
    "ms",
    "ms_pair",
    "num",
    "duration",
    "plural",
    "plurals",
    "less",
]

ARROW = "→"
UNKNOWN = "unknown"
NONE = "-"  # an empty cell: the quantity does not apply (not unknown)


def count(n: float | None) -> str:
    """``4740 -> '4.74k'``, ``611060000 -> '611M'``; ``None -> 'unknown'``."""
    if n is None:
        return UNKNOWN
    value = float(f"{float(n):.3g}")  # round first: 999960 is 1.00M, not 1000k
    if abs(value) < 1e3:
        return str(int(value)) if value.is_integer() else _sig3(value)
    for div, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        if abs(value) < div * 1e3 or suffix == "T":
            return _sig3(value / div) + suffix
    raise AssertionError("unreachable")


def _sig3(value: float) -> str:
    """Three significant digits without exponent: 4.74, 37.1, 611, 1000."""
    value = float(f"{value:.3g}")
    if value == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}"


def arrow(before: str, after: str) -> str:
    """``'37.1k', '4.74k' -> '37.1k→4.74k'``; two unknowns collapse to one ``unknown``."""
    if before == after == UNKNOWN:
        return UNKNOWN
    return f"{before}{ARROW}{after}"


def counts(before: float | None, after: float | None) -> str:
    """Two counts as ``before→after``."""
    return arrow(count(before), count(after))


def ratio(before: float | None, after: float | None) -> str:
    """``after / before`` as ``0.13x``; empty when either is unknown or ``before`` is 0."""
    if not before or after is None:
        return ""
    return times(after / before)


def times(value: float | None, digits: int = 2) -> str:
    """A ratio or a speedup: ``1.24x``; ``None -> '-'``."""
    if value is None or not math.isfinite(value):
        return NONE
    return f"{value:.{digits}f}x"


def pct(fraction: float | None, digits: int = 1) -> str:
    """``0.998 -> '99.8%'``; ``None -> '-'``."""
    if fraction is None or not math.isfinite(fraction):
        return NONE
    return f"{fraction * 100:.{digits}f}%"


def signed_pct(fraction: float | None, digits: int = 1) -> str:
    """A relative change: ``-0.87 -> '-87.0%'``, ``0.021 -> '+2.1%'``, tiny -> ``'0.0%'``."""
    if fraction is None or not math.isfinite(fraction):
        return NONE
    if abs(fraction) < 0.5 * 10 ** -(digits + 2):
        return f"{0:.{digits}f}%"
    return f"{fraction * 100:+.{digits}f}%"


def change(before: float | None, after: float | None) -> float | None:
    """``after / before - 1`` (the number :func:`signed_pct` shows); ``None`` when unknown."""
    if before is None or after is None or before == 0:
        return None
    return after / before - 1.0


def faster(speedup: float | None) -> str:
    """``1.24 -> '1.24x faster'``, ``0.82 -> '0.82x (slower)'``: the speedup itself, the number
    the tables show, never its inverse."""
    if speedup is None or not math.isfinite(speedup) or speedup <= 0:
        return f"speed {UNKNOWN}"
    if speedup >= 1.0:
        return f"{times(speedup)} faster"
    return f"{times(speedup)} (slower)"


def faster_ci(speedup: float | None, low: float | None, high: float | None) -> str:
    """:func:`faster` with the speedup's 95 % interval: ``'1.24x faster (95% CI 1.20x-1.28x)'``,
    ``'0.80x (slower) (95% CI 0.71x-0.95x)'``."""
    if low is None or high is None or speedup is None or not speedup > 0:
        return faster(speedup)
    return f"{faster(speedup)} (95% CI {times(low)}-{times(high)})"


def ms(value: float | None) -> str:
    """Milliseconds, three significant digits: ``0.412``, ``14.1``, ``152``; ``None -> '-'``."""
    if value is None or not math.isfinite(value):
        return NONE
    if value >= 100:
        return f"{value:.0f}"
    return _sig3(value)


def ms_pair(before: float | None, after: float | None) -> str:
    """Two times as ``before→after`` (ms)."""
    if before is None and after is None:
        return NONE
    return arrow(ms(before), ms(after))


def num(value: float | None, digits: int = 3) -> str:
    """A relative error or drift: ``0.897``, ``1.00``, ``0.0473``; ``None -> '-'``.

    ``digits`` significant digits (cosine similarities use 6: ``0.999987``)."""
    if value is None:
        return NONE
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits:
        return f"{value:.{digits}g}"
    text = f"{value:#.{digits}g}"
    return text.removesuffix(".")


def duration(seconds: float) -> str:
    """A wall time: ``0.4 s``, ``27.1 s``, ``4 min 12 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s"


def plural(n: int, word: str) -> str:
    """``1, 'thread' -> '1 thread'``, ``2 -> '2 threads'``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def plurals(text: str) -> str:
    """``'1 layer(s)' -> '1 layer'``, ``'3 layer(s)' -> '3 layers'`` wherever a number precedes."""
    return re.sub(r"\b(\d+) (\w+)\(s\)", lambda m: plural(int(m.group(1)), m.group(2)), text)


def less(what: str, before: float | None, after: float | None) -> str:
    """The one way a change is said: ``MACs -56.9%`` (``MACs unknown`` when it is)."""
    change_ = change(before, after)
    return f"{what} {UNKNOWN}" if change_ is None else f"{what} {signed_pct(change_)}"
