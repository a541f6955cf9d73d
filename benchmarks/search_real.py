"""The ``--max-drift`` budget search on real third-party models: what it costs, what it buys.

Needs the optional extra: ``pip install -e ".[models]"`` (nudenet's YOLOv8n, rapidocr's PP-OCRv4
detector; :mod:`benchmarks.realmodels`).  Without it the script says so and exits 0.

Per model and budget, :func:`convtool.api.convert_model` runs with the options
``convtool convert MODEL --calibration CAL.npz --max-drift B --threads T --cache-dir DIR``
builds (``convtool/cli/params.py``: objective latency, ranks 1/2/4, layout auto, data-aware
refit, 20 % held out), twice: with a fresh, empty timing cache (**cold**), then again with the
same cache folder (**warm**: every layer timing comes from the cache).  Printed:

* the search: wall time of the whole convert and of the search (``record.search.seconds``),
  layers converted, MAC change (``record.totals``), the held-out drift with its 95 % upper
  bound and the held-out sample count, layer timings measured / read from the cache;
* the search's phases (``record.search.phases``, wall seconds): timing the candidate layers,
  the capture pass, the local fits, the suffix-of-graph drift runs, the knapsack verifications,
  the final sequential refit, and the rest (set-up, the whole-model A/B inside the search,
  the record);
* afterwards, apart from the search: every converted model against the original with the
  pair timing of ``convtool report`` (:mod:`pairtiming`: rounds of fresh sessions, ABBA,
  spinning off, ``--threads`` intra-op threads, from ``--runs`` paired runs until the interval
  decides) on one real preprocessed input; speedup = the median paired ratio with its 95 %
  interval (:func:`convtool.core.decide.verdict`);
* the task output on images the search never saw (calibration seed 0, evaluation seed 1):
  YOLOv8n - images whose detections are identical (same count, each matched one-to-one to a
  detection of the same class with IoU >= 0.5, scores ignored: :func:`realmodels.agreement`);
  PP-OCRv4 - pages whose recognised text lines are identical, and text lines kept (the whole
  rapidocr pipeline with the converted detector, as ``accuracy.py --real`` runs it).  Both
  harnesses mix in fixed images that do not depend on the seed (YOLOv8n: every second image
  is one of 10 people-free scenes; PP-OCR: every fourth is the page scan or a scene), and
  those are also in the calibration set; the tables split the count into new images and
  these repeats.

``--sweep`` adds ``convtool sweep`` on YOLOv8n (:func:`convtool.api.sweep_model`, 5 budgets,
a fresh timing cache, the 60 evaluation images as its evaluation data): its table with
identical detections per point, its wall time, and its SVG written to ``--sweep-out``.

Usage::

    python benchmarks/search_real.py                       # yolov8n at 0.03, ppocr_det at 0.05
    python benchmarks/search_real.py --models yolov8n --budgets 0.03,0.1 --runs 300
    python benchmarks/search_real.py --models yolov8n --sweep --sweep-out sweep.svg
    python benchmarks/search_real.py --smoke               # tiny counts (< 2 minutes)

On 2 cores a full YOLOv8n run takes several minutes per budget, PP-OCR a few, the sweep more.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import realmodels  # benchmarks/realmodels.py: `python benchmarks/search_real.py` puts this folder on sys.path

MODELS = ("yolov8n", "ppocr_det")
DEFAULT_BUDGETS = {"yolov8n": (0.03,), "ppocr_det": (0.05,)}
SWEEP_BUDGETS = (0.01, 0.02, 0.03, 0.05, 0.1)


@dataclass(frozen=True)
class Setup:
    calibration: int  # images, seed 0
    evaluation: int  # images the search never saw, seed 1
    shape: tuple[int, int] | None  # calibration / timing input (H, W); None: the model's default


SETUPS = {"yolov8n": Setup(48, 60, None), "ppocr_det": Setup(24, 40, (736, 736))}
SMOKE_SETUPS = {"yolov8n": Setup(6, 4, None), "ppocr_det": Setup(4, 2, (128, 128))}
#: --smoke: layer timings of a few runs each (the CLI's defaults time each pair for up to 400 ms)
SMOKE_TIMING = dict(budget_ms=1.0, min_runs=3, max_runs=3, confirm_runs=3, confirm_max_runs=3,
                    confirm_budget_ms=1.0)
#: --smoke: only a few layers may be converted (YOLOv8n: four 3x3 convs of the smallest head)
SMOKE_INCLUDE = {"yolov8n": (r"^/model\.22/cv[23]\.2/",), "ppocr_det": ()}


@dataclass
class Run:
    """One ``convert_model`` call: the budget, cold or warm cache, its wall time and result."""

    budget: float
    cache: str
    seconds: float
    record: object
    path: Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StageLog:
    """``progress(stage, done, total)`` -> one stderr line per stage, with the elapsed seconds."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.stage, self.start = prefix, None, time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.stage = stage
            log(f"  [{self.prefix}] {time.perf_counter() - self.start:6.1f} s  {stage} ({total})")


def convert_options(name: str, budget: float | None, threads: int, cache_dir: str, smoke: bool):
    """What ``convtool convert --calibration CAL --max-drift B --threads T --cache-dir DIR``
    builds (``convtool/cli/params.py``: ``timing_options``, ``calibration_options``); every
    field not named here is the CLI's default, which is the dataclasses' default.  ``smoke``:
    short layer timings and only a few layers (:data:`SMOKE_INCLUDE`)."""
    from convtool.options import CalibrationOptions, ConvertOptions, LatencyOptions

    timing = LatencyOptions(threads=threads, opt_level="all", cache_dir=cache_dir, use_cache=True,
                            **(SMOKE_TIMING if smoke else {}))
    return ConvertOptions(max_drift=budget, calibration=CalibrationOptions(), timing=timing,
                          include=SMOKE_INCLUDE[name] if smoke else ())


def image_kinds(name: str, n: int) -> list[str]:
    """Per evaluation image: ``new`` (drawn from the seed) or ``repeat`` (a fixed image that the
    calibration set holds too); mirrors :func:`realmodels.sample_images`."""
    if name == "yolov8n":
        return ["repeat" if i % 2 else "new" for i in range(n)]
    return ["repeat" if i % 4 == 3 else "new" for i in range(n)]


def same_split(name: str, reference: Sequence, outputs: Sequence, kinds: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Identical task outputs: (same, total) over all images, the new ones and the repeats."""
    same = [realmodels.same_output(name, a, b) for a, b in zip(reference, outputs)]
    out = {"all": (sum(same), len(same))}
    for kind in ("new", "repeat"):
        picked = [s for s, k in zip(same, kinds) if k == kind]
        out[kind] = (sum(picked), len(picked))
    return out


def lines_kept(reference: Sequence[tuple[str, ...]], outputs: Sequence[tuple[str, ...]]) -> tuple[int, int]:
    """OCR: (original text lines found again on the same page, all original text lines)."""
    kept = sum(sum((Counter(a) & Counter(b)).values()) for a, b in zip(reference, outputs))
    return kept, sum(len(a) for a in reference)


def frac(pair: tuple[int, int]) -> str:
    same, total = pair
    return f"{same}/{total}" if total else "-"


def describe_change(name: str, i: int, kind: str, a, b) -> str:
    if name == "yolov8n":
        def dets(ds):
            return ", ".join(f"{d.cls} {d.score:.2f}" for d in sorted(ds, key=lambda d: -d.score)) or "none"
        return f"image {i} ({kind}): original [{dets(a)}] -> converted [{dets(b)}]"
    gone = list((Counter(a) - Counter(b)).elements())
    new = list((Counter(b) - Counter(a)).elements())
    return f"page {i} ({kind}): lost {gone or '-'}, gained {new or '-'}"


def time_ab(model_paths: Sequence[Path], feed: dict[str, np.ndarray], threads: int, runs: int, warmup: int):
    """Each converted model against the original (the first path), as ``convtool report`` times a
    pair (:mod:`pairtiming`: rounds of fresh sessions, from ``runs`` paired runs until the interval
    decides) -> verdicts.  Not one loop over every model: that biases small, fast models."""
    import pairtiming  # benchmarks/pairtiming.py (this script's folder is on the import path)

    from convtool.report import ReportOptions

    opts = ReportOptions(runs=runs, warmup=warmup, threads=threads, opt_level="all", allow_spinning=False)
    original = model_paths[0]
    return [pairtiming.time_pair(original, path, feed, opts).verdict for path in model_paths[1:]]


def phase_rows(runs: Sequence[Run]) -> list[str]:
    """The search's phases, one column per run (seconds)."""
    named = [("timing layers", lambda p: p.get("candidates")),
             ("capture pass", lambda p: p.get("capture")),
             ("local fits", lambda p: p.get("fits")),
             ("suffix drift", lambda p: None if "sensitivity" not in p else p["sensitivity"] - p.get("fits", 0.0)),
             ("verifications", lambda p: sum(v for k, v in p.items() if k.startswith("selection")) or None),
             ("sequential refit", lambda p: p.get("sequential refit"))]
    header = "| phase (s) | " + " | ".join(f"{r.budget:g} {r.cache}" for r in runs) + " |"
    lines = [header, "|---|" + "---:|" * len(runs)]
    for label, get in named:
        cells = []
        for r in runs:
            v = get(r.record.search.phases)
            cells.append("-" if v is None else f"{v:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rest = []
    for r in runs:
        p, total = r.record.search.phases, r.record.search.seconds
        known = sum(v for v in (p.get("candidates"), p.get("capture+sensitivity"), p.get("sequential refit")) if v)
        known += sum(v for k, v in p.items() if k.startswith("selection"))
        rest.append(f"{total - known:.1f}")
    lines.append("| rest (set-up, A/B, record) | " + " | ".join(rest) + " |")
    lines.append("| **search total** | " + " | ".join(f"**{r.record.search.seconds:.1f}**" for r in runs) + " |")
    lines.append("| plans verified | " + " | ".join(str(len(r.record.search.attempts)) for r in runs) + " |")
    lines.append("| capture MB | " + " | ".join(f"{r.record.search.capture_bytes / 1e6:.0f}" for r in runs) + " |")
    return lines


def bench_model(name: str, budgets: Sequence[float], setup: Setup, args, workdir: Path) -> list[str]:
    import onnx

    from convtool.api import convert_model
    from convtool.graph.io import save_model
    from convtool.render import fmt

    info = realmodels.get_model(name)
    model = onnx.load(str(info.path))
    calib = realmodels.calibration_inputs(name, setup.calibration, seed=0, shape=setup.shape)
    images = realmodels.sample_images(name, setup.evaluation, seed=1)
    kinds = image_kinds(name, len(images))
    log(f"{name}: task outputs of the original on {len(images)} images")
    reference = realmodels.task_outputs(name, None, images, threads=args.threads)

    runs: list[Run] = []
    for budget in budgets:
        cache_dir = tempfile.mkdtemp(prefix=f"cache-{name}-", dir=workdir)  # fresh: cold
        for cache in ("cold", "warm"):
            log(f"{name}: --max-drift {budget:g}, {cache} timing cache")
            options = convert_options(name, budget, args.threads, cache_dir, args.smoke)
            start = time.perf_counter()
            result = convert_model(model, options, source=name, calibration_data=calib,
                                   progress=StageLog(f"{name} {budget:g} {cache}"))
            seconds = time.perf_counter() - start
            path = workdir / f"{name}.{budget:g}.{cache}.onnx"
            save_model(result.model, path)
            runs.append(Run(budget, cache, seconds, result.record, path))
            log(f"  {seconds:.1f} s, {result.record.totals.converted} converted")

    log(f"{name}: timing the original and {len(runs)} converted models, {args.runs} interleaved runs")
    size = setup.shape or tuple(info.input_shape[2:])
    feed = {info.input_name: realmodels.preprocess(name, images[0], size)[None]}
    verdicts = time_ab([info.path] + [r.path for r in runs], feed, args.threads, args.runs, args.warmup)
    outputs = []
    for r in runs:
        log(f"{name}: task outputs of {r.path.name}")
        outputs.append(realmodels.task_outputs(name, r.path, images, threads=args.threads))

    shape = "x".join(str(d) for d in calib[info.input_name].shape[2:])
    totals0 = runs[0].record.totals
    lines = [f"### {name}: `--max-drift` search, {setup.calibration} calibration images at {shape} (seed 0)", "",
             f"{totals0.conv_nodes} Conv nodes, {fmt.count(totals0.macs_before)} MACs; {args.threads} threads; "
             "convert s: the whole `convert_model` call; drift: held-out calibration samples (95% upper bound, "
             "sample count); timings: layers measured / cache hits", "",
             "| budget | cache | convert s | search s | layers | MACs | drift (bound, n) | timings |",
             "|---:|---|---:|---:|---:|---:|---|---:|"]
    for r in runs:
        s, t, lat = r.record.search, r.record.totals, r.record.latency
        bound = "-" if s.bound is None else f"{s.bound:.4f}"
        timed = "-" if lat is None else f"{lat.layers_measured}/{lat.cache_hits}"
        lines.append(f"| {r.budget:g} | {r.cache} | {r.seconds:.0f} | {s.seconds:.0f} | {t.converted}/{t.conv_nodes} | "
                     f"{fmt.signed_pct(-(t.mac_reduction or 0.0))} | {s.drift:.4f} ({bound}, {s.held_out_samples}) | "
                     f"{timed} |")
    lines += ["", *phase_rows(runs), ""]

    task = "detections" if name == "yolov8n" else "OCR text"
    what = "images" if name == "yolov8n" else "pages"
    lines += [f"Afterwards: each model against the original as `convtool report` times a pair (from "
              f"{args.runs} paired runs until the interval decides), {args.threads} threads; identical {task} on {len(images)} {what} the search never saw "
              f"(new: seed 1; repeat: a fixed image also in the calibration set)", ""]
    if name == "yolov8n":
        lines += ["| budget | cache | ms | speedup (95% CI) | identical | new | repeat |",
                  "|---:|---|---|---|---:|---:|---:|"]
    else:
        lines += ["| budget | cache | ms | speedup (95% CI) | pages | new | repeat | lines |",
                  "|---:|---|---|---|---:|---:|---:|---:|"]
    changes: list[str] = []
    for r, v, out in zip(runs, verdicts, outputs):
        split = same_split(name, reference, out, kinds)
        speed = f"{v.speedup:.2f}x ({v.ci_low:.2f}-{v.ci_high:.2f})"
        row = (f"| {r.budget:g} | {r.cache} | {fmt.ms_pair(v.original_ms, v.replacement_ms)} | {speed} | "
               f"{frac(split['all'])} | {frac(split['new'])} | {frac(split['repeat'])} |")
        if name != "yolov8n":
            row += f" {frac(lines_kept(reference, out))} |"
        lines.append(row)
        if r.cache == "cold":
            changes += [f"- {r.budget:g}: " + describe_change(name, i, k, a, b)
                        for i, (a, b, k) in enumerate(zip(reference, out, kinds))
                        if not realmodels.same_output(name, a, b)]
    searched = [f"{r.budget:g} {r.cache} {e.speedup:.2f}x ({e.ci_low:.2f}-{e.ci_high:.2f}, {e.runs} runs)"
                for r in runs if (e := r.record.search.end_to_end) is not None]
    if searched:
        lines += ["", "The search's own end-to-end check: " + "; ".join(searched) + "."]
    if changes:
        lines += ["", f"Changed {task} (cold runs):", "", *changes[:12]]
        if len(changes) > 12:
            lines.append(f"- ... and {len(changes) - 12} more")
    for r in runs:
        for w in r.record.warnings:
            lines.append(f"\nwarning ({r.budget:g} {r.cache}): {w}")
    return lines


def bench_sweep(budgets: Sequence[float], setup: Setup, args, workdir: Path) -> list[str]:
    """``convtool sweep`` on YOLOv8n: table, identical detections per point, wall time, SVG."""
    import onnx

    from convtool.api import sweep_model
    from convtool.graph.io import save_model
    from convtool.options import SweepOptions
    from convtool.render import fmt
    from convtool.render import sweep as render

    name = "yolov8n"
    info = realmodels.get_model(name)
    model = onnx.load(str(info.path))
    calib = realmodels.calibration_inputs(name, setup.calibration, seed=0)
    images = realmodels.sample_images(name, setup.evaluation, seed=1)
    kinds = image_kinds(name, len(images))
    evaluation = realmodels.calibration_inputs(name, len(images), images=images)
    reference = realmodels.task_outputs(name, None, images, threads=args.threads)
    cache_dir = tempfile.mkdtemp(prefix="cache-sweep-", dir=workdir)  # cold
    options = convert_options(name, None, args.threads, cache_dir, args.smoke)
    log(f"sweep {name}: budgets {','.join(f'{b:g}' for b in budgets)}, cold timing cache")
    start = time.perf_counter()
    timing = dict(max_runs=args.runs, max_seconds=2.0) if args.smoke else {}  # else the sweep's own caps
    result = sweep_model(model, options, SweepOptions(budgets=tuple(budgets), runs=args.runs, **timing),
                         calibration_data=calib, eval_data=evaluation, source=name,
                         progress=StageLog(f"sweep {name}"))
    seconds = time.perf_counter() - start
    record = result.record
    out = Path(args.sweep_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render.svg(record), encoding="utf-8")

    cells = render.rows(record)
    lines = [f"### {name}: `convtool sweep`, {len(record.points)} budgets, {setup.calibration} calibration images",
             "", f"Wall time {seconds:.0f} s (cold timing cache, {args.threads} threads; the search inside "
             f"{record.seconds:.0f} s); drift and detections on the {len(images)} evaluation images; "
             f"timing: {record.environment.get('runs')} interleaved runs; picture: `{out.name}`", "",
             "layers: converted of the layers that qualify (the sweep's count; convert's tables count every Conv)", "",
             "| budget | layers | MACs | drift | speedup (95% CI) | P | identical | new |",
             "|---:|---:|---:|---:|---|---|---:|---:|"]
    for i, (point, cell, m) in enumerate(zip(record.points, cells, result.models)):
        path = workdir / f"{name}.sweep{i}.onnx"
        save_model(m, path)
        split = same_split(name, reference, realmodels.task_outputs(name, path, images, threads=args.threads), kinds)
        lines.append(f"| {cell['budget']} | {cell['converted']} | {cell['MACs']} | {cell['drift (eval)']} | "
                     f"{cell['speedup (95% CI)']} | {cell['Pareto']} | {frac(split['all'])} | {frac(split['new'])} |")
    o = record.original
    lines += ["", f"original: {fmt.count(o.macs)} MACs, {fmt.ms(o.latency_ms)} ms; P: on the Pareto front (*)",
              *render.summary_lines(record)]
    lines += [f"\nwarning: {w}" for w in record.warnings]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--budgets", help="--max-drift budgets, comma-separated, for every model "
                                     "[default: yolov8n 0.03, ppocr_det 0.05]")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (search and A/B)")
    p.add_argument("--runs", type=int, default=100, help="paired runs at the first look of the A/B afterwards "
                   "(as convtool report --runs: doubling until the interval decides)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--sweep", action="store_true", help="also convtool sweep on YOLOv8n (5 budgets)")
    p.add_argument("--sweep-budgets", default=",".join(f"{b:g}" for b in SWEEP_BUDGETS))
    p.add_argument("--sweep-out", default="search_real_sweep.svg", help="where --sweep writes its SVG")
    p.add_argument("--smoke", action="store_true", help="tiny counts, for CI (< 2 minutes)")
    args = p.parse_args(argv)
    found = realmodels.find_models()
    missing = [m for m in args.models if m not in found]
    if missing:
        print(f"skipped: {', '.join(missing)} not available; install the optional extra: "
              'pip install -e ".[models]" (rapidocr-onnxruntime, nudenet)')
        args.models = [m for m in args.models if m in found]
        if not args.models:
            return 0
    setups = SMOKE_SETUPS if args.smoke else SETUPS
    if args.smoke:
        args.runs, args.warmup = min(args.runs, 5), 1
    given = tuple(float(b) for b in args.budgets.split(",") if b) if args.budgets else None
    sweep_budgets = tuple(float(b) for b in args.sweep_budgets.split(",") if b)
    if args.smoke:
        sweep_budgets = sweep_budgets[:1]
    print("# `--max-drift` budget search on real models\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            lines = bench_model(name, given or DEFAULT_BUDGETS[name], setups[name], args, Path(tmp))
            print("\n".join(lines) + "\n", flush=True)
        if args.sweep:
            if "yolov8n" not in found:
                print("skipped: --sweep needs yolov8n (nudenet)")
            else:
                print("\n".join(bench_sweep(sweep_budgets, setups["yolov8n"], args, Path(tmp))) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
