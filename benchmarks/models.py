"""Real third-party CNNs (PP-OCR det/rec, YOLOv8n): what conversion buys and what it costs.

Needs the optional extra: ``pip install -e ".[models]"`` (rapidocr-onnxruntime, nudenet); the
models and their task runners come from :mod:`benchmarks.realmodels`.  Without the extra the
script says so and exits 0.

Per model and setting (rank 1 / rank 2 with ``--layout auto``, the plain multiplier layout at
rank 1, and ``--latency-aware``), one row:

* convertible convs: converted / all Conv nodes;
* params and MACs of the whole model (at the package's default input shape);
* latency: every variant against the original on a real preprocessed input, timed as
  ``convtool report`` times a pair (``benchmarks/pairtiming.py``: rounds of fresh sessions,
  interleaved, onnxruntime CPU, spinning off, from ``--runs`` paired runs doubling until the
  interval excludes 1 or a cap); medians, and the speedup as the median of the paired ratios
  with its 95 % interval, one statistic (:mod:`convtool.core.decide`);
* output drift: worst relative L2 error over the outputs, on real preprocessed inputs;
* task agreement: the fraction of sample images on which the converted model gives the same
  task result as the original - the same recognised OCR text lines (det: full OCR of pages;
  rec: text of line crops), the same detections (same classes, IoU >= 0.5).

Conversion is data-free here (``convtool convert`` without ``--calibration``); the drift and
agreement columns show what that costs on trained models.

Usage::

    python benchmarks/models.py                          # ppocr_det, ppocr_rec, yolov8n
    python benchmarks/models.py --models yolov8n --runs 60 --threads 2   # first look at 60 paired runs
    python benchmarks/models.py --smoke                  # one model, tiny counts
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pairtiming  # benchmarks/pairtiming.py (the script's folder comes first on the import path)
import realmodels  # benchmarks/realmodels.py: `python benchmarks/models.py` puts this folder on sys.path

from convtool.analysis.drift import compare_outputs
from convtool.api import convert_model
from convtool.options import ConvertOptions, LatencyOptions, RankPolicy
from convtool.render.convert import human
from convtool.report import ReportOptions
from convtool.runtime.session import make_session
from convtool.runtime.timing import latency_stats

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: tuple[tuple[str, int, str, bool], ...] = (
    ("r=1 multiplier", 1, "multiplier", False),
    ("r=1 auto", 1, "auto", False),
    ("r=2 auto", 2, "auto", False),
    ("r=1 auto --latency-aware", 1, "auto", True),
    ("r=2 auto --latency-aware", 2, "auto", True),
)
DEFAULT_MODELS = ("ppocr_det", "ppocr_rec", "yolov8n")


def _run(session, name: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    outs = []
    for i in range(batch.shape[0]):
        outs.append(session.run(None, {name: batch[i : i + 1]}))
    names = [o.name for o in session.get_outputs()]
    return {n: np.concatenate([o[k] for o in outs], axis=0) for k, n in enumerate(names)}


def bench_model(name: str, settings, timing: ReportOptions, samples: int, images: int, latency_kw: dict,
                cache_dir: str, workdir: Path) -> list[dict]:
    rm = realmodels.get_model(name)
    model = onnx.load(str(rm.path))
    shapes = ((rm.input_name, tuple(rm.input_shape)),)
    variants = []
    for label, rank, layout, aware in settings:
        latency = (LatencyOptions(threads=timing.threads, opt_level=timing.opt_level, cache_dir=cache_dir,
                                  **latency_kw) if aware else None)
        result = convert_model(model, ConvertOptions(rank=RankPolicy("fixed", rank), layout=layout,  # type: ignore[arg-type]
                                                     input_shapes=shapes, latency_aware=latency), source=name)
        path = workdir / f"{name}.{len(variants)}.onnx"
        onnx.save(result.model, str(path))
        variants.append(dict(label=label, path=path, record=result.record))

    # latency: every variant against the original, one timed pair each, on one real input
    real = realmodels.calibration_inputs(name, 1, seed=0)[rm.input_name]
    feeds = {rm.input_name: real[:1]}
    pairs = [pairtiming.time_pair(rm.path, v["path"], feeds, timing) for v in variants]
    config = timing.session
    sessions = [make_session(rm.path, config)] + [make_session(v["path"], config) for v in variants]

    # drift on real inputs
    batch = realmodels.calibration_inputs(name, samples, seed=1)[rm.input_name]
    ref = _run(sessions[0], rm.input_name, batch)
    # task agreement on sample images
    imgs = realmodels.sample_images(name, images, seed=2)
    task_ref = realmodels.task_outputs(name, rm.path, imgs, threads=config.threads)

    rec0 = variants[0]["record"]
    rows = [dict(model=name, label="original", convs=f"-/{rec0.totals.conv_nodes}", params=rec0.totals.params_before,
                 macs=rec0.totals.macs_before, ms=latency_stats([x for pt in pairs for x in pt.original.samples]).median,
                 speedup=1.0, ci=(1.0, 1.0), drift=0.0, agree=1.0, e2e=None)]
    for v, pt, sess in zip(variants, pairs, sessions[1:]):
        rec = v["record"]
        drift = compare_outputs(ref, _run(sess, rm.input_name, batch)).rel_l2
        agree = realmodels.agreement(name, task_ref, realmodels.task_outputs(name, v["path"], imgs,
                                                                              threads=config.threads))
        rows.append(dict(model=name, label=v["label"], convs=f"{rec.totals.converted}/{rec.totals.conv_nodes}",
                         params=rec.totals.params_after, macs=rec.totals.macs_after, ms=pt.replacement.median,
                         speedup=pt.speedup, ci=pt.ci, drift=drift, agree=agree,
                         e2e=rec.latency.end_to_end if rec.latency else None,
                         reverted=rec.latency.reverted if rec.latency else None))
    return rows


def print_table(rows: list[dict], images: int) -> None:
    print(f"| model | setting | converted convs | params | MACs | median ms | speedup (95% CI) | output drift "
          f"(rel L2) | same task output ({images} images) |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        note = " (reverted: slower)" if r.get("reverted") else ""
        print(f"| {r['model']} | {r['label']}{note} | {r['convs']} | {human(r['params'])} | {human(r['macs'])} | "
              f"{r['ms']:.2f} | {r['speedup']:.2f}x ({r['ci'][0]:.2f}-{r['ci'][1]:.2f}) | {r['drift']:.3f} | "
              f"{r['agree']:.0%} |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(realmodels.MODEL_NAMES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--opt-level", default="all")
    pairtiming.add_arguments(p, runs=30, warmup=3)
    p.add_argument("--samples", type=int, default=8, help="real inputs for the output drift")
    p.add_argument("--images", type=int, default=12, help="sample images for the task agreement")
    p.add_argument("--cache-dir", default=None, help="timing cache for --latency-aware [default: a fresh temp dir]")
    p.add_argument("--smoke", action="store_true", help="one model, tiny counts")
    args = p.parse_args(argv)
    found = realmodels.find_models()
    missing = [m for m in args.models if m not in found]
    if missing:
        print(f"skipped: {', '.join(missing)} not available; install the optional extra: "
              f'pip install -e ".[models]" (rapidocr-onnxruntime, nudenet)')
        args.models = [m for m in args.models if m in found]
        if not args.models:
            return 0
    latency_kw: dict = {}
    settings = SETTINGS
    if args.smoke:
        args.models, args.samples, args.images = args.models[-1:], 2, 2
        pairtiming.smoke(args)
        latency_kw = dict(budget_ms=1.0, min_runs=3, max_runs=3, confirm_runs=3)
        settings = SETTINGS[1:2] + SETTINGS[3:4]
    timing = pairtiming.options(args, threads=args.threads, opt_level=args.opt_level)
    print(f"# real models; {pairtiming.describe(timing)}; data-free conversion")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.extend(bench_model(name, settings, timing, args.samples, args.images, latency_kw,
                                    args.cache_dir or tmp, Path(tmp)))
    print_table(rows, args.images)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
