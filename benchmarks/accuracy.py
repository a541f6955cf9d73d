"""Accuracy of converted models on the trained digits CNN, with and without calibration.

For each setting (rank 1, rank 2, ``--energy 0.9`` and ``--max-drift`` budgets), converts
``sample_models/digits_cnn.onnx`` data-free and with the least-squares refit on
``digits_calib.npz`` (300 training images), then measures on the held-out ``digits_eval.npz``
(360 images): MAC reduction of the whole model, top-1 accuracy, top-1 agreement with the
original and output drift (relative L2 of the logits). Prints a Markdown table.

    python benchmarks/accuracy.py            # full run (minutes on 2 cores: the data-aware refit)
    python benchmarks/accuracy.py --refit pointwise   # the pointwise-only refit, for comparison
    python benchmarks/accuracy.py --smoke    # tiny sizes, for CI: checks it runs, not the numbers
    python benchmarks/accuracy.py --refits   # per bundled classifier (digits, noisy_digits) and setting:
                                             # --refit pointwise vs data-aware side by side
    python benchmarks/accuracy.py --finetune --ranks 1,2   # rank r + refit, then + --finetune, on the
                                             # bundled classifiers (digits, noisy_digits if present)

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

With ``--finetune`` (the ``[finetune]`` extra): for each ``--ranks`` value, rank r + refit, then
the same + ``--finetune``: MACs removed, held-out drift and task agreement / top-1 before and
after, and the fine-tune's minutes::

    python benchmarks/accuracy.py --finetune --ranks 1 --real yolov8n --calibration-samples 32 \
        --eval-samples 12
    python benchmarks/accuracy.py --finetune --ranks 1,2 --real ppocr_det --calibration-samples 24 \
        --eval-samples 20 --shape 480x480 --crop 320
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
        # 300 calibration samples hold out 60: a top-1 budget below 4.9 % cannot be certified
        ("max-drift 0.05 (top1)", {"max_drift": 0.05, "metric": "top1"}),
        ("max-drift 0.2 (rel_l2)", {"max_drift": 0.2, "metric": "rel_l2"}),
    ]
    return out[:1] + out[4:5] if smoke else out  # the smoke's 24 samples certify no top-1 budget


def run(smoke: bool = False, refit: str = "data-aware") -> list[Row]:
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
            options = ConvertOptions(calibration=CalibrationOptions(factors=refit) if calibrated else None, **kwargs)
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


def table(rows: list[Row], n_eval: int, n_cal: int, refit: str = "data-aware") -> str:
    lines = [
        f"digits CNN (6 convs; held-out set of {n_eval} images; calibration: {n_cal} training images, "
        f"--refit {refit})",
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


@dataclass
class FinetuneRow:
    model: str
    rank: str
    converted: str
    mac_reduction: float
    drift_before: float | None  # held-out calibration samples, refit only
    drift_after: float | None  # the same samples, after --finetune (whatever was kept)
    task_before: float  # eval top-1 accuracy (classifiers) or task agreement (real models)
    task_after: float
    agreement_before: float | None
    agreement_after: float | None
    steps: int
    minutes: float  # the fine-tune alone (wall time of the whole convert in ``total_minutes``)
    total_minutes: float
    decision: str


def _finetune_pair(model: onnx.ModelProto, options, calib: dict, fine) -> tuple:
    """(refit-only result, fine-tuned result, seconds of the fine-tuned conversion)."""
    from dataclasses import replace

    from convtool.api import convert_model

    refit = convert_model(model, options, calibration_data=calib)
    start = time.perf_counter()
    tuned = convert_model(model, replace(options, finetune=fine), calibration_data=calib)
    return refit, tuned, time.perf_counter() - start


def run_finetune(names: list[str], ranks: list[int], fine, smoke: bool = False) -> list[FinetuneRow]:
    """``--finetune`` rows on the bundled classifiers: rank r + refit, then + fine-tune.

    Each model's ``<name>_calib.npz`` is the calibration data (the refit's and the fine-tune's
    held-out split is taken from it: ``drift`` is measured there); ``<name>_eval.npz`` (with
    labels) gives top-1 accuracy and agreement with the original on images no step saw.
    """
    from convtool.options import CalibrationOptions, ConvertOptions, RankPolicy

    rows = []
    for name in names:
        path = MODELS / (f"{name}.onnx" if (MODELS / f"{name}.onnx").exists() else f"{name}_cnn.onnx")
        model = onnx.load(str(path))
        with np.load(MODELS / f"{name}_eval.npz") as f:
            x_eval, y_eval = f["input"], f["labels"]
        with np.load(MODELS / f"{name}_calib.npz") as f:
            x_cal = f["input"]
        if smoke:
            x_eval, y_eval, x_cal = x_eval[:48], y_eval[:48], x_cal[:24]
        ref = _logits(model, x_eval)
        rows.append(FinetuneRow(name, "original", "-", 0.0, None, None, float(np.mean(ref.argmax(1) == y_eval)),
                                float(np.mean(ref.argmax(1) == y_eval)), None, None, 0, 0.0, 0.0, ""))
        for r in ranks:
            options = ConvertOptions(rank=RankPolicy("fixed", r), layout="multiplier", calibration=CalibrationOptions())
            refit, tuned, seconds = _finetune_pair(model, options, {"input": x_cal}, fine)
            out_b, out_a = _logits(refit.model, x_eval), _logits(tuned.model, x_eval)
            s = tuned.record.finetune
            t = tuned.record.totals
            rows.append(FinetuneRow(
                name, str(r), f"{t.converted}/{t.conv_nodes}", t.mac_reduction or 0.0,
                s.held_out_drift_before if s else None, (s.held_out_drift_after if s and s.kept else
                                                         (s.held_out_drift_before if s else None)),
                float(np.mean(out_b.argmax(1) == y_eval)), float(np.mean(out_a.argmax(1) == y_eval)),
                float(np.mean(out_b.argmax(1) == ref.argmax(1))), float(np.mean(out_a.argmax(1) == ref.argmax(1))),
                s.steps if s else 0, (s.seconds if s else 0.0) / 60, seconds / 60, s.decision if s else "not run"))
            print(finetune_table(rows[-1:], header=False), file=sys.stderr, flush=True)
    return rows


def finetune_table(rows: list[FinetuneRow], header: bool = True, task: str = "top-1 accuracy") -> str:
    lines = [] if not header else [
        f"| model | rank | converted | MACs removed | held-out drift (refit -> fine-tuned) | {task} (refit -> fine-tuned) "
        "| agreement with original | steps | fine-tune min | decision |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def pct(v):
        return "-" if v is None else f"{v:.1%}"

    for r in rows:
        if r.rank == "original":
            lines.append(f"| {r.model} | original | - | - | - | {r.task_before:.1%} | - | - | - | - |")
            continue
        drift = "-" if r.drift_before is None else f"{r.drift_before:.3f} -> {r.drift_after:.3f}"
        lines.append(f"| {r.model} | {r.rank} | {r.converted} | {r.mac_reduction:.1%} | {drift} | "
                     f"{r.task_before:.1%} -> {r.task_after:.1%} | {pct(r.agreement_before)} -> {pct(r.agreement_after)} | "
                     f"{r.steps} | {r.minutes:.1f} | {r.decision} |")
    return "\n".join(lines)


def run_real_finetune(name: str, ranks: list[int], n_cal: int, n_eval: int, fine,
                      shape: tuple[int, int] | None = None) -> str:
    """``--finetune`` rows on a real model of the ``[models]`` extra: rank r + refit, then +
    fine-tune; held-out drift on the calibration split, task agreement on other images."""
    import tempfile

    import realmodels as rm  # benchmarks/realmodels.py (the script folder is on sys.path)
    from convtool.graph.io import save_model
    from convtool.options import CalibrationOptions, ConvertOptions, RankPolicy

    info = rm.get_model(name)
    model = onnx.load(str(info.path))
    calib = rm.calibration_inputs(name, n_cal, seed=0, shape=shape)
    images = rm.sample_images(name, n_eval, seed=1)
    reference = rm.task_outputs(name, None, images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in ranks:
            options = ConvertOptions(rank=RankPolicy("fixed", r), layout="multiplier",
                                     calibration=CalibrationOptions(batch_size=8))
            refit, tuned, seconds = _finetune_pair(model, options, calib, fine)
            agree = []
            for i, res in enumerate((refit, tuned)):
                path = Path(tmp) / f"{name}_{r}_{i}.onnx"
                save_model(res.model, path)
                agree.append(rm.agreement(name, reference, rm.task_outputs(name, path, images)))
            s = tuned.record.finetune
            t = tuned.record.totals
            rows.append(FinetuneRow(
                name, str(r), f"{t.converted}/{t.conv_nodes}", t.mac_reduction or 0.0,
                s.held_out_drift_before if s else None,
                (s.held_out_drift_after if s and s.kept else (s.held_out_drift_before if s else None)),
                agree[0], agree[1], None, None, s.steps if s else 0, (s.seconds if s else 0.0) / 60, seconds / 60,
                s.decision if s else "not run"))
            print(finetune_table(rows[-1:], header=False), file=sys.stderr, flush=True)
    return finetune_table(rows, task="task agreement")


@dataclass
class RefitRow:
    model: str
    setting: str
    refit: str
    mac_reduction: float
    fitted_drift: float  # on the calibration images the fits used
    held_drift: float  # on the held-out evaluation images no fit saw
    accuracy: float
    agreement: float
    seconds: float


def run_refits(names: list[str], smoke: bool = False, threads: int = 1) -> tuple[list[RefitRow], dict[str, float]]:
    """Issue 9's comparison: each bundled classifier at rank 1, rank 2 and ``--max-drift 0.05``,
    with the pointwise refit and with the data-aware factors."""
    from convtool.api import convert_model
    from convtool.options import CalibrationOptions, ConvertOptions, LatencyOptions, RankPolicy

    settings = [("rank 1", {"rank": RankPolicy.fixed(1)}), ("rank 2", {"rank": RankPolicy.fixed(2)}),
                ("max-drift 0.05", {"max_drift": 0.05, "objective": "macs"})]
    rows: list[RefitRow] = []
    originals: dict[str, float] = {}
    for name in names:
        stem = "digits_cnn" if name == "digits" else name
        model = onnx.load(str(MODELS / f"{stem}.onnx"))
        with np.load(MODELS / f"{name}_eval.npz") as f:
            x_eval, y_eval = f["input"], f["labels"]
        with np.load(MODELS / f"{name}_calib.npz") as f:
            x_cal = f["input"]
        if smoke:
            x_eval, y_eval, x_cal = x_eval[:48], y_eval[:48], x_cal[:24]
        ref, ref_cal = _logits(model, x_eval), _logits(model, x_cal)
        originals[name] = float(np.mean(ref.argmax(1) == y_eval))
        for setting, kwargs in (settings[:1] if smoke else settings):
            for refit in ("pointwise", "data-aware"):
                options = ConvertOptions(layout="multiplier", calibration=CalibrationOptions(factors=refit), **kwargs)
                start = time.perf_counter()
                res = convert_model(model, options, calibration_data={"input": x_cal})
                seconds = time.perf_counter() - start
                out, out_cal = _logits(res.model, x_eval), _logits(res.model, x_cal)
                rows.append(RefitRow(
                    name, setting, refit, res.record.totals.mac_reduction or 0.0,
                    float(np.linalg.norm(out_cal - ref_cal) / np.linalg.norm(ref_cal)),
                    float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
                    float(np.mean(out.argmax(1) == y_eval)), float(np.mean(out.argmax(1) == ref.argmax(1))), seconds))
    return rows, originals


def refits_table(rows: list[RefitRow], originals: dict[str, float]) -> str:
    lines = ["| model (original top-1) | setting | refit | MACs removed | drift, calibration images | "
             "drift, held-out images | top-1 (held-out) | agreement | time (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model} ({originals[r.model]:.1%}) | {r.setting} | {r.refit} | {r.mac_reduction:.1%} | "
                     f"{r.fitted_drift:.3f} | {r.held_drift:.3f} | {r.accuracy:.1%} | {r.agreement:.1%} | "
                     f"{r.seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--refit", choices=("data-aware", "pointwise"), default="data-aware",
                        help="calibration refit of the digits rows (convtool convert --refit)")
    parser.add_argument("--real", help="a real model of the [models] extra instead (yolov8n, ppocr_det, ...)")
    parser.add_argument("--budgets", default="0.03,0.1", help="--max-drift budgets for --real, comma-separated")
    parser.add_argument("--calibration-samples", type=int, default=32, help="calibration images for --real")
    parser.add_argument("--eval-samples", type=int, default=20, help="evaluation images for --real")
    parser.add_argument("--ranks", default="", help="fixed ranks to compare for --real (data-free and refit), e.g. 1,2")
    parser.add_argument("--shape", help="calibration input size HxW for --real (default: the model's default size)")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune rows instead: rank r (--ranks, default 1) + refit, then + --finetune "
                             "(needs the [finetune] extra)")
    parser.add_argument("--finetune-steps", type=int, default=600, help="--finetune: at most this many steps")
    parser.add_argument("--finetune-seconds", type=float, default=180.0, help="--finetune: time budget per run")
    parser.add_argument("--crop", type=int, help="--finetune: train on random crops of this size (real models)")
    parser.add_argument("--refits", action="store_true",
                        help="pointwise vs data-aware refit, side by side, on the bundled classifiers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.refits:
        names = [n for n in ("digits", "noisy_digits") if (MODELS / f"{n}_calib.npz").exists()]
        print(refits_table(*run_refits(names[:1] if args.smoke else names, args.smoke)))
        return 0
    if args.finetune:
        from convtool.options import FinetuneOptions

        fine = FinetuneOptions(steps=3 if args.smoke else args.finetune_steps,
                               seconds=None if args.smoke else args.finetune_seconds, crop=args.crop)
        ranks = [int(r) for r in args.ranks.split(",") if r] or [1]
        shape = tuple(int(d) for d in args.shape.lower().split("x")) if args.shape else None
        if args.real:
            print(run_real_finetune(args.real, ranks, args.calibration_samples, args.eval_samples, fine, shape))
            return 0
        names = [n for n in ("digits", "noisy_digits") if (MODELS / f"{n}_calib.npz").exists()]
        print(finetune_table(run_finetune(names[:1] if args.smoke else names, ranks, fine, args.smoke)))
        return 0
    if args.real:
        budgets = [float(b) for b in args.budgets.split(",") if b]
        ranks = [int(r) for r in args.ranks.split(",") if r]
        shape = tuple(int(d) for d in args.shape.lower().split("x")) if args.shape else None
        print(run_real(args.real, budgets, args.calibration_samples, args.eval_samples, ranks, shape))
        return 0
    if not (MODELS / "digits_cnn.onnx").exists():
        print(f"missing {MODELS / 'digits_cnn.onnx'}: run sample_models/train_digits.py", file=sys.stderr)
        return 2
    rows = run(args.smoke, args.refit)
    n_eval, n_cal = (48, 24) if args.smoke else (360, 300)
    print(table(rows, n_eval, n_cal, args.refit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
