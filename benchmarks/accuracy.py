"""Accuracy of converted models on the trained digits CNN, with and without calibration.

For each setting (rank 1, rank 2, ``--energy 0.9`` and ``--max-drift`` budgets), converts
``sample_models/digits_cnn.onnx`` data-free and with the least-squares refit on
``digits_calib.npz`` (300 training images), then measures on the held-out ``digits_eval.npz``
(360 images): MAC reduction of the whole model, top-1 accuracy, top-1 agreement with the
original and output drift (relative L2 of the logits). Prints a Markdown table.

    python benchmarks/accuracy.py            # full run (a minute or two on 2 cores)
    python benchmarks/accuracy.py --smoke    # tiny sizes, for CI: checks it runs, not the numbers

``--max-drift`` without calibration measures drift on seeded random inputs (as the CLI does
and warns); with calibration it measures on the calibration images and refits inside the search.

Real models (the optional ``[models]`` extra, see ``benchmarks/realmodels.py``)::

    python benchmarks/accuracy.py --real yolov8n --budgets 0.03,0.1 --calibration-samples 32

runs ``--max-drift`` with calibration on task images (calibration seed 0, evaluation seed 1)
and prints MAC reduction, drift and the task-level agreement (same detections / same text) on
the evaluation images.  Each budget takes minutes (YOLOv8n, 32 images: ~8 min on 2 cores).
``--ranks 1,2`` adds fixed-rank rows (data-free and refit) for comparison; ``--shape HxW`` sets
the calibration input size (the task runner still feeds the package's own sizes)::

    python benchmarks/accuracy.py --real ppocr_det --budgets 0.01,0.03,0.1 --ranks 1,2 \
        --calibration-samples 24 --eval-samples 20 --shape 480x480        # ~6 min
    python benchmarks/accuracy.py --real ppocr_rec --budgets 0.01,0.03,0.1 --ranks 1,2 \
        --calibration-samples 32 --eval-samples 40                        # ~2 min
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "sample_models"


@dataclass
class Row:
    setting: str
    calibrated: bool
    converted: str
    mac_reduction: float
    accuracy: float
    agreement: float
    drift: float
    seconds: float


def _logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])


def settings(smoke: bool) -> list[tuple[str, dict]]:
    from convtool.options import RankPolicy

    out = [
        ("rank 1", {"rank": RankPolicy("fixed", 1)}),
        ("rank 2", {"rank": RankPolicy("fixed", 2)}),
        ("energy 0.9", {"rank": RankPolicy("energy", 0.9)}),
        ("max-drift 0.01 (top1)", {"max_drift": 0.01, "metric": "top1"}),
        ("max-drift 0.2 (rel_l2)", {"max_drift": 0.2, "metric": "rel_l2"}),
    ]
    return out[:1] + out[3:4] if smoke else out


def run(smoke: bool = False) -> list[Row]:
    from convtool.api import convert_model
    from convtool.options import CalibrationOptions
    from convtool.options import ConvertOptions

    model = onnx.load(str(MODELS / "digits_cnn.onnx"))
    with np.load(MODELS / "digits_eval.npz") as f:
        x_eval, y_eval = f["input"], f["labels"]
    with np.load(MODELS / "digits_calib.npz") as f:
        x_cal = f["input"]
    if smoke:
        x_eval, y_eval, x_cal = x_eval[:48], y_eval[:48], x_cal[:24]
    ref = _logits(model, x_eval)
    rows = [Row("original", False, "-", 0.0, float(np.mean(ref.argmax(1) == y_eval)), 1.0, 0.0, 0.0)]
    for name, kwargs in settings(smoke):
        for calibrated in (False, True):
            options = ConvertOptions(calibration=CalibrationOptions() if calibrated else None, **kwargs)
            start = time.perf_counter()
            res = convert_model(model, options, calibration_data={"input": x_cal} if calibrated else None)
            seconds = time.perf_counter() - start
            out = _logits(res.model, x_eval)
            t = res.record.totals
            ranks = [str(layer.rank) if layer.converted else "-" for layer in res.record.layers]
            rows.append(Row(
                name, calibrated, " ".join(ranks), t.mac_reduction or 0.0,
                float(np.mean(out.argmax(1) == y_eval)), float(np.mean(out.argmax(1) == ref.argmax(1))),
                float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), seconds,
            ))
    return rows


def table(rows: list[Row], n_eval: int, n_cal: int) -> str:
    lines = [
        f"digits CNN (6 convs; held-out set of {n_eval} images; calibration: {n_cal} training images)",
        "",
        "| setting | calibration | ranks conv1..conv6 | MAC reduction | top-1 accuracy | top-1 agreement | drift (rel L2) | time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cal = "-" if r.setting == "original" else ("refit" if r.calibrated else "data-free")
        lines.append(f"| {r.setting} | {cal} | {r.converted} | {r.mac_reduction:.1%} | {r.accuracy:.1%} | "
                     f"{r.agreement:.1%} | {r.drift:.3f} | {r.seconds:.1f} |")
    return "\n".join(lines)


def run_real(name: str, budgets: list[float], n_cal: int, n_eval: int, ranks: list[int] = (),
             shape: tuple[int, int] | None = None) -> str:
    """``--max-drift`` + calibration on a real model; a Markdown table with task agreement.

    ``ranks`` adds fixed-rank settings (every candidate layer at that rank, data-free and with
    the refit) for comparison; ``shape`` = (H, W) is the calibration input size (default: the
    model's default static size).  Task agreement always runs the package's own pipeline on the
    evaluation images, at the sizes the package picks.
    """
    import tempfile

    import realmodels as rm  # benchmarks/realmodels.py (the script folder is on sys.path)
    from convtool.api import convert_model
    from convtool.analysis.drift import compare_outputs
    from convtool.runtime.run import run_outputs
    from convtool.options import CalibrationOptions
    from convtool.runtime.inputs import Dataset
    from convtool.graph.io import save_model
    from convtool.options import ConvertOptions, RankPolicy

    info = rm.get_model(name)
    model = onnx.load(str(info.path))
    calib = rm.calibration_inputs(name, n_cal, seed=0, shape=shape)
    images = rm.sample_images(name, n_eval, seed=1)
    reference = rm.task_outputs(name, None, images)
    data = Dataset(calib, "calibration")
    calib_ref = run_outputs(model, data, 8)
    size = "x".join(str(d) for d in next(iter(calib.values())).shape[2:])
    lines = [
        f"{name}: {n_cal} calibration images at {size} (seed 0), task agreement on {n_eval} other images (seed 1)",
        "",
        "| setting | calibration | converted | ranks | MAC reduction | drift (calibration) | task agreement | time (s) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    settings: list[tuple[str, bool, ConvertOptions]] = []
    static = ((info.input_name, (1, *calib[info.input_name].shape[1:])),)  # MACs of data-free rows
    for r in ranks:
        settings.append((f"rank {r}", False, ConvertOptions(rank=RankPolicy("fixed", r), input_shapes=static)))
        settings.append((f"rank {r}", True, ConvertOptions(rank=RankPolicy("fixed", r),
                                                           calibration=CalibrationOptions(batch_size=8))))
    for budget in budgets:
        settings.append((f"max-drift {budget:g}", True,
                         ConvertOptions(max_drift=budget, calibration=CalibrationOptions(batch_size=8))))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, calibrated, options) in enumerate(settings):
            start = time.perf_counter()
            res = convert_model(model, options, calibration_data=calib if calibrated else None)
            seconds = time.perf_counter() - start
            t = res.record.totals
            drift = compare_outputs(calib_ref, run_outputs(res.model, data, 8)).value("rel_l2")
            path = Path(tmp) / f"{name}_{i}.onnx"
            save_model(res.model, path)
            agree = rm.agreement(name, reference, rm.task_outputs(name, path, images))
            chosen = ",".join(str(layer.rank) for layer in res.record.layers if layer.converted)
            lines.append(f"| {label} | {'refit' if calibrated else 'data-free'} | {t.converted}/{t.conv_nodes} | "
                         f"{chosen or '-'} | "
                         f"{t.mac_reduction or 0:.1%} | {drift:.3f} | {agree:.0%} | {seconds:.0f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--real", help="a real model of the [models] extra instead (yolov8n, ppocr_det, ...)")
    parser.add_argument("--budgets", default="0.03,0.1", help="--max-drift budgets for --real, comma-separated")
    parser.add_argument("--calibration-samples", type=int, default=32, help="calibration images for --real")
    parser.add_argument("--eval-samples", type=int, default=20, help="evaluation images for --real")
    parser.add_argument("--ranks", default="", help="fixed ranks to compare for --real (data-free and refit), e.g. 1,2")
    parser.add_argument("--shape", help="calibration input size HxW for --real (default: the model's default size)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.real:
        budgets = [float(b) for b in args.budgets.split(",") if b]
        ranks = [int(r) for r in args.ranks.split(",") if r]
        shape = tuple(int(d) for d in args.shape.lower().split("x")) if args.shape else None
        print(run_real(args.real, budgets, args.calibration_samples, args.eval_samples, ranks, shape))
        return 0
    if not (MODELS / "digits_cnn.onnx").exists():
        print(f"missing {MODELS / 'digits_cnn.onnx'}: run sample_models/train_digits.py", file=sys.stderr)
        return 2
    rows = run(args.smoke)
    n_eval, n_cal = (48, 24) if args.smoke else (360, 300)
    print(table(rows, n_eval, n_cal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
