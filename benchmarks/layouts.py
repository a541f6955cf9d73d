"""Single conv layers: each emission layout's measured time against the original conv.

For every geometry (C -> C channels, 3x3, stride 1, pad 1, at S x S), rank and layout, the
original Conv alone and its replacement alone are timed as ``convtool report`` times a pair
(``benchmarks/pairtiming.py``: rounds of fresh sessions, interleaved ABBA, from ``--runs`` paired
runs doubling until the interval excludes 1 or a cap; onnxruntime CPU, spinning off, the given
threads and optimisation level).  Printed per row:

* ``time``: 1 / speedup, the speedup being the median of the paired ratios - below 1 is faster;
* ``MACs``: the replacement's MACs / the original's (from the converted model's shapes);
* ``of MAC speedup``: achieved speedup / MAC-predicted speedup = ``MACs / time``; 1.0 means
  the replacement is exactly as much faster as its MAC count says, the issue's target is
  >= 2/3;
* the speedup with its paired 95 % interval, one statistic (see :mod:`convtool.core.decide`).

Usage::

    python benchmarks/layouts.py                 # full grid (a few minutes on 2 cores)
    python benchmarks/layouts.py --smoke         # tiny grid and run counts (CI)
    python benchmarks/layouts.py --channels 64 256 --sizes 56 --ranks 2 --threads 2
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

import pairtiming  # benchmarks/pairtiming.py (the script's folder comes first on the import path)

from convtool.api import convert_model
from convtool.options import ConvertOptions, RankPolicy
from convtool.report import ReportOptions

LAYOUTS = ("multiplier", "repeat", "branches", "pointwise_first")


def conv_layer(c_in: int, c_out: int, size: int, k: int = 3, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))).astype(np.float32)
    b = (0.1 * rng.standard_normal(c_out)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[k, k], pads=[k // 2] * 4)
    graph = helper.make_graph(
        [node], "layer", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c_in, size, size])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c_out, size, size])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def measure(c: int, size: int, rank: int, layouts: list[str], timing: ReportOptions):
    """The original layer against every layout's replacement of it, one timed pair each."""
    original = conv_layer(c, c, size)
    variants = []
    for layout in layouts:
        result = convert_model(original, ConvertOptions(rank=RankPolicy("fixed", rank), layout=layout,  # type: ignore[arg-type]
                                                        min_in_channels=1, check=False))
        layer = result.record.layers[0]
        if not layer.converted:
            continue
        variants.append((layout, layer.layout, result.model, layer.macs_after / layer.macs_before))
    feeds = {"x": np.random.default_rng(1).standard_normal((1, c, size, size)).astype(np.float32)}
    rows = []
    for asked, got, replacement, mac in variants:
        pt = pairtiming.time_pair(original, replacement, feeds, timing)
        rows.append(dict(C=c, S=size, r=rank, layout=got if got == asked else f"{asked}->{got}",
                         orig_ms=pt.original.median, repl_ms=pt.replacement.median, time=1.0 / pt.speedup, macs=mac,
                         achieved=mac * pt.speedup, cell=pt.cell()))
    return rows


def print_table(rows: list[dict]) -> None:
    print("| C | S | r | layout | original ms | replacement ms | time ratio | MAC ratio | of MAC speedup | speedup (95% CI) |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['C']} | {r['S']} | {r['r']} | {r['layout']} | {r['orig_ms']:.3f} | {r['repl_ms']:.3f} | "
              f"{r['time']:.2f} | {r['macs']:.3f} | {r['achieved']:.2f} | "
              f"{r['cell']} |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--sizes", type=int, nargs="+", default=[56, 28])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--opt-level", default="all")
    pairtiming.add_arguments(p, runs=30, warmup=5)
    p.add_argument("--smoke", action="store_true", help="tiny grid and run counts, for CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.channels, args.sizes, args.ranks = [16, 32], [8], [1, 2]
        pairtiming.smoke(args)
    timing = pairtiming.options(args, threads=args.threads, opt_level=args.opt_level)
    print(f"# single 3x3 conv layers, C -> C at S x S; {pairtiming.describe(timing)}")
    rows: list[dict] = []
    for c in args.channels:
        for size in args.sizes:
            for rank in args.ranks:
                layouts = [lay for lay in args.layouts if not (rank == 1 and lay in ("repeat", "branches"))]
                rows.extend(measure(c, size, rank, layouts, timing))
    print_table(rows)
    # the target: every rank reaches >= 2/3 of the MAC-predicted speedup with its best layout
    print()
    print("| C | S | r | best layout | of MAC speedup |")
    print("|---:|---:|---:|---|---:|")
    keyed: dict[tuple, dict] = {}
    for r in rows:
        k = (r["C"], r["S"], r["r"])
        if k not in keyed or r["achieved"] > keyed[k]["achieved"]:
            keyed[k] = r
    for (c, s, rank), r in keyed.items():
        print(f"| {c} | {s} | {rank} | {r['layout']} | {r['achieved']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
