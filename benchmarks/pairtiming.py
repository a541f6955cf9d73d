"""The benchmarks' one pair timing: an original against one replacement, exactly as
``convtool report`` times a pair (:func:`convtool.report.build_report`, step 3).

* rounds of fresh sessions (:func:`convtool.runtime.timing.time_rounds`): a session at 2+
  threads on a busy machine is a random draw, so one pair of sessions measures that draw as
  much as the models;
* from ``runs`` paired, interleaved (ABBA) runs, doubling (:func:`convtool.runtime.timing.schedule`)
  until the interval excludes 1 (:func:`convtool.core.decide.resolved`, margin 0), or
  ``max_runs`` (default 8 x ``runs``) or ``max_seconds`` per pair;
* the speedup is ``exp(median(ln(a_i / b_i)))`` with its ~95 % interval from the same statistic,
  the rounds as clusters, Pocock's constant for the looks (:func:`convtool.core.decide.verdict`);
  a pair whose interval still contains 1 at the cap is "not resolved".

Every model is timed in its own two-model loop with the original, not all variants in one loop:
one loop over many models cycles each model's data out of the caches and biases small, fast
models (the finding behind ``convtool sweep``'s per-point timing).  The protocol's options are a
:class:`convtool.report.ReportOptions`, so a benchmark's ``--runs`` means what ``convtool report
--runs`` means.  Scripts add the flags with :func:`add_arguments` and build the options with
:func:`options`::

    import pairtiming  # benchmarks/pairtiming.py (the script's folder comes first on the import path)

    pt = pairtiming.time_pair(original, converted, feeds, pairtiming.options(args, threads=2))
    print(pt.cell())                     # "1.42x (1.35-1.50)"
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from convtool.core.decide import Verdict, resolved, verdict
from convtool.report import ReportOptions
from convtool.runtime.session import make_session
from convtool.runtime.timing import LatencyStats, per_round, schedule, time_rounds

__all__ = ["PairTiming", "add_arguments", "describe", "options", "smoke", "time_pair"]

Model = str | Path | onnx.ModelProto


@dataclass(frozen=True)
class PairTiming:
    """One timed pair: each side's stats over the paired runs and the verdict (speedup of the
    replacement, its interval, runs, ``resolved``) from one statistic."""

    original: LatencyStats
    replacement: LatencyStats
    verdict: Verdict
    rounds: int
    stopped: str  # "decided", "runs" (the run cap) or "time" (the wall-time cap)

    @property
    def speedup(self) -> float:
        return self.verdict.speedup

    @property
    def ci(self) -> tuple[float, float]:
        return self.verdict.ci_low, self.verdict.ci_high

    @property
    def runs(self) -> int:
        return self.verdict.runs

    @property
    def resolved(self) -> bool:
        """The interval excludes 1 (faster or slower beyond noise)."""
        return self.verdict.ci_low > 1.0 or self.verdict.ci_high < 1.0

    def cell(self, digits: int = 2) -> str:
        """``"1.42x (1.35-1.50)"``: the speedup and its 95 % interval."""
        s, (lo, hi) = self.speedup, self.ci
        return f"{s:.{digits}f}x ({lo:.{digits}f}-{hi:.{digits}f})"


def add_arguments(parser: argparse.ArgumentParser, *, runs: int = 100, warmup: int = 10,
                  max_seconds: float = 30.0) -> None:
    """``--runs`` (first look), ``--max-runs``, ``--max-seconds`` and ``--warmup`` of the pair timing."""
    g = parser.add_argument_group("pair timing (as convtool report times a pair)")
    g.add_argument("--runs", type=int, default=runs,
                   help=f"paired runs of the first look; doubling until the interval excludes 1 [default: {runs}]")
    g.add_argument("--max-runs", type=int, default=None, help="run cap per pair [default: 8 x --runs]")
    g.add_argument("--max-seconds", type=float, default=max_seconds,
                   help=f"wall-time cap per pair [default: {max_seconds:g}]")
    g.add_argument("--warmup", type=int, default=warmup, help=f"untimed runs per session and round [default: {warmup}]")


def options(args: argparse.Namespace, *, threads: int, opt_level: str = "all", spinning: bool = False) -> ReportOptions:
    """The pair timing's options from :func:`add_arguments`'s flags and the session settings."""
    return ReportOptions(runs=args.runs, warmup=args.warmup, max_runs=args.max_runs, max_seconds=args.max_seconds,
                         threads=threads, opt_level=opt_level, allow_spinning=spinning)


def smoke(args: argparse.Namespace, runs: int = 3, warmup: int = 1) -> None:
    """Tiny counts for ``--smoke``: one look of ``runs`` runs, a short cap."""
    args.runs, args.max_runs, args.warmup, args.max_seconds = runs, runs, warmup, 5.0


def describe(opts: ReportOptions) -> str:
    """The protocol in one line, for a script's header."""
    return (f"onnxruntime, {opts.threads} thread(s), opt level {opts.opt_level}, spinning "
            f"{'on' if opts.allow_spinning else 'off'}; each model against the original as `convtool report` times a "
            f"pair: rounds of fresh sessions, from {opts.runs} paired runs doubling until the 95% interval excludes 1 "
            f"(at most {opts.run_cap} runs or {opts.max_seconds:g} s); speedup = median of the paired ratios")


def time_pair(original: Model, replacement: Model, feeds: Mapping[str, np.ndarray],
              opts: ReportOptions | None = None, *, spinning: bool | None = None) -> PairTiming:
    """Time ``replacement`` against ``original`` with ``convtool report``'s pair protocol (module
    docstring); ``spinning`` overrides ``opts.allow_spinning`` (the A/A spinning-on rows)."""
    opts = opts or ReportOptions()
    if spinning is not None:
        opts = replace(opts, allow_spinning=spinning)
    config = opts.session
    looks = schedule(opts.runs, opts.run_cap)

    def decided(samples: list[list[float]], rounds: list[int]) -> bool:
        return resolved(samples[0], samples[1], margin=0.0, rounds=rounds, looks=len(looks))

    makers = [lambda m=m: make_session(m, config) for m in (original, replacement)]
    timed = time_rounds(makers, [feeds, feeds], looks=looks, per_round=per_round(looks[0]), warmup=opts.warmup,
                        stop=decided, max_seconds=opts.max_seconds)
    a, b = timed.stats
    v = verdict(a.samples, b.samples, margin=0.0, rounds=timed.rounds, looks=timed.looks)
    return PairTiming(a, b, v, len(set(timed.rounds)), timed.stopped)
