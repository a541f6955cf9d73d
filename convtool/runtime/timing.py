"""Latency of ONNX models with onnxruntime, measured fairly.

Protocol (what :func:`time_models` does):

* Every session comes from :func:`convtool.runtime.session.make_session` with stated options:
  intra-op threads (1 by default: the most reproducible number; pass the deployment's thread
  count to match it), spinning off (two sessions in one process whose intra-op threads spin
  disturb each other: on a 2-core machine an A/A control of the same model came out 1.5x off
  with spinning on).
* Each session gets ``warmup`` untimed runs, then ``runs`` timed runs with
  ``time.perf_counter_ns``. With several sessions the timed runs are interleaved in an ABBA
  pattern (A B, B A, A B, ...), so slow machine drift and position effects hit every model
  alike. The speedup of B over A is the ratio of medians, ``median(A) / median(B)``.
* An A/A control (two sessions of the *same* model, timed exactly like an A/B pair) shows the
  noise floor of the machine: a speedup within ``|1 - aa_ratio|`` of 1 is noise.
* Statistics: median, p10 and p90 (linear interpolation) in milliseconds. Sub-millisecond
  models at 2+ threads are often bimodal; use more runs and look at p10/p90.

Timing right after heavy numpy work in the same process can be slow (caches and clocks); run
the timing before drift computations, which :mod:`convtool.report` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from convtool.errors import OptionError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

__all__ = ["LatencyStats", "latency_stats", "time_models"]

#: Called after every timed run with (done, total).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LatencyStats:
    """Timed runs of one session, in milliseconds."""

    median: float
    p10: float
    p90: float
    runs: int
    samples: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {"median": self.median, "p10": self.p10, "p90": self.p90, "runs": self.runs}


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    """Median, p10 and p90 of timed runs (milliseconds)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timed runs")
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return LatencyStats(float(med), float(p10), float(p90), int(a.size), tuple(float(x) for x in a))


def _run_once(session, feeds) -> float:
    t0 = time.perf_counter_ns()
    session.run(None, feeds)
    return (time.perf_counter_ns() - t0) / 1e6


def time_models(
    sessions: Sequence[onnxruntime.InferenceSession],
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    runs: int,
    warmup: int,
    progress: Progress | None = None,
) -> list[LatencyStats]:
    """Time several sessions interleaved (ABBA order), each with its own feeds.

    Every session first gets ``warmup`` untimed runs (interleaved too), then ``runs`` timed
    runs. ``progress(done, total)`` is called after each timed run.
    """
    if runs < 1:
        raise OptionError(f"--runs must be >= 1, got {runs}")
    if warmup < 0:
        raise OptionError(f"--warmup must be >= 0, got {warmup}")
    if len(sessions) != len(feeds) or not sessions:
        raise ValueError("one feed dict per session is required")
    order = list(range(len(sessions)))
    for _ in range(warmup):
        for i in order:
            sessions[i].run(None, dict(feeds[i]))
    fed = [dict(f) for f in feeds]
    samples: list[list[float]] = [[] for _ in sessions]
    total = runs * len(sessions)
    done = 0
    for r in range(runs):
        for i in order if r % 2 == 0 else order[::-1]:
            samples[i].append(_run_once(sessions[i], fed[i]))
            done += 1
            if progress is not None:
                progress(done, total)
    return [latency_stats(s) for s in samples]
