"""Are the speedup intervals honest?  The same A/B comparison, repeated, against its long-run value.

For each thread count and pair - the bundled digits CNN against its converted form (A/B), and
the digits CNN against itself (A/A, whose true ratio is exactly 1) - this script

1. estimates the long-run speedup: one long interleaved run in rounds of fresh sessions
   (``--long`` paired runs), before and after the repeats, pooled: ``exp(median(ln(a_i / b_i)))``;
2. repeats the comparison ``--repeats`` times with each protocol and counts how often the 95 %
   interval covers the long-run value (A/A: covers 1):

   * ``report`` - what ``convtool report`` does for a pair (:mod:`convtool.report`, its
     defaults): rounds of fresh sessions, ``--runs`` 100 as the first look, doubling until the
     interval excludes 1, at most 8 x 100 runs or 30 s; the interval of
     :func:`convtool.core.decide.speedup` with the rounds as clusters and Pocock's constant;
   * ``one pair, 50 runs`` - the earlier protocol (and the earlier sweep's): one session per
     model for the whole measurement, 50 interleaved runs, the independent-pairs interval.

Columns: how often the interval covered the long-run value, the median interval width
(``ci_high - ci_low``), the median number of paired runs used, how often the interval
excluded 1 (resolved).  Nominal coverage is 95 %.

    python benchmarks/timing_calibration.py                  # 1 and 2 threads, 40 repeats
    python benchmarks/timing_calibration.py --threads 2 --repeats 100
    python benchmarks/timing_calibration.py --smoke          # tiny counts (CI)

No assertion is made about the numbers; this script exists to show them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from convtool.core.decide import Speedup, resolved, speedup
from convtool.graph.io import load_model
from convtool.options import SessionOptions
from convtool.report import ReportOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.session import make_session
from convtool.runtime.timing import per_round, schedule, time_models, time_rounds

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "digits_cnn.onnx"


def _converted(folder: Path) -> Path:
    from convtool.api import convert_file
    from convtool.options import ConvertOptions, RankPolicy

    out = folder / "digits_cnn.r2.onnx"
    convert_file(SAMPLE, out, ConvertOptions(rank=RankPolicy("fixed", 2)))
    return out


def _report_protocol(a: Path, b: Path, feeds, cfg: SessionOptions, opts: ReportOptions) -> Speedup:
    """``convtool report``'s timing of a pair (see :func:`convtool.report.build_report`)."""
    looks = schedule(opts.runs, opts.run_cap)
    timed = time_rounds([lambda: make_session(a, cfg), lambda: make_session(b, cfg)], [feeds, feeds], looks=looks,
                        per_round=per_round(looks[0]), warmup=opts.warmup,
                        stop=lambda s, r: resolved(s[0], s[1], margin=0.0, rounds=r, looks=len(looks)),
                        max_seconds=opts.max_seconds)
    return speedup(timed.stats[0].samples, timed.stats[1].samples, rounds=timed.rounds, looks=timed.looks)


def _one_pair(a: Path, b: Path, feeds, cfg: SessionOptions, runs: int, warmup: int) -> Speedup:
    """The earlier protocol: one session per model, a fixed number of runs, independent pairs."""
    sa, sb = time_models([make_session(a, cfg), make_session(b, cfg)], [feeds, feeds], runs=runs, warmup=warmup)
    return speedup(sa.samples, sb.samples)


def _long_run(a: Path, b: Path, feeds, cfg: SessionOptions, runs: int) -> tuple[list[float], list[float]]:
    timed = time_rounds([lambda: make_session(a, cfg), lambda: make_session(b, cfg)], [feeds, feeds], looks=(runs,),
                        per_round=20, warmup=5)
    return list(timed.stats[0].samples), list(timed.stats[1].samples)


def _row(threads: int, pair: str, protocol: str, truth: float, results: list[Speedup]) -> str:
    covered = sum(r.ci_low <= truth <= r.ci_high for r in results) / len(results)
    width = statistics.median(r.ci_high - r.ci_low for r in results)
    runs = statistics.median(r.runs for r in results)
    decided = sum(r.ci_low > 1.0 or r.ci_high < 1.0 for r in results) / len(results)
    return (f"| {threads} | {pair} | {protocol} | {truth:.3f}x | {covered:.0%} | {width:.3f} | {runs:.0f} "
            f"| {decided:.0%} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--converted", type=Path, default=None, help="B model [default: the sample at rank 2]")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=40, help="comparisons per protocol and pair")
    ap.add_argument("--long", type=int, default=1000, help="paired runs of each long run (two per pair)")
    ap.add_argument("--smoke", action="store_true", help="1 thread, 2 repeats, tiny run counts")
    args = ap.parse_args(argv)
    report_opts, fixed_runs = ReportOptions(), 50
    if args.smoke:
        args.threads, args.repeats, args.long, fixed_runs = [1], 2, 20, 6
        report_opts = ReportOptions(runs=6, warmup=1, max_seconds=2.0)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        converted = args.converted or _converted(Path(tmp))
        feeds = random_feeds(load_model(SAMPLE), seed=0)
        for threads in args.threads:
            cfg = SessionOptions(threads=threads)
            for pair, b in (("A/B", converted), ("A/A", SAMPLE)):
                before = _long_run(SAMPLE, b, feeds, cfg, args.long)
                protocols: dict[str, Callable[[], Speedup]] = {
                    "report": lambda b=b: _report_protocol(SAMPLE, b, feeds, cfg, report_opts),
                    f"one pair, {fixed_runs} runs": lambda b=b: _one_pair(SAMPLE, b, feeds, cfg, fixed_runs, 5),
                }
                results: dict[str, list[Speedup]] = {name: [] for name in protocols}
                for _ in range(args.repeats):  # the protocols alternate, so machine drift hits both
                    for name, run in protocols.items():
                        results[name].append(run())
                after = _long_run(SAMPLE, b, feeds, cfg, args.long)
                truth = 1.0 if pair == "A/A" else speedup(before[0] + after[0], before[1] + after[1]).speedup
                rows += [_row(threads, pair, name, truth, res) for name, res in results.items()]

    what = args.converted.name if args.converted else "its rank-2 conversion"
    print(f"Interval calibration: {SAMPLE.name} against {what} (A/B) and itself (A/A), "
          f"{args.repeats} repeats per protocol; long-run value from 2 x {args.long} interleaved paired runs in "
          "rounds of fresh sessions (A/A: exactly 1)")
    print()
    print("| threads | pair | protocol | long-run speedup | 95% CI covers it | median CI width | median runs "
          "| CI excludes 1 |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
