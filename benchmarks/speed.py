"""End-to-end speed of converted CNNs: layouts, ranks, with and without --latency-aware.

Models: the bundled samples (``sample_models/vgg_style.onnx``, ``resnet_style.onnx``: 64-256 and
32-128 channels at 64x64) and two synthetic CNNs built here with 64-256 channels at a larger
resolution (input 1x3x112x112, a stride-2 stem, then stages at 56, 28 and 14 pixels):

* ``synthetic_vgg``: stem 3->64 s2, then 2 x conv3x3 per stage (64, 128, 256), MaxPool between;
* ``synthetic_resnet``: stem 3->64 s2, then 2 basic blocks per stage (64, 128, 256; the first block
  of stages 2-3 has stride 2 and a 1x1 stride-2 shortcut).

``vgg19_sized`` (``--models vgg19_sized``, not in the default set: ~20 GMACs, seconds per run)
is the VGG-19 geometry of ``benchmarks/convert_time.py`` (16 3x3 convs, 224x224, 143.7M params,
random weights).

Settings: rank 1 and rank 2, each with the plain ``multiplier`` layout and with ``auto`` (rank 2:
the multiplier-1 ``branches`` form), and ``--latency-aware`` with the default options (layout
``auto``: every layer's fastest measured form).  ``--settings`` picks some by label prefix.
The table's "of MAC speedup" column is speedup x MAC ratio: the fraction of the speedup the
MAC count predicts that the model actually gets.  Every converted
variant is timed against the original as ``convtool report`` times a pair
(``benchmarks/pairtiming.py``: its own two-model loop in rounds of fresh sessions, interleaved
ABBA, onnxruntime CPU, spinning off, from ``--runs`` paired runs doubling until the interval
excludes 1 or a cap); the speedup is the median of the paired ratios with its 95 % interval,
one statistic (:mod:`convtool.core.decide`).  The original's row gives its median over all its
pairs.

Usage::

    python benchmarks/speed.py                  # all models, first look at 40 paired runs
    python benchmarks/speed.py --smoke          # one small model, tiny run counts (CI)
    python benchmarks/speed.py --models synthetic_vgg --runs 100 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

import pairtiming  # benchmarks/pairtiming.py (the script's folder comes first on the import path)

from convtool.api import convert_model
from convtool.core.factorize import mac_ratio
from convtool.options import ConvertOptions, LatencyOptions, RankPolicy
from convtool.report import ReportOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.timing import latency_stats

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: tuple[tuple[str, int, str, bool], ...] = (
    # (label, rank, layout, latency-aware)
    ("r=1 multiplier", 1, "multiplier", False),
    ("r=1 auto", 1, "auto", False),
    ("r=1 --latency-aware (defaults)", 1, "auto", True),
    ("r=2 multiplier", 2, "multiplier", False),
    ("r=2 auto (branches)", 2, "auto", False),
    ("r=2 --latency-aware (defaults)", 2, "auto", True),
)


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def conv(self, name: str, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> str:
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        b = 0.05 * self.rng.standard_normal(cout)
        self.inits += [numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
                       numpy_helper.from_array(b.astype(np.float32), f"{name}.b")]
        self.nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.out"], name=name,
                                           kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4))
        return self.relu(f"{name}.relu", f"{name}.out") if relu else f"{name}.out"

    def relu(self, name: str, x: str) -> str:
        self.nodes.append(helper.make_node("Relu", [x], [f"{name}.out"], name=name))
        return f"{name}.out"

    def op(self, op: str, name: str, inputs: list[str], **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [f"{name}.out"], name=name, **attrs))
        return f"{name}.out"

    def model(self, x: str, c: int, name: str) -> onnx.ModelProto:
        x = self.op("GlobalAveragePool", "gap", [x])
        x = self.op("Flatten", "flatten", [x])
        w = self.rng.standard_normal((10, c)) * 0.05
        self.inits.append(numpy_helper.from_array(w.astype(np.float32), "fc.w"))
        self.nodes.append(helper.make_node("Gemm", [x, "fc.w"], ["logits"], name="fc", transB=1))
        graph = helper.make_graph(self.nodes, name,
                                  [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 112, 112])],
                                  [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 10])],
                                  initializer=self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def synthetic_vgg(seed: int = 5) -> onnx.ModelProto:
    g = _Builder(seed)
    x = g.conv("stem", "input", 3, 64, stride=2)
    cin = 64
    for s, c in enumerate((64, 128, 256), start=1):
        for i in (1, 2):
            x = g.conv(f"s{s}.conv{i}", x, cin, c)
            cin = c
        if s < 3:
            x = g.op("MaxPool", f"s{s}.pool", [x], kernel_shape=[2, 2], strides=[2, 2])
    return g.model(x, cin, "synthetic_vgg")


def synthetic_resnet(seed: int = 6) -> onnx.ModelProto:
    g = _Builder(seed)
    x = g.conv("stem", "input", 3, 64, stride=2)
    cin = 64
    for s, c in enumerate((64, 128, 256), start=1):
        for blk in (1, 2):
            stride = 2 if (s > 1 and blk == 1) else 1
            p = f"s{s}.b{blk}"
            y = g.conv(f"{p}.conv1", x, cin, c, stride=stride)
            y = g.conv(f"{p}.conv2", y, c, c, relu=False)
            short = g.conv(f"{p}.down", x, cin, c, k=1, stride=stride, relu=False) if (stride != 1 or cin != c) else x
            x = g.relu(f"{p}.relu", g.op("Add", f"{p}.add", [y, short]))
            cin = c
    return g.model(x, cin, "synthetic_resnet")


def _vgg19_sized() -> onnx.ModelProto:
    from convert_time import vgg19  # benchmarks/convert_time.py

    return vgg19()


def load_models(names: list[str]) -> dict[str, onnx.ModelProto]:
    makers = {
        "vgg_style": lambda: onnx.load(ROOT / "sample_models" / "vgg_style.onnx"),
        "resnet_style": lambda: onnx.load(ROOT / "sample_models" / "resnet_style.onnx"),
        "synthetic_vgg": synthetic_vgg,
        "synthetic_resnet": synthetic_resnet,
        "vgg19_sized": _vgg19_sized,
    }
    return {n: makers[n]() for n in names}


def bench_model(name: str, model: onnx.ModelProto, settings, timing: ReportOptions, cache_dir: str,
                latency_kw: dict) -> list[dict]:
    variants = []
    for label, rank, layout, aware in settings:
        latency = (LatencyOptions(threads=timing.threads, opt_level=timing.opt_level, cache_dir=cache_dir,
                                  **latency_kw) if aware else None)
        result = convert_model(model, ConvertOptions(rank=RankPolicy("fixed", rank), layout=layout,  # type: ignore[arg-type]
                                                     latency_aware=latency))
        rec = result.record
        layouts = sorted({layer.layout for layer in rec.layers if layer.converted})
        if aware:
            LAYER_ROWS.extend(_layer_rows(name, rank, rec))
        variants.append(dict(label=label, model=result.model, converted=rec.totals.converted,
                             convs=rec.totals.conv_nodes, layouts=",".join(layouts) or "-",
                             mac_ratio=(rec.totals.macs_after / rec.totals.macs_before) if rec.totals.macs_before else None,
                             e2e=rec.latency.end_to_end if rec.latency else None))
    feeds = random_feeds(model)
    rows, original_ms = [], []
    for v in variants:
        pt = pairtiming.time_pair(model, v["model"], feeds, timing)
        st = pt.replacement
        original_ms += pt.original.samples
        rows.append(dict(model=name, label=v["label"], ms=st.median, p10=st.p10, p90=st.p90, speedup=pt.speedup,
                         ci=pt.ci, mac_ratio=v["mac_ratio"], converted=f"{v['converted']}/{v['convs']}",
                         layouts=v["layouts"]))
    base = latency_stats(original_ms)
    return [dict(model=name, label="original", ms=base.median, p10=base.p10, p90=base.p90, speedup=1.0,
                 ci=(1.0, 1.0), mac_ratio=1.0, converted="-", layouts="-"), *rows]


LAYER_ROWS: list[dict] = []


def _layer_rows(model: str, rank: int, record) -> list[dict]:
    """Per measured layer, its fastest timed layout: time ratio against the MAC ratio."""
    rows = []
    for layer in record.layers:
        if not layer.latency_candidates:
            continue
        best = max(layer.latency_candidates, key=lambda c: c["speedup"])
        k = int(np.prod(layer.kernel))
        cin_g, cout_g = layer.in_channels // layer.group, layer.out_channels // layer.group
        orientation = "pointwise_first" if best["layout"] == "pointwise_first" else "depthwise_first"
        mac = mac_ratio(cout_g, cin_g, k, best["rank"], orientation)
        rows.append(dict(model=model, layer=layer.name, ch=f"{layer.in_channels}->{layer.out_channels}",
                         r=best["rank"], layout=best["layout"], time=1.0 / best["speedup"], mac=mac,
                         achieved=mac * best["speedup"], ci=(best["ci_low"], best["ci_high"]),
                         converted=layer.converted))
    return rows


def print_layer_table(rows: list[dict]) -> None:
    print("| model | layer | channels | r | best layout | time ratio | MAC ratio | of MAC speedup | converted |")
    print("|---|---|---:|---:|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['model']} | {r['layer']} | {r['ch']} | {r['r']} | {r['layout']} | {r['time']:.2f} | "
              f"{r['mac']:.3f} | {r['achieved']:.2f} | {'yes' if r['converted'] else 'no'} |")
    sys.stdout.flush()


def print_table(rows: list[dict]) -> None:
    print("| model | setting | converted | layouts | MAC ratio | median ms (p10-p90) | speedup (95% CI) | of MAC speedup |")
    print("|---|---|---:|---|---:|---:|---|---:|")
    for r in rows:
        mac = f"{r['mac_ratio']:.3f}" if r["mac_ratio"] is not None else "?"
        of = f"{r['speedup'] * r['mac_ratio']:.2f}" if r["mac_ratio"] else "?"
        print(f"| {r['model']} | {r['label']} | {r['converted']} | {r['layouts']} | {mac} | "
              f"{r['ms']:.2f} ({r['p10']:.2f}-{r['p90']:.2f}) | "
              f"{r['speedup']:.2f}x ({r['ci'][0]:.2f}-{r['ci'][1]:.2f}) | {of} |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vgg_style", "resnet_style", "synthetic_vgg", "synthetic_resnet"],
                   choices=["vgg_style", "resnet_style", "synthetic_vgg", "synthetic_resnet", "vgg19_sized"])
    p.add_argument("--settings", nargs="+", default=None,
                   help="only the settings whose label starts with one of these, e.g. 'r=2'")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--opt-level", default="all")
    pairtiming.add_arguments(p, runs=40, warmup=5)
    p.add_argument("--cache-dir", default=None, help="timing cache for --latency-aware [default: a fresh temp dir]")
    p.add_argument("--smoke", action="store_true", help="one small model, tiny run counts, for CI")
    args = p.parse_args(argv)
    latency_kw: dict = {}
    if args.smoke:
        args.models = ["resnet_style"]
        pairtiming.smoke(args)
        latency_kw = dict(budget_ms=1.0, min_runs=3, max_runs=3, confirm_runs=3)
    timing = pairtiming.options(args, threads=args.threads, opt_level=args.opt_level)
    print(f"# end to end; {pairtiming.describe(timing)}")
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        rows: list[dict] = []
        for name, model in load_models(args.models).items():
            settings = [st for st in SETTINGS if args.settings is None or any(st[0].startswith(x) for x in args.settings)]
            model_rows = bench_model(name, model, settings, timing, cache_dir, latency_kw)
            rows.extend(model_rows)
    print_table(rows)
    print()
    print("# per layer (timed by --latency-aware at the layer's input shape; fastest layout of each layer)")
    print_layer_table(LAYER_ROWS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
