"""``--objective latency`` against ``--objective macs``, per drift budget: MACs removed, speedup
at 1 and 2 threads, agreement on held-out data.

For each model, ``convtool sweep`` (:func:`convtool.api.sweep_model`) runs

* with ``--objective latency`` once per thread count T of ``--threads`` (the layer timings,
  hence the choices, depend on T), and
* with ``--objective macs`` once (its choices do not depend on threads),

each over the same calibration data and budgets.  Then, per thread count, every distinct point
model is timed against the original as ``convtool report`` times a pair
(``benchmarks/pairtiming.py``: its own two-model loop in rounds of fresh sessions, onnxruntime
CPU, spinning off, ABBA order, from ``--runs`` paired runs doubling until the interval excludes
1, or at most 8 x ``--runs`` runs or ``--max-seconds``); the speedup is the median of the paired
ratios with its 95 % interval, one statistic.  (One loop over every model was the earlier
protocol: it cycles each model's data out of the caches and biases small, fast models.)  Agreement is measured on
held-out data the search never saw: top-1 agreement and accuracy for the digits CNN; for the
real models (``--real``, the ``[models]`` extra) the task output - the same detections
(YOLOv8n, same classes at IoU >= 0.5) or the same OCR text (PP-OCRv4 det) - on held-out images.

Usage::

    python benchmarks/objective.py                        # digits CNN, budgets 0.005..0.1
    python benchmarks/objective.py --real yolov8n --budgets 0.01,0.03,0.1 --calibration-samples 32 \\
        --eval-samples 20                                 # tens of minutes on 2 cores
    python benchmarks/objective.py --real ppocr_det --shape 480x480 --calibration-samples 24
    python benchmarks/objective.py --smoke                # CI: runs, numbers meaningless
    python benchmarks/objective.py --readme               # the README's --max-drift 0.05 --threads 1 example

``--readme`` runs the README's example of the default search through the CLI itself, on the
bundled digits CNN - ``convtool convert sample_models/digits_cnn.onnx --calibration
sample_models/digits_calib.npz --max-drift 0.05 --threads 1``, then ``convtool report`` of the
original against the result ``--threads 1 --runs 200 --inputs sample_models/digits_eval.npz``
- and prints one table row per run (``--repeats``, default 3: the search's layer timings, hence
its choices, move with the machine's load): the layers chosen with rank and layout, MACs
removed, the search's held-out drift with its bound, the convert command's wall time, and the
report's speedup with its interval, drift and top-1 on the 360 evaluation images.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import pairtiming  # benchmarks/pairtiming.py (the script's folder comes first on the import path)

from convtool.api import sweep_model
from convtool.options import CalibrationOptions, ConvertOptions, LatencyOptions, SweepOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.timing import latency_stats

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "sample_models"


def _digits(args):
    model = onnx.load(str(MODELS / "digits_cnn.onnx"))
    with np.load(MODELS / "digits_calib.npz") as f:
        calib = {"input": f["input"]}
    with np.load(MODELS / "digits_eval.npz") as f:
        ev = {"input": f["input"], "labels": f["labels"]}
    if args.smoke:
        calib = {"input": calib["input"][:40]}
        ev = {k: v[:40] for k, v in ev.items()}
    return "digits_cnn", model, calib, ev, None


def _real(args):
    import realmodels as rm  # benchmarks/realmodels.py (this script's folder is on sys.path)

    m = rm.get_model(args.real)
    shape = tuple(int(v) for v in args.shape.split("x")) if args.shape else None
    calib = rm.calibration_inputs(args.real, args.calibration_samples, seed=0, shape=shape)
    images = rm.sample_images(args.real, args.eval_samples, seed=1)
    ev = rm.calibration_inputs(args.real, args.eval_samples, seed=1, shape=shape, images=images)
    return args.real, onnx.load(str(m.path)), calib, ev, images


README_CONVERT = ("convert", "sample_models/digits_cnn.onnx", "--calibration", "sample_models/digits_calib.npz",
                  "--max-drift", "0.05", "--threads", "1")
README_REPORT = ("--threads", "1", "--runs", "200", "--inputs", "sample_models/digits_eval.npz")


def _convtool(*args: str) -> None:
    """One CLI run, from the repository root (the README's paths are relative to it)."""
    proc = subprocess.run([sys.executable, "-m", "convtool", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"convtool {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")


def readme_example(repeats: int, smoke: bool = False) -> str:
    """The README's ``--max-drift 0.05 --threads 1`` example, run through the CLI ``repeats`` times."""
    convert, report = list(README_CONVERT), list(README_REPORT)
    if smoke:  # a tiny, fast stand-in for CI: fixed rank, no search, a short timing
        convert = convert[:2] + ["--rank", "2"]
        report = ["--threads", "1", "--runs", "6", "--inputs", "sample_models/digits_eval.npz"]
    lines = [f"`convtool {' '.join(convert)}`, then `convtool report sample_models/digits_cnn.onnx OUT "
             f"{' '.join(report)}`:", "",
             "| run | layers chosen (rank, layout) | MACs removed | held-out drift (95% bound), samples | "
             "convert wall time | speedup, 1 thread (95% CI), runs | drift, evaluation images | top-1 |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            out, rec_path, rep_path = (str(Path(tmp) / f) for f in (f"r{i}.onnx", f"c{i}.json", f"r{i}.json"))
            start = time.perf_counter()
            _convtool(*convert, "-o", out, "--json", rec_path)
            seconds = time.perf_counter() - start
            _convtool("report", "sample_models/digits_cnn.onnx", out, *report, "--json", rep_path)
            rec, rep = json.loads(Path(rec_path).read_text()), json.loads(Path(rep_path).read_text())
            chosen = [f"{x['name']} ({x['rank']}, {x['layout']})" for x in rec["layers"] if x["status"] == "converted"]
            search = (rec.get("calibration") or {}).get("search") or {}
            bound = search.get("bound")
            held = search.get("held_out_drift", search.get("drift"))
            drift = "-" if held is None else (f"{held:.3f} ({'-' if bound is None else f'{bound:.3f}'}), "
                                              f"{search.get('held_out_samples', 0)}")
            cmp_ = rep["comparison"]
            speed = f"{cmp_['speedup']:.2f}x ({cmp_['ci_low']:.2f}-{cmp_['ci_high']:.2f}), {cmp_['runs']}"
            if not cmp_.get("resolved"):
                speed += ", not resolved"
            top1 = rep["models"][1]["accuracy"]
            lines.append(f"| {i + 1} | {', '.join(chosen) or 'none'} | {rec['totals']['mac_reduction']:.1%} | {drift} | "
                         f"{seconds:.0f} s | {speed} | {cmp_['drift']['drift']:.3f} | "
                         f"{'-' if top1 is None else f'{top1:.1%}'} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", choices=["yolov8n", "ppocr_det"], help="a real model of the [models] extra")
    p.add_argument("--budgets", default="0.005,0.01,0.02,0.05,0.1")
    p.add_argument("--threads", default="1,2", help="thread counts the final loops time at")
    p.add_argument("--tune-threads", default=None,
                   help="thread counts --objective latency is tuned at, one sweep each [default: --threads]")
    pairtiming.add_arguments(p, runs=100, warmup=5)
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--calibration-samples", type=int, default=32)
    p.add_argument("--eval-samples", type=int, default=20)
    p.add_argument("--shape", help="HxW of the calibration inputs (real models)")
    p.add_argument("--cache-dir", default=None, help="layer timing cache [default: a fresh temp dir]")
    p.add_argument("--readme", action="store_true",
                   help="the README's `convert --max-drift 0.05 --threads 1` + `report` example instead (module docstring)")
    p.add_argument("--repeats", type=int, default=3, help="--readme: runs of the example")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.readme:
        print(readme_example(1 if args.smoke else args.repeats, smoke=args.smoke))
        return 0
    budgets = tuple(float(b) for b in args.budgets.split(","))
    threads = [int(t) for t in args.threads.split(",")]
    tune_threads = [int(t) for t in (args.tune_threads or args.threads).split(",")]
    lat_kw: dict = {}
    if args.smoke:
        budgets, threads, tune_threads = (0.05,), [1], [1]
        pairtiming.smoke(args)
        lat_kw = dict(budget_ms=1.0, min_runs=3, max_runs=3, confirm_runs=3)
    if args.real:
        try:
            name, model, calib, ev, images = _real(args)
        except Exception as exc:  # the extra is not installed
            print(f"skipped: {exc}")
            return 0
    else:
        name, model, calib, ev, images = _digits(args)

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        sweeps = {}
        for objective, tuned in [("latency", t) for t in tune_threads] + [("macs", threads[0])]:
            options = ConvertOptions(calibration=CalibrationOptions(max_samples=args.calibration_samples),
                                     objective=objective, search_ranks=tuple(int(r) for r in args.ranks.split(",")),
                                     timing=LatencyOptions(threads=tuned, cache_dir=cache, **lat_kw))
            start = time.perf_counter()
            result = sweep_model(model, options, SweepOptions(budgets=budgets, runs=3, warmup=0), calib, ev,
                                 source=name)
            label = f"latency @{tuned}T" if objective == "latency" else "macs"
            sweeps[label] = result
            print(f"# {name} {label}: sweep {time.perf_counter() - start:.0f} s, {result.record.evaluations} trials",
                  flush=True)

        # the distinct models, named by (setting, budget)
        distinct: dict[bytes, onnx.ModelProto] = {}
        key_of: dict[tuple[str, float], bytes] = {}
        for label, result in sweeps.items():
            for point, m in zip(result.record.points, result.models):
                key = m.SerializeToString() if point.converted else b""
                if key:
                    distinct.setdefault(key, m)
                key_of[(label, point.budget)] = key
        keys = list(distinct)
        speed: dict[int, dict[bytes, tuple[float, float, float]]] = {}
        feeds = random_feeds(model, {k: (1, *v.shape[1:]) for k, v in calib.items()})
        for t in threads:
            timing = pairtiming.options(args, threads=t)
            speed[t] = {b"": (1.0, 1.0, 1.0)}
            original_ms: list[float] = []
            for k in keys:
                pt = pairtiming.time_pair(model, distinct[k], feeds, timing)
                speed[t][k] = (pt.speedup, *pt.ci)
                original_ms += pt.original.samples
            base = f"{latency_stats(original_ms).median:.3g} ms over {len(original_ms)} runs" if original_ms else "-"
            print(f"# {name}: {len(keys)} variants, {pairtiming.describe(timing)}; original {base}", flush=True)

        task: dict[bytes, float] = {b"": 1.0}
        if images is not None:
            import realmodels as rm  # benchmarks/realmodels.py (this script's folder is on sys.path)

            ref = rm.task_outputs(name, None, images)
            for k in keys:
                path = Path(tmp) / f"v{len(task)}.onnx"
                onnx.save(distinct[k], path)
                task[k] = rm.agreement(name, ref, rm.task_outputs(name, path, images))

    cols = " | ".join(f"speedup {t}T (95% CI)" for t in threads)
    what = "same task output" if images is not None else "top-1 agreement | accuracy"
    print(f"\n{name}: held-out {'images' if images is not None else 'samples'}: {len(ev[next(iter(ev))])}")
    print(f"| budget | objective | converted | MACs removed | {cols} | drift | {what} |")
    print("|---:|---|---:|---:|" + "---:|" * len(threads) + "---:|" + ("---:|" if images is not None else "---:|---:|"))
    for b in sorted(set(budgets)):
        for label, result in sweeps.items():
            point = next(p for p in result.record.points if p.budget == b)
            key = key_of[(label, b)]
            macs = (1 - point.macs / result.record.original.macs) if point.macs and result.record.original.macs else 0.0
            sp = " | ".join(f"{speed[t][key][0]:.2f}x ({speed[t][key][1]:.2f}-{speed[t][key][2]:.2f})" for t in threads)
            if images is not None:
                q = f"{task[key]:.0%}"
            else:
                q = f"{point.top1_agreement:.1%} | {point.accuracy:.1%}" if point.accuracy is not None else "-"
            print(f"| {b:g} | {label} | {point.converted}/{result.record.original.convs} | {macs:.1%} | {sp} | "
                  f"{point.drift:.4f} | {q} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
