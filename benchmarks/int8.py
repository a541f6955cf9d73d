"""INT8 quantization against convtool, and stacked on it: the baseline users already have.

Per model and conversion setting, five variants timed in ONE interleaved loop (onnxruntime CPU,
spinning off, batch 1) and measured on held-out data no fit saw:

* ``fp32 original``; ``INT8 original`` - onnxruntime's static quantization of the original
  (:mod:`convtool.runtime.quantize`: pre-processing, QDQ, per-channel weights);
* ``convtool fp32`` - ``convtool convert --rank R --calibration`` (data-aware refit);
* ``convtool+INT8`` - that model quantized the same way, with the same calibration data;
* ``convtool+EQ+INT8`` - cross-layer equalization of the converted pairs first
  (:mod:`convtool.graph.equalize`), then the same quantization.

Columns: median latency, speedup against the fp32 original (ratio of medians, paired 95%
interval of :func:`convtool.core.decide.verdict`), drift against the fp32 original (per-channel
relative L2 of the outputs, :mod:`convtool.analysis.drift`), and top-1 accuracy (labels) or
agreement with the fp32 original - for the real models, task agreement on sample images
(same detections / same OCR text, :mod:`realmodels`).  Then, per converted layer, the INT8
drift of the layer's output against the fp32 converted model, without and with equalization.

``--options`` instead measures the quantizer's own options on the originals (calibration
method x activation type): the table behind :class:`convtool.options.QuantizeOptions`'
defaults.

``--search`` instead measures issue 16's expected comparison, exactly as a user runs it::

    convtool convert MODEL -o OUT --calibration calib.npz --quantize int8 --max-drift 0.05 --threads 2
    convtool report MODEL OUT --int8-baseline --calibration calib.npz --inputs eval.npz --threads 2

(through :func:`convtool.api.convert_model` and :func:`convtool.report.build_report`, the
functions those commands call): the search's quantized model against the INT8-quantized
original - speedup with its 95% interval (the report's pair protocol: rounds of fresh sessions,
until the interval excludes 1 or 800 runs / 30 s), drift against the fp32 original, top-1
accuracy and agreement on the held-out evaluation data, and for YOLOv8n the share of unseen
images with the same detections as the fp32 original.  ``--budget`` changes 0.05.

Models: the bundled ``digits_cnn`` and ``noisy_digits`` (their ``*_calib.npz`` and
``*_eval.npz``), and with the ``[models]`` extra ``yolov8n`` and ``ppocr_det``; without the
extra those are skipped with a note (exit 0).

Usage::

    python benchmarks/int8.py                                  # samples + real models
    python benchmarks/int8.py --models yolov8n --ranks 1 --runs 100
    python benchmarks/int8.py --options
    python benchmarks/int8.py --search --models digits_cnn noisy_digits yolov8n
    python benchmarks/int8.py --smoke                          # digits only, tiny counts
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import realmodels  # benchmarks/realmodels.py: `python benchmarks/int8.py` puts this folder on sys.path

from convtool.analysis.drift import channel_rel_l2, compare_outputs, top1_accuracy
from convtool.api import convert_model
from convtool.core.decide import verdict
from convtool.graph.equalize import equalize_model
from convtool.options import CalibrationOptions, ConvertOptions, QuantizeOptions, RankPolicy, SessionOptions
from convtool.runtime.inputs import Dataset, load, validate
from convtool.runtime.quantize import quantize_model
from convtool.runtime.run import COMPUTE, run_outputs
from convtool.runtime.session import make_session
from convtool.runtime.timing import time_models

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
SAMPLE_MODELS = ("digits_cnn", "noisy_digits")
REAL_MODELS = ("yolov8n", "ppocr_det")
#: Calibration / evaluation size of the real models (ppocr_det at 480x480, as benchmarks/accuracy.py).
REAL_SHAPE = {"yolov8n": (320, 320), "ppocr_det": (480, 480)}


@dataclass
class Subject:
    """A model with its calibration and held-out data (and, for real models, task images)."""

    name: str
    model: onnx.ModelProto
    path: Path
    calibration: Dataset
    evaluation: Dataset
    input_shapes: tuple = ()
    images: list | None = None


def sample_subject(name: str, calib: int | None, evals: int | None) -> Subject:
    path = SAMPLES / f"{name}.onnx"
    model = onnx.load(str(path))
    stem = name.removesuffix("_cnn")  # digits_cnn.onnx comes with digits_calib.npz / digits_eval.npz
    cal = load(SAMPLES / f"{stem}_calib.npz", model, max_samples=calib)
    ev = load(SAMPLES / f"{stem}_eval.npz", model, what="evaluation data", max_samples=evals)
    return Subject(name, model, path, cal, ev)


def real_subject(name: str, calib: int, evals: int, images: int) -> Subject:
    rm = realmodels.get_model(name)
    model = onnx.load(str(rm.path))
    shape = REAL_SHAPE[name]
    cal = validate(realmodels.calibration_inputs(name, calib, seed=0, shape=shape), model, f"{name} images (seed 0)")
    ev = validate(realmodels.calibration_inputs(name, evals, seed=1, shape=shape), model, f"{name} images (seed 1)",
                  what="evaluation data")
    imgs = realmodels.sample_images(name, images, seed=2)
    return Subject(name, model, rm.path, cal, ev, ((rm.input_name, (1, 3, *shape)),), imgs)


def quality(subject: Subject, reference: dict, outputs: dict, task_ref, path: Path, threads: int) -> tuple:
    """(drift, accuracy or None, agreement): against the fp32 original on the held-out data."""
    drift = compare_outputs(reference, outputs)
    if subject.images is not None:
        task = realmodels.task_outputs(subject.name, path, subject.images, threads=threads)
        return drift.drift, None, realmodels.agreement(subject.name, task_ref, task)
    scores = next(iter(outputs.values()))
    acc = top1_accuracy(scores, subject.evaluation.labels) if subject.evaluation.labels is not None else None
    return drift.drift, acc, drift.top1_agreement


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``names`` (float tensors)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.output[:]
    out.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    return out


def layer_drifts(fp32: onnx.ModelProto, int8: onnx.ModelProto, names: list[str], data: Dataset) -> list[float | None]:
    """Per layer output: INT8 model against the fp32 model it came from (relative L2, per channel).

    In the QDQ model a layer's output is read after its QuantizeLinear/DequantizeLinear pair
    when it has one (what the next layer sees)."""
    present = {o for n in int8.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in fp32.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    names = list(names)
    for k, name in enumerate(names):  # an activation fused away by the quantizer: read after it
        while name not in present and len(consumers.get(name, [])) == 1:
            name = consumers[name][0].output[0]
        names[k] = name
    probes = [f"{n}_DequantizeLinear_Output" if f"{n}_DequantizeLinear_Output" in present else n for n in names]
    keep = [i for i, p in enumerate(probes) if p in present]
    if not keep:
        return [None] * len(names)
    ref = run_outputs(with_outputs(fp32, [names[i] for i in keep]), data)
    got = run_outputs(with_outputs(int8, [probes[i] for i in keep]), data)
    found = {i: channel_rel_l2(ref[names[i]], got[probes[i]]) for i in keep}
    return [found.get(i) for i in range(len(names))]


def bench(subject: Subject, rank: int, args, workdir: Path) -> None:
    session = SessionOptions(threads=args.threads, opt_level="all")
    qopts = QuantizeOptions(samples=args.quant_samples)
    options = ConvertOptions(rank=RankPolicy("fixed", rank), input_shapes=subject.input_shapes,
                             calibration=CalibrationOptions(holdout=0.2, factors=args.refit))
    converted = convert_model(subject.model, options, source=subject.name, calibration_data=subject.calibration)
    record = converted.record
    equalized, pairs = equalize_model(converted.model, record.layers)
    variants = {
        "fp32 original": subject.model,
        "INT8 original": quantize_model(subject.model, subject.calibration, qopts).model,
        "convtool fp32": converted.model,
        "convtool+INT8": quantize_model(converted.model, subject.calibration, qopts).model,
        "convtool+EQ+INT8": quantize_model(equalized, subject.calibration, qopts).model,
    }
    paths = {}
    for i, (label, m) in enumerate(variants.items()):
        paths[label] = workdir / f"{subject.name}.r{rank}.{i}.onnx"
        onnx.save(m, str(paths[label]))
    # timing first (before heavy numpy work), one interleaved loop
    feed = {k: v[:1] for k, v in subject.evaluation.arrays.items()}
    sessions = [make_session(paths[label], session) for label in variants]
    stats = time_models(sessions, [feed] * len(sessions), runs=args.runs, warmup=args.warmup)
    reference = run_outputs(subject.model, subject.evaluation)
    task_ref = (realmodels.task_outputs(subject.name, subject.path, subject.images, threads=args.threads)
                if subject.images is not None else None)

    t = record.totals
    macs = f", {t.mac_reduction:.0%} fewer MACs" if t.mac_reduction is not None else ""
    size = {label: p.stat().st_size for label, p in paths.items()}
    print(f"\n{subject.name}, --rank {rank} --calibration: {t.converted}/{t.conv_nodes} convs converted{macs}")
    print(f"held out: {subject.evaluation.count} samples of {Path(subject.evaluation.source).name}; "
          f"{args.threads} threads, {args.runs} runs")
    head = "task agree" if subject.images is not None else "top-1/agree"
    print(f"| variant          |    ms | speedup (95% CI)  | drift  | {head:13} |   MB |")
    print("|------------------|------:|-------------------|-------:|---------------|-----:|")
    for (label, m), st in zip(variants.items(), stats):
        v = verdict(stats[0].samples, st.samples, margin=0.0)
        outputs = reference if label == "fp32 original" else run_outputs(m, subject.evaluation)
        drift, acc, agree = quality(subject, reference, outputs, task_ref, paths[label], args.threads)
        score = (f"{acc:.1%}/{agree:.1%}" if acc is not None else
                 ("-" if agree is None else f"{agree:.1%}"))
        print(f"| {label:16} | {st.median:5.2f} | {x(v.speedup)}x ({x(v.ci_low)}-{x(v.ci_high)}) | "
              f"{drift:6.4f} | {score:13} | {mb(size[label])} |")
    layers = [layer for layer in record.layers if layer.converted]
    if not layers:
        return
    names = [onnx_output(converted.model, layer.new_nodes[-1]) for layer in layers]
    plain = layer_drifts(converted.model, variants["convtool+INT8"], names, subject.evaluation)
    eq = layer_drifts(equalized, variants["convtool+EQ+INT8"], names, subject.evaluation)
    spread = {}
    for p in pairs:
        spread.setdefault(p.layer, []).append(p.imbalance_before)
    print("\nPer converted layer: INT8 drift vs convtool fp32, equalization off/on:")
    print("| layer                  | r | layout          | imbalance | INT8   | EQ+INT8 |")
    print("|------------------------|--:|-----------------|----------:|-------:|--------:|")
    for layer, a, b in zip(layers, plain, eq):
        imb = spread.get(layer.name)
        shown = f"{max(imb):9.2f}" if imb else "        -"
        print(f"| {layer.name[-22:]:22} | {layer.rank} | {str(layer.layout)[:15]:15} | {shown} | {fmt(a)} | "
              f" {fmt(b)} |")
    sys.stdout.flush()


def onnx_output(model: onnx.ModelProto, node_name: str) -> str:
    return next(n.output[0] for n in model.graph.node if n.name == node_name)


def x(v: float) -> str:
    """A ratio in 4 characters (tiny smoke runs give wide intervals)."""
    return f"{v:4.2f}" if v < 9.995 else (f"{v:4.1f}" if v < 99.95 else " >99")


def mb(size: int) -> str:
    v = size / 2**20
    return f"{v:4.2f}" if v < 9.995 else f"{v:4.1f}"


def fmt(v: float | None) -> str:
    return "     -" if v is None else f"{v:6.4f}"


def bench_options(subject: Subject, args, workdir: Path) -> None:
    """The quantizer's options on the original model: method x activation type."""
    session = SessionOptions(threads=args.threads, opt_level="all")
    combos = [("uint8 minmax (default)", {}), ("uint8 percentile", {"method": "percentile"}),
              ("uint8 entropy", {"method": "entropy"}), ("int8 minmax", {"activations": "int8"}),
              ("per-tensor weights", {"per_channel": False}), ("tail quantized too", {"float_tail": False}),
              ("Conv only", {"op_types": ("Conv",)})]
    models, labels = [subject.model], ["fp32"]
    for label, kwargs in combos:
        opts = QuantizeOptions(samples=args.quant_samples, **kwargs)
        models.append(quantize_model(subject.model, subject.calibration, opts).model)
        labels.append(label)
    feed = {k: v[:1] for k, v in subject.evaluation.arrays.items()}
    sessions = [make_session(m, session) for m in models]
    stats = time_models(sessions, [feed] * len(sessions), runs=args.runs, warmup=args.warmup)
    reference = run_outputs(subject.model, subject.evaluation)
    print(f"\n{subject.name}: INT8 options on the original; {subject.evaluation.count} held-out samples, "
          f"{args.threads} threads, {args.runs} runs")
    print("| options                       | drift  | top-1 agr. | speedup (95% CI)  |")
    print("|-------------------------------|-------:|-----------:|-------------------|")
    for label, m, st in zip(labels[1:], models[1:], stats[1:]):
        d = compare_outputs(reference, run_outputs(m, subject.evaluation))
        v = verdict(stats[0].samples, st.samples, margin=0.0)
        agree = "-" if d.top1_agreement is None else f"{d.top1_agreement:.1%}"
        print(f"| {label:29} | {d.drift:6.4f} | {agree:>10} | {x(v.speedup)}x ({x(v.ci_low)}-{x(v.ci_high)}) |")
    sys.stdout.flush()


def bench_search(subject: Subject, args, workdir: Path) -> list[str]:
    """``convert --calibration --quantize int8 --max-drift B`` against the INT8-quantized original,
    measured as ``report --int8-baseline`` measures it (module docstring); the table rows."""
    import time

    from convtool.options import LatencyOptions
    from convtool.report import ReportOptions, build_report

    calib, evals = workdir / f"{subject.name}.calib.npz", workdir / f"{subject.name}.eval.npz"
    np.savez(calib, **subject.calibration.arrays)
    np.savez(evals, **subject.evaluation.arrays,
             **({"labels": subject.evaluation.labels} if subject.evaluation.labels is not None else {}))
    options = ConvertOptions(max_drift=args.budget, input_shapes=subject.input_shapes, quantize=QuantizeOptions(),
                             calibration=CalibrationOptions(source=str(calib), factors=args.refit),
                             timing=LatencyOptions(threads=args.threads))
    t0 = time.perf_counter()
    result = convert_model(subject.model, options, source=str(subject.path))
    seconds = time.perf_counter() - t0
    out = workdir / f"{subject.name}.int8search.onnx"
    onnx.save(result.model, str(out))
    record = result.record
    report = build_report([subject.path, out], ReportOptions(
        runs=args.runs, warmup=args.warmup, threads=args.threads, inputs=str(evals), int8_calibration=str(calib)))
    int8, comp = report.int8, report.comparison
    assert int8 is not None and comp is not None
    same = {"INT8 original": "", "convtool": ""}
    if subject.images is not None:  # task agreement on unseen images: the INT8 original as the report made it
        q = workdir / f"{subject.name}.int8.onnx"
        onnx.save(quantize_model(subject.model, load(calib, subject.model), QuantizeOptions()).model, str(q))
        ref = realmodels.task_outputs(subject.name, subject.path, subject.images, threads=args.threads)
        for label, path in (("INT8 original", q), ("convtool", out)):
            got = realmodels.task_outputs(subject.name, path, subject.images, threads=args.threads)
            same[label] = f"{realmodels.agreement(subject.name, ref, got):.0%} of {len(subject.images)}"
    t = record.totals
    qs = record.search.quantization_attempts if record.search is not None else ()
    print(f"\n{subject.name}: --max-drift {args.budget:g} --quantize int8: {t.converted}/{t.conv_nodes} convs converted "
          f"in {seconds:.0f} s; quantization attempts {[round(a['drift'], 4) for a in qs]}; warnings: "
          f"{'; '.join(record.warnings) or 'none'}")
    print(f"report verdict: {' '.join(render_verdict(report).split())}")
    sys.stdout.flush()

    def ci(low, high, resolved) -> str:
        return f"({x(low)}-{x(high)}){'' if resolved is not False else ', n.r.'}"

    def quality(drift, accuracy) -> str:
        agree = "-" if drift is None or drift.top1_agreement is None else f"{drift.top1_agreement:.1%}"
        return f"{accuracy:.1%} / {agree}" if accuracy is not None else agree

    name = f"{subject.name} ({subject.calibration.count} calibration, {subject.evaluation.count} held-out)"
    c8 = int8.converted
    return [
        f"| {name} | INT8 original | - | {x(int8.comparison.speedup)}x "
        f"{ci(int8.comparison.ci_low, int8.comparison.ci_high, int8.comparison.resolved)} | 1.00x | "
        f"{int8.comparison.drift.drift:.4f} | {quality(int8.comparison.drift, int8.model.accuracy)} | "
        f"{same['INT8 original'] or '-'} |",
        f"| | convtool `--max-drift {args.budget:g} --quantize int8` | {t.converted}/{t.conv_nodes} | "
        f"{x(comp.speedup)}x {ci(comp.ci_low, comp.ci_high, comp.resolved)} | "
        f"**{x(c8.speedup)}x** {ci(c8.ci_low, c8.ci_high, c8.resolved)} | {comp.drift.drift:.4f} | "
        f"{quality(comp.drift, report.models[1].accuracy)} | {same['convtool'] or '-'} |",
    ]


def render_verdict(report) -> str:
    from convtool.render.report import verdict as report_verdict

    return report_verdict(report)


SEARCH_HEADER = ("| model (samples) | variant | convs converted | speedup vs fp32 (95% CI) | vs INT8 original "
                 "(95% CI) | drift | top-1 / agreement | same detections |\n"
                 "|---|---|---:|---:|---:|---:|---:|---:|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, choices=[*SAMPLE_MODELS, *REAL_MODELS],
                   help="default: all (--smoke: digits_cnn)")
    p.add_argument("--ranks", default="1,2", help="conversion ranks, comma-separated")
    p.add_argument("--refit", default="data-aware", choices=["data-aware", "pointwise"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--calibration-samples", type=int, default=32, help="real models: calibration images")
    p.add_argument("--eval-samples", type=int, default=16, help="real models: held-out inputs for the drift")
    p.add_argument("--images", type=int, default=12, help="real models: sample images for task agreement")
    p.add_argument("--quant-samples", type=int, default=64, help="calibration samples for the quantizer")
    p.add_argument("--options", action="store_true", help="measure the quantizer's options instead")
    p.add_argument("--search", action="store_true",
                   help="convert --calibration --quantize int8 --max-drift B against the INT8 original instead")
    p.add_argument("--budget", type=float, default=0.05, help="--search: the drift budget")
    p.add_argument("--smoke", action="store_true", help="digits_cnn only, tiny counts")
    args = p.parse_args(argv)
    ranks = [int(r) for r in args.ranks.split(",")]
    if args.smoke:
        args.models = args.models or ["digits_cnn"]
        args.runs, args.warmup, args.quant_samples, ranks, args.refit = 3, 1, 16, [1], "pointwise"
        args.calibration_samples, args.eval_samples, args.images = 4, 2, 2
    args.models = args.models or [*SAMPLE_MODELS, *REAL_MODELS]
    found = realmodels.find_models()
    missing = [m for m in args.models if m in REAL_MODELS and m not in found]
    if missing:
        print(f"skipped: {', '.join(missing)} not available; install the optional extra: "
              'pip install -e ".[models]" (rapidocr-onnxruntime, nudenet)')
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="convtool-int8-bench-") as tmp:
        for name in args.models:
            if name in missing:
                continue
            if name in SAMPLE_MODELS:
                subject = sample_subject(name, 64 if args.smoke else None, 32 if args.smoke else None)
            else:
                subject = real_subject(name, args.calibration_samples, args.eval_samples, args.images)
            if args.options:
                bench_options(subject, args, Path(tmp))
                continue
            if args.search:
                rows += bench_search(subject, args, Path(tmp))
                continue
            for rank in ranks:
                bench(subject, rank, args, Path(tmp))
    if rows:
        print(f"\n`python benchmarks/int8.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
              f"({args.threads} threads; speedups: the report's pair protocol, from {args.runs} paired runs):\n")
        print(SEARCH_HEADER)
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
