"""The noise floor of latency comparisons: A/A and A/B timing, intra-op spinning on vs off.

For each thread count and spinning setting, two pairs are timed with the protocol of
``convtool report`` (``benchmarks/pairtiming.py``: rounds of fresh sessions, warm-up, then
interleaved A B, B A, ... runs, from ``--runs`` paired runs doubling until the interval
excludes 1 or a cap):

* A/A — two sessions of the *same* model; the ratio should be 1.000 and its 95 % interval
  should contain 1 (such a pair runs to the cap: nothing separates it from 1). Its distance
  from 1 is the noise floor: a measured speedup inside it means nothing.
* A/B — the original against its converted model (``convtool convert --rank 2`` unless
  ``--converted`` is given).

The ratio is the median of the paired ratios ``A_i / B_i`` with its 95 % interval, one
statistic (:mod:`convtool.core.decide`); the medians are over the same paired runs.

    python benchmarks/latency_ab.py                         # resnet_style sample, first look at 200 runs
    python benchmarks/latency_ab.py --model m.onnx --converted m.dws.onnx --runs 500
    python benchmarks/latency_ab.py --smoke                 # 10 runs, one setting (CI)

No assertion is made about the numbers; this script exists to show them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

import pairtiming  # benchmarks/pairtiming.py (the script's folder comes first on the import path)

from convtool.graph.io import load_model
from convtool.options import SessionOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.session import environment

ROOT = Path(__file__).resolve().parent.parent


def _converted(model_path: Path, folder: Path) -> Path:
    from convtool.api import convert_file
    from convtool.options import ConvertOptions, RankPolicy

    out = folder / (model_path.stem + ".dws.onnx")
    convert_file(model_path, out, ConvertOptions(rank=RankPolicy("fixed", 2)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "sample_models" / "resnet_style.onnx")
    ap.add_argument("--converted", type=Path, default=None, help="B model [default: convert MODEL at rank 2]")
    pairtiming.add_arguments(ap, runs=200, warmup=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--smoke", action="store_true", help="10 runs, 1 thread, spinning off")
    args = ap.parse_args(argv)
    settings = [(t, spin) for t in args.threads for spin in (True, False)]
    if args.smoke:
        settings = [(1, False)]
        pairtiming.smoke(args, runs=10, warmup=2)

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        b_path = args.converted or _converted(args.model, Path(tmp))
        feeds = random_feeds(load_model(args.model), seed=0)
        timing = pairtiming.options(args, threads=1)
        table = Table(title=f"A/A and A/B as convtool report times a pair (from {timing.runs} paired runs, at most "
                            f"{timing.run_cap} or {timing.max_seconds:g} s): {args.model.name} vs {b_path.name}")
        for col in ("threads", "spinning", "pair", "A median ms (p10-p90)", "A'/B median ms (p10-p90)", "ratio (95% CI), runs"):
            table.add_column(col, justify="right" if col != "pair" else "left")
        for threads, spin in settings:
            opts = pairtiming.options(args, threads=threads, spinning=spin)
            for label, other in (("A/A", args.model), ("A/B", b_path)):
                pt = pairtiming.time_pair(args.model, other, feeds, opts)
                sa, sb = pt.original, pt.replacement
                table.add_row(
                    str(threads),
                    "on" if spin else "off",
                    label,
                    f"{sa.median:.3f} ({sa.p10:.3f}-{sa.p90:.3f})",
                    f"{sb.median:.3f} ({sb.p10:.3f}-{sb.p90:.3f})",
                    f"{pt.cell(3)}, {pt.runs}",
                )
        console.print(table)
        env = environment(SessionOptions())
        console.print(f"onnxruntime {env.onnxruntime} · CPU {env.cpu} ({env.cpu_count} logical) · opt level all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
