"""Where conversion time goes: load, factorise, rewrite, save — against the I/O floor.

Prints, per model, the time of ``onnx.load`` + ``onnx.save`` (the floor) and of each stage
of ``convtool convert`` (load, select + factorise + rewrite, checks + records, save), as
medians of ``--repeats`` runs.  Models: the bundled samples, a generated ResNet-50-sized
graph and a generated VGG-19-sized one (143M parameters; ``--smoke`` skips the big ones).

    python benchmarks/convert_time.py            # full
    python benchmarks/convert_time.py --smoke    # samples only, 1 repeat (CI)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convtool.api import convert_file
from convtool.graph.io import load_model, save_model
from convtool.options import ConvertOptions

ROOT = Path(__file__).resolve().parent.parent


def _conv(name, x, cin, cout, k, stride, rng, inits, nodes, relu=True):
    w = (rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(np.sqrt(2 / (cin * k * k))))
    inits.append(numpy_helper.from_array(w, f"{name}.W"))
    nodes.append(helper.make_node("Conv", [x, f"{name}.W"], [f"{name}.y"], name=name, kernel_shape=[k, k],
                                  strides=[stride, stride], pads=[k // 2] * 4))
    if not relu:
        return f"{name}.y"
    nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"]))
    return f"{name}.r"


def _finish(nodes, inits, x, feats, classes, name):
    rng = np.random.default_rng(1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((feats, classes), dtype=np.float32) * 0.01, "fc.W"))
    nodes.append(helper.make_node("MatMul", ["flat", "fc.W"], ["logits"]))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", 1, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", 1, [1, classes])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def vgg19() -> onnx.ModelProto:
    """VGG-19 geometry: 16 3x3 convs plus the 25088-4096-4096-1000 classifier (143.7M params)."""
    rng = np.random.default_rng(0)
    nodes, inits, x, cin = [], [], "input", 3
    for stage, (cout, n) in enumerate([(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]):
        for i in range(n):
            x = _conv(f"s{stage}.c{i}", x, cin, cout, 3, 1, rng, inits, nodes)
            cin = cout
        nodes.append(helper.make_node("MaxPool", [x], [f"s{stage}.p"], kernel_shape=[2, 2], strides=[2, 2]))
        x = f"s{stage}.p"
    nodes.append(helper.make_node("Flatten", [x], ["flat0"]))
    x = "flat0"
    for i, (a, b) in enumerate([(25088, 4096), (4096, 4096), (4096, 1000)]):
        inits.append(numpy_helper.from_array(rng.standard_normal((a, b), dtype=np.float32) * 0.01, f"fc{i}.W"))
        nodes.append(helper.make_node("MatMul", [x, f"fc{i}.W"], [f"fc{i}.y"]))
        x = f"fc{i}.y"
    graph = helper.make_graph(nodes, "vgg19", [helper.make_tensor_value_info("input", 1, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info(x, 1, [1, 1000])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def resnet50() -> onnx.ModelProto:
    """ResNet-50 geometry (bottleneck blocks 3-4-6-3, 25.5M params); shortcuts omitted for brevity."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = _conv("stem", "input", 3, 64, 7, 2, rng, inits, nodes)
    cin = 64
    for stage, (width, n) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
        for i in range(n):
            stride = 2 if i == 0 and stage > 0 else 1
            h = _conv(f"l{stage}.b{i}.c1", x, cin, width, 1, 1, rng, inits, nodes)
            h = _conv(f"l{stage}.b{i}.c2", h, width, width, 3, stride, rng, inits, nodes)
            x = _conv(f"l{stage}.b{i}.c3", h, width, width * 4, 1, 1, rng, inits, nodes)
            cin = width * 4
    return _finish(nodes, inits, x, cin, 1000, "resnet50")


def _median(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _stages(model: onnx.ModelProto) -> dict[str, float]:
    """Factorise and rewrite timed apart, through the same pieces convert_model uses."""
    import onnx_graphsurgeon as gs

    from convtool.core.plan import Decision, plan_layer
    from convtool.graph.emit import Namer, replace_conv
    from convtool.graph.export import export
    from convtool.graph.select import ConvSite, find_convs

    options = ConvertOptions()
    t0 = time.perf_counter()
    graph = gs.import_onnx(model)
    sites = [s for s in find_convs(model, graph, options.select_rules) if isinstance(s, ConvSite)]
    t1 = time.perf_counter()
    decisions = [(s, d) for s in sites for d in [plan_layer(s.layer, options.rank, options.layout)]
                 if isinstance(d, Decision)]
    t2 = time.perf_counter()
    namer = Namer.for_graph(graph)
    for s, d in decisions:
        replace_conv(graph, s.node, s.batchnorm_node, d, namer)
    graph.cleanup().toposort()
    export(graph, model)
    t3 = time.perf_counter()
    return {"select": t1 - t0, "factorise": t2 - t1, "rewrite": t3 - t2}


def measure(path: Path, repeats: int) -> dict[str, float]:
    """Interleaved repeats: floor (onnx.load + onnx.save) then the CLI's convert_file."""
    tmp = path.parent
    floors, totals, stage_runs = [], [], []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = onnx.load(str(path))
        onnx.save(model, str(tmp / "floor.onnx"))
        floors.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = convert_file(path, tmp / "out.dws.onnx")
        totals.append(time.perf_counter() - t0)
        stage_runs.append(_stages(load_model(path)))
    t_load, _ = _median(lambda: load_model(path), 1)
    t_save, _ = _median(lambda: save_model(result.model, tmp / "out2.dws.onnx"), 1)
    med = lambda key: statistics.median(r[key] for r in stage_runs)  # noqa: E731
    return {"params": result.record.totals.params_before, "floor": statistics.median(floors),
            "total": statistics.median(totals), "load": t_load, "select": med("select"),
            "factorise": med("factorise"), "rewrite": med("rewrite"), "save": t_save,
            "converted": result.record.totals.converted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="samples only, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {p.stem: p for p in sorted((ROOT / "sample_models").glob("*.onnx")) if ".dws" not in p.name}
        if not args.smoke:
            for name, build in (("resnet50_sized", resnet50), ("vgg19_sized", vgg19)):
                path = Path(tmp) / f"{name}.onnx"
                onnx.save(build(), str(path))
                models[name] = path
        for name, path in models.items():
            work = Path(tmp) / name
            work.mkdir()
            target = work / path.name
            target.write_bytes(path.read_bytes()) if path.parent != Path(tmp) else path.rename(target)
            rows.append((name, measure(target, repeats)))
    head = ["model", "params", "convs", "load+save", "load", "select", "factorise", "rewrite", "save",
            "convert_file", "vs floor"]
    row = lambda cells: print("| " + " | ".join(cells) + " |")  # noqa: E731
    row(head)
    row(["---"] * len(head))
    for name, m in rows:
        row([name, f"{m['params'] / 1e6:.1f}M", str(m["converted"]), f"{m['floor']:.3f}s",
                          f"{m['load']:.3f}s", f"{m['select']:.3f}s", f"{m['factorise']:.3f}s",
                          f"{m['rewrite']:.3f}s", f"{m['save']:.3f}s", f"{m['total']:.3f}s",
                          f"{m['total'] / m['floor']:.2f}x"])
    print(f"(medians of {repeats} interleaved runs; convert_file = load + convert + full check + MAC/param "
          "records + atomic save, what the CLI does)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
