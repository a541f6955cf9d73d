"""Latency of ONNX models with onnxruntime, measured fairly.

Protocol (what :func:`time_rounds` does; :func:`time_models` is one round of it with the
sessions the caller made):

* Every session comes from :func:`convtool.runtime.session.make_session` with stated options:
  intra-op threads (1 by default: the most reproducible number; pass the deployment's thread
  count to match it), spinning off (two sessions in one process whose intra-op threads spin
  disturb each other: on a 2-core machine an A/A control of the same model came out 1.5x off
  with spinning on).
* Each session gets ``warmup`` untimed runs, then ``runs`` timed runs with
  ``time.perf_counter_ns``. With several sessions the timed runs are interleaved in an ABBA
  pattern (A B, B A, A B, ...), so slow machine drift and position effects hit every model
  alike. The speedup of B over A is ``exp(median(ln(A_i / B_i)))`` over the paired runs, with
  its interval from the same statistic (:func:`convtool.core.decide.speedup`; this module
  only measures).
* Sessions are drawn, not fixed: at 2+ threads on a busy machine one session of a
  sub-millisecond model can run 20 % faster or slower than a twin session for tens of runs (its
  threads' placement, its buffers), so one pair of sessions measures that draw as much as the
  models: ``convtool sweep`` (one session per model, 50 runs) once showed 0.82x, 0.97x on a
  re-run, for a model ``convtool report`` timed at 1.12x-1.7x, each with a tight interval.
  :func:`time_rounds` therefore times in *rounds*: every round creates fresh sessions
  for every model (creation and timing order rotated), warms them up and times a block of interleaved runs; the
  speedup and its interval come from all rounds' paired runs, with the rounds as clusters
  (:func:`convtool.core.decide.speedup`).  It can also stop early: after each planned look
  (a doubling run count, :func:`schedule`) the caller's ``stop`` says whether the interval
  decides; a run cap and a wall-time cap end it otherwise.
* An A/A control (two sessions of the *same* model, timed exactly like an A/B pair) shows the
  noise floor of the machine: its interval should contain 1.
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

__all__ = ["LatencyStats", "Rounds", "latency_stats", "per_round", "schedule", "time_models", "time_rounds"]

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


def per_round(first_look: int) -> int:
    """Timed runs per round of fresh sessions: ten rounds by the first look (at least two runs
    each), so that the between-round variance of :func:`convtool.core.decide.speedup` rests on
    enough rounds to be stable."""
    return max(2, -(-first_look // 10))


def schedule(min_runs: int, max_runs: int, *, max_looks: int = 6) -> tuple[int, ...]:
    """Run counts at which a sequential timing looks: ``min_runs`` doubling, ending at
    ``max_runs``, at most ``max_looks`` looks (the last one is always ``max_runs``)."""
    if min_runs < 1 or max_runs < min_runs:
        raise OptionError(f"timed runs: need 1 <= min ({min_runs}) <= max ({max_runs})")
    looks = [min_runs]
    while looks[-1] * 2 < max_runs and len(looks) < max_looks - 1:
        looks.append(looks[-1] * 2)
    if looks[-1] != max_runs:
        looks.append(max_runs)
    return tuple(looks)


@dataclass(frozen=True)
class Rounds:
    """What :func:`time_rounds` measured: per session its stats (``samples`` paired by index
    across sessions), the round of every timed run, the looks planned and why it stopped
    (``"decided"``: ``stop`` said so; ``"runs"``: the last look; ``"time"``: the wall-time cap)."""

    stats: list[LatencyStats]
    rounds: tuple[int, ...]
    looks: int
    stopped: str

    @property
    def runs(self) -> int:
        return len(self.rounds)


def _check_rounds(makers, feeds, looks: Sequence[int], per_round: int, warmup: int) -> None:
    if not looks or looks[0] < 1 or list(looks) != sorted(looks):
        raise OptionError(f"timed runs must be >= 1, got {list(looks)}")
    if warmup < 0:
        raise OptionError(f"--warmup must be >= 0, got {warmup}")
    if per_round < 1:
        raise ValueError("per_round must be >= 1")
    if len(makers) != len(feeds) or not makers:
        raise ValueError("one feed dict per session is required")


def _one_round(makers, fed: list[dict], r: int, warmup: int, runs: int, samples: list[list[float]],
               round_ids: list[int], progress: Callable[[int], None] | None) -> None:
    """Round ``r``: fresh sessions in the round's rotated order, ``warmup`` untimed runs each,
    then ``runs`` interleaved (ABBA) timed runs appended to ``samples`` / ``round_ids``."""
    shift = r % len(makers)
    order = list(range(len(makers)))[shift:] + list(range(len(makers)))[:shift]
    sessions: list = [None] * len(makers)  # the last round's sessions are released before new ones are made
    for i in order:
        sessions[i] = makers[i]()
    for _ in range(warmup):
        for i in order:
            sessions[i].run(None, fed[i])
    for j in range(runs):
        for i in order if j % 2 == 0 else order[::-1]:
            samples[i].append(_run_once(sessions[i], fed[i]))
        round_ids.append(r)
        if progress is not None:
            progress(len(round_ids))


def time_rounds(
    makers: Sequence[Callable[[], onnxruntime.InferenceSession]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    looks: Sequence[int],
    per_round: int,
    warmup: int,
    stop: Callable[[list[list[float]], list[int]], bool] | None = None,
    max_seconds: float | None = None,
    progress: Progress | None = None,
) -> Rounds:
    """Time fresh sessions, one from each of ``makers``, round after round (module docstring).

    Each round: new sessions (the previous round's are released first; created in the round's
    order, since the first session made can differ from the second), ``warmup`` untimed runs
    each, then ``per_round`` interleaved timed runs (ABBA), the first model of the order moving
    by one each round.  After the round that reaches each count of ``looks``,
    ``stop(samples, rounds)`` (per-session samples, round id per run) may end the timing;
    reaching ``looks[-1]`` runs or ``max_seconds`` of wall time ends it in any case - but never
    before the first look: a slow model (PP-OCR's detector, 130 ms a run) still gets the runs an
    interval needs instead of a verdict on a handful.
    """
    _check_rounds(makers, feeds, looks, per_round, warmup)
    start = time.perf_counter()
    fed = [dict(f) for f in feeds]
    samples: list[list[float]] = [[] for _ in fed]
    round_ids: list[int] = []
    last = int(looks[-1])
    total = last * len(fed)
    pending = [int(n) for n in looks]
    stopped = "runs"
    r = 0
    while len(round_ids) < last:
        runs = min(per_round, pending[0] - len(round_ids))  # a round never passes a look
        _one_round(makers, fed, r, warmup, runs, samples, round_ids,
                   None if progress is None else (lambda d: progress(d * len(fed), total)))
        r += 1
        done = len(round_ids)
        if pending and done >= pending[0]:
            while pending and done >= pending[0]:
                pending.pop(0)
            if done < last and stop is not None and stop(samples, round_ids):
                stopped = "decided"
                break
        if done < last and done >= looks[0] and max_seconds is not None and time.perf_counter() - start >= max_seconds:
            stopped = "time"
            break
    if stopped == "runs" and stop is not None and stop(samples, round_ids):
        stopped = "decided"
    if progress is not None:
        progress(total, total)
    return Rounds([latency_stats(s) for s in samples], tuple(round_ids), len(looks), stopped)
