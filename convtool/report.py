"""The report pipeline: measure one model, or an original/converted pair, and gate the result.

``build_report([model])`` or ``build_report([original, converted], options)`` returns a
:class:`Report`; ``Report.to_dict()`` is the ``--json`` record (a contract with CI pipelines:
keys may be added, never renamed or removed). ``convtool convert --report`` calls
``build_report([input_path, output_path], options)`` on the file it just wrote.

Steps, in this order (timing comes before the numpy-heavy drift work, which would otherwise
slow the timed runs down):

1. load each model (:func:`convtool.graph.io.load_model`, the converter's loader) and count
   parameters and MACs at static shapes (:mod:`convtool.analysis.costs`); where ONNX shape
   inference gives up, from shapes observed in one onnxruntime run
   (:func:`convtool.runtime.observe.model_costs`; ``ModelRecord.macs_shapes``); unknown is
   ``None`` with the reason in the notes, never 0;
2. check that every requested gate can be computed (else :class:`OptionError`, before any
   measuring);
3. unless ``latency`` is off: time the models interleaved with an optional A/A control, in
   rounds of fresh sessions (:func:`convtool.runtime.timing.time_rounds`); for a pair, from
   ``runs`` paired runs doubling until the speedup's interval excludes 1 or a cap
   (``max_runs``, ``max_seconds``) - the speedup and its interval are one statistic,
   :func:`convtool.core.decide.speedup`, as in ``convtool sweep``;
4. with ``profile``: per-node times from onnxruntime's profiler (:mod:`convtool.runtime.profile`);
5. for a pair: run both on the same inputs (:mod:`convtool.runtime.inputs`,
   :mod:`convtool.runtime.run`) and compute the drift (:mod:`convtool.analysis.drift`; the
   ``--max-drift`` gate budgets the same per-channel drift as ``convert --max-drift``); with
   labels, each model's top-1 accuracy;
6. evaluate the gates.

``int8_calibration`` (``report --int8-baseline --calibration DATA``) adds the INT8-quantized
original as a third model (:class:`Int8Baseline`): the original quantized with
:func:`convtool.runtime.quantize.quantize_model` on those samples (onnxruntime's static INT8,
the options ``convert --quantize int8`` uses), timed against the original and against the
converted model the way the pair is timed (:func:`time_pair`: its own interleaved loop in rounds
of fresh sessions, until the interval excludes 1 or the caps), run on the same inputs (drift
against the original, top-1 accuracy with labels) and sized on disk.  Quantized after the main
timing, timed before the drift work.

The pipeline never prints; ``progress(stage, done, total)`` reports long steps to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convtool.analysis.costs import NodeCost, folded_batchnorms, model_params
from convtool.analysis.drift import Drift, accuracy, class_scores, compare_outputs, label_problem
from convtool.core.decide import Speedup, resolved, speedup
from convtool.errors import OptionError
from convtool.graph.io import load_model
from convtool.options import GATES, ReportOptions
from convtool.records import QuantizationSummary, finite
from convtool.runtime.inputs import Dataset, model_inputs
from convtool.runtime.observe import OBSERVED_NOTE, model_costs
from convtool.runtime.session import Environment
from convtool.runtime.timing import LatencyStats, Rounds

__all__ = [
    "ReportOptions",
    "GATES",
    "GateResult",
    "ModelRecord",
    "Comparison",
    "LayerRecord",
    "AACheck",
    "Report",
    "Int8Baseline",
    "build_report",
    "time_pair",
    "Progress",
]

#: ``progress(stage, done, total)``: stage is a short label such as ``"timing"``.
Progress = Callable[[str, int, int], None]

#: Random inputs for drift when no ``--inputs`` is given: this many seeded batches.
RANDOM_DRIFT_BATCHES = 4


@dataclass(frozen=True)
class GateResult:
    name: str
    threshold: float
    value: float
    passed: bool

    @property
    def flag(self) -> str:
        return GATES[self.name][0]

    @property
    def direction(self) -> str:
        return ">=" if GATES[self.name][1] == "min" else "<="


@dataclass(frozen=True)
class ModelRecord:
    """One model's measurements."""

    path: str
    params: int
    macs: int | None  # None: some counted node's shapes are unknown (never a false 0)
    nodes: tuple[NodeCost, ...]
    latency: LatencyStats | None = None
    accuracy: float | None = None
    node_latency_ms: Mapping[str, float] | None = None
    macs_shapes: str = "inferred"  # "observed": counted from shapes seen in one onnxruntime run

    @property
    def flops(self) -> int | None:
        return None if self.macs is None else 2 * self.macs

    @property
    def macs_known(self) -> bool:
        """False when some counted node had unknown shapes (totals are then a lower bound)."""
        return all(n.macs is not None for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "macs_complete": self.macs_known,
            "macs_shapes": self.macs_shapes,
            "latency_ms": None if self.latency is None else self.latency.to_dict(),
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class Comparison:
    """Converted against original. Reductions are ``1 - after/before``.

    ``speedup``: ``exp(median(ln(original_i / converted_i)))`` over the paired timed runs, with
    ``ci_low`` / ``ci_high`` its ~95 % interval from the same statistic (the field names of
    ``convtool sweep``'s points); ``runs`` paired runs; ``resolved``: the interval excludes 1.
    """

    param_reduction: float
    mac_reduction: float | None
    speedup: float | None
    drift: Drift | None
    ci_low: float | None = None
    ci_high: float | None = None
    runs: int | None = None
    resolved: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "param_reduction": self.param_reduction,
            "mac_reduction": self.mac_reduction,
            "speedup": self.speedup,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "runs": self.runs,
            "resolved": self.resolved,
            "drift": None if self.drift is None else self.drift.to_dict(),
        }


@dataclass(frozen=True)
class LayerRecord:
    """A node of a single model, or an original layer and its replacement in a pair.

    In a pair, ``params``/``macs``/``latency_ms`` are the converted values (summed over
    ``replaced_by``) and the ``*_before`` fields the original node's.
    """

    name: str
    op_type: str
    params: int
    macs: int | None
    latency_ms: float | None = None
    params_before: int | None = None
    macs_before: int | None = None
    latency_ms_before: float | None = None
    replaced_by: tuple[str, ...] = ()
    slower: bool | None = None

    def to_dict(self, pair: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "op_type": self.op_type,
            "params": self.params,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
        }
        if pair:
            out.update(
                params_before=self.params_before,
                macs_before=self.macs_before,
                latency_ms_before=self.latency_ms_before,
                replaced_by=list(self.replaced_by),
                slower=self.slower,
            )
        return out


@dataclass(frozen=True)
class AACheck:
    """A/A control: a second session of the first model, timed like the others."""

    latency: LatencyStats
    ratio: float  # the speedup statistic of the first model over its twin; 1.0 means no noise
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def noise(self) -> float:
        return abs(1.0 - self.ratio)

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "ci_low": self.ci_low, "ci_high": self.ci_high, "noise": self.noise,
                "latency_ms": self.latency.to_dict()}


@dataclass(frozen=True)
class Int8Baseline:
    """The INT8-quantized original (``report --int8-baseline``): what a user would otherwise ship.

    ``model``: its measurements (``path`` names how it was made; latency from its pair with the
    original); ``comparison``: it against the original (``speedup`` = original / INT8 original,
    with ``ci_low`` / ``ci_high``, ``drift`` against the original on the report's inputs);
    ``converted``: the converted model against it (``speedup`` = INT8 original / converted;
    no drift: both drifts are against the original); ``sizes``: serialised bytes of the
    original, the INT8 original and the converted model; ``quantization``: how it was made.
    """

    model: ModelRecord
    comparison: Comparison
    converted: Comparison
    sizes: tuple[int, int, int]
    quantization: QuantizationSummary

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        original, int8, converted = self.sizes
        return {
            "model": self.model.to_dict(),
            "size_bytes": {"original": original, "int8": int8, "converted": converted},
            "comparison": self.comparison.to_dict(),
            "converted_vs_int8": self.converted.to_dict(),
            "quantization": asdict(self.quantization),
        }


@dataclass(frozen=True)
class Report:
    """Everything ``convtool report`` measured, ready to render or write as JSON."""

    models: tuple[ModelRecord, ...]
    comparison: Comparison | None
    layers: tuple[LayerRecord, ...]
    gates: tuple[GateResult, ...]
    environment: Environment
    aa_check: AACheck | None = None
    inputs: str = "random"
    inputs_random: bool = False  # drift was measured on seeded random inputs (no --inputs)
    profile_opt_level: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    int8: Int8Baseline | None = None  # --int8-baseline: the INT8-quantized original

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if not g.passed)

    @property
    def is_pair(self) -> bool:
        return len(self.models) == 2

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` record (non-finite floats become ``null``: JSON has no NaN)."""
        record = {
            "models": [m.to_dict() for m in self.models],
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
            "layers": [layer.to_dict(self.is_pair) for layer in self.layers],
            "gates": [
                {"name": g.name, "threshold": g.threshold, "value": g.value, "passed": g.passed} for g in self.gates
            ],
            "passed": self.passed,
            "environment": self.environment.to_dict(),
            "aa_check": None if self.aa_check is None else self.aa_check.to_dict(),
            "inputs": self.inputs,
            "inputs_random": self.inputs_random,
            "profile_opt_level": self.profile_opt_level,
            "notes": list(self.notes),
            "int8_baseline": None if self.int8 is None else self.int8.to_dict(),
        }
        return finite(record)


# ----------------------------------------------------------------------------- pipeline


def _check_requests(options: ReportOptions, n_models: int) -> None:
    """Refuse, before measuring anything, requests that cannot be computed."""
    if options.aa_check and not options.latency:
        raise OptionError("--aa-check is a latency control; drop --no-latency")
    if options.int8_calibration is not None and n_models < 2:
        raise OptionError("--int8-baseline compares the converted model with the INT8-quantized original; give MODEL "
                          "and CONVERTED")
    gates = options.requested_gates()
    if not gates:
        return
    if n_models < 2:
        flag = GATES[next(iter(gates))][0]
        raise OptionError(f"{flag} compares two models; give MODEL and CONVERTED")
    if options.min_speedup is not None and not options.latency:
        raise OptionError("--min-speedup needs latency measurement; drop --no-latency")
    if options.max_accuracy_drop is not None and options.inputs is None:
        raise OptionError("--max-accuracy-drop needs --inputs with a 'labels' array")


def _reduction(before: int | None, after: int | None) -> float | None:
    if before is None or after is None:
        return None
    return 1.0 - after / before if before else 0.0


def _same_inputs(a: onnx.ModelProto, b: onnx.ModelProto, paths: Sequence[str]) -> None:
    names_a = sorted(spec.name for spec in model_inputs(a))
    names_b = sorted(spec.name for spec in model_inputs(b))
    if names_a != names_b:
        raise OptionError(
            f"{paths[0]} and {paths[1]} have different inputs ({', '.join(names_a)} vs {', '.join(names_b)}); "
            "a comparison needs the same inputs"
        )
    dims_b = {spec.name: spec.dims for spec in model_inputs(b)}
    for spec in model_inputs(a):
        da, db = spec.dims, dims_b[spec.name]
        if da is None or db is None:  # a shape is not declared: onnxruntime will tell
            continue
        if len(da) != len(db) or any(x is not None and y is not None and x != y for x, y in zip(da, db)):
            show = lambda d: "x".join("?" if v is None else str(v) for v in d)  # noqa: E731
            raise OptionError(
                f"input {spec.name!r} is {show(da)} in {paths[0]} but {show(db)} in {paths[1]}; "
                "a comparison needs the same inputs"
            )


def _chunk(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> int:
    """Samples per run for drift: the analysed batch (``--input-shape``), else 32."""
    first = next(iter(model_inputs(model)), None)
    dims = shapes.get(first.name) if first is not None else None
    return int(dims[0]) if dims else 32


@dataclass
class _Inputs:
    """What every step of a report reads: the models, their costs, the data and the feeds."""

    paths: list[str]
    models: list[onnx.ModelProto]
    data: Dataset | None
    shapes: Mapping[str, Sequence[int]]
    costs: list
    params: list[int]
    timing_batch: dict[str, np.ndarray]
    drift_data: Dataset
    inputs_desc: str
    notes: list[str]

    @property
    def pair(self) -> bool:
        return len(self.models) == 2

    @property
    def labels(self) -> np.ndarray | None:
        return self.data.labels if self.data is not None else None


@dataclass
class _Timing:
    """The timing step's result (all ``None`` when latency is off)."""

    latencies: list[LatencyStats | None]
    aa: AACheck | None = None
    paired: Speedup | None = None
    unresolved: bool = False


def _stages(progress: Progress | None, stage: str, items: Sequence) -> Iterator[tuple[int, Any]]:
    """``enumerate(items)``, reporting ``progress(stage, done, total)`` before each and at the end."""
    for i, item in enumerate(items):
        if progress is not None:
            progress(stage, i, len(items))
        yield i, item
    if progress is not None:
        progress(stage, len(items), len(items))


def time_pair(makers: Sequence[Callable[[], Any]], batch: Mapping[str, np.ndarray], options: ReportOptions,
              progress: Callable[[int, int], None] | None = None) -> tuple[Rounds, Speedup]:
    """Time two models (``makers``: session factories, A then B) as the report times a pair: an
    interleaved loop in rounds of fresh sessions, from ``options.runs`` paired runs doubling
    until the speedup's interval excludes 1, ``options.run_cap`` runs or ``options.max_seconds``.
    Returns the rounds and the speedup of B over A (:func:`convtool.core.decide.speedup`)."""
    from convtool.runtime.timing import per_round, schedule, time_rounds

    looks = schedule(options.runs, options.run_cap)

    def decided(samples: list[list[float]], rounds: list[int]) -> bool:
        return resolved(samples[0], samples[1], margin=0.0, rounds=rounds, looks=len(looks))

    timed = time_rounds(list(makers), [batch, batch], looks=looks, per_round=per_round(looks[0]),
                        warmup=options.warmup, stop=decided, max_seconds=options.max_seconds, progress=progress)
    a, b = timed.stats
    return timed, speedup(a.samples, b.samples, rounds=timed.rounds, looks=timed.looks)


@dataclass
class _Int8Run:
    """What :func:`_int8_measure` measured, before the drift: the quantized original, its
    latency (from its pair with the original), both speedups and its outputs."""

    model: onnx.ModelProto
    summary: QuantizationSummary
    latency: LatencyStats | None
    over_original: Speedup | None  # original / INT8 original
    converted_over: Speedup | None  # INT8 original / converted
    outputs: dict[str, np.ndarray] | None


def _int8_measure(models: Sequence[onnx.ModelProto], paths: Sequence[str], options: ReportOptions,
                  timing_batch: Mapping[str, np.ndarray], drift_data: Dataset, chunk: int,
                  inputs_given: bool, progress: Progress | None, notes: list[str]) -> _Int8Run:
    """``--int8-baseline``: quantize the original on ``options.int8_calibration``, time it against
    the original and the converted model against it (:func:`time_pair` each), run it on the
    report's inputs.  Notes say how it was made and whether the inputs overlap its calibration."""
    from convtool.options import QuantizeOptions
    from convtool.runtime.inputs import load, shared_samples
    from convtool.runtime.quantize import quantize_model
    from convtool.runtime.run import run_outputs
    from convtool.runtime.session import make_session

    assert options.int8_calibration is not None
    calibration = load(options.int8_calibration, models[0], what="--calibration")
    if progress is not None:
        progress("quantizing the original", 0, 1)
    quantized = quantize_model(models[0], calibration, QuantizeOptions())
    if progress is not None:
        progress("quantizing the original", 1, 1)
    summary = quantized.summary
    notes.append(f"INT8 original: {paths[0]} quantized by onnxruntime {summary.onnxruntime} ({summary.options}) on "
                 f"{summary.samples} samples of {calibration.source}, as 'convert --quantize int8' quantizes")
    if inputs_given:
        shared = shared_samples(calibration, drift_data)
        if shared:
            notes.append(f"{shared} of the {drift_data.count} inputs are also --calibration samples: the INT8 "
                         "original's drift is partly measured on the samples it was calibrated on")
    config = options.session
    latency = over = under = None
    if options.latency:
        def tick(offset: int):
            return None if progress is None else (lambda d, t: progress("timing INT8", offset * t + d, 2 * t))

        original = lambda: make_session(paths[0], config)
        int8 = lambda: make_session(quantized.model, config)
        converted = lambda: make_session(paths[1], config)
        timed, over = time_pair([original, int8], timing_batch, options, tick(0))
        latency = timed.stats[1]
        _, under = time_pair([int8, converted], timing_batch, options, tick(1))
    if progress is not None:
        progress("running inputs (INT8)", 0, 1)
    outputs = run_outputs(quantized.model, drift_data, chunk, session=make_session(quantized.model, config))
    return _Int8Run(quantized.model, summary, latency, over, under, outputs)


def _int8_record(run: _Int8Run, paths: Sequence[str], models: Sequence[onnx.ModelProto],
                 records: Sequence[ModelRecord], reference: Mapping[str, np.ndarray] | None,
                 labels: np.ndarray | None) -> Int8Baseline:
    """The :class:`Int8Baseline` of a measured run: drift against the original's outputs,
    accuracy with labels, the comparisons and sizes."""
    path = f"{paths[0]} quantized to INT8 (in memory)"
    drift = None
    if reference is not None and run.outputs is not None:
        drift = compare_outputs(reference, run.outputs)
    acc = accuracy(run.outputs, labels, path) if labels is not None and run.outputs is not None else None
    params = model_params(run.model)
    original, converted = records
    record = ModelRecord(path=path, params=params, macs=original.macs, nodes=(), latency=run.latency,
                         accuracy=acc, macs_shapes=original.macs_shapes)

    def compare(s: Speedup | None, params_after: int, macs_before: int | None, macs_after: int | None,
                params_before: int, d: Drift | None) -> Comparison:
        return Comparison(param_reduction=_reduction(params_before, params_after),
                          mac_reduction=_reduction(macs_before, macs_after),
                          speedup=None if s is None else s.speedup, drift=d,
                          ci_low=None if s is None else s.ci_low, ci_high=None if s is None else s.ci_high,
                          runs=None if s is None else s.runs,
                          resolved=None if s is None else bool(s.ci_low > 1.0 or s.ci_high < 1.0))

    return Int8Baseline(
        model=record,
        comparison=compare(run.over_original, params, original.macs, original.macs, original.params, drift),
        converted=compare(run.converted_over, converted.params, original.macs, converted.macs, params, None),
        sizes=(models[0].ByteSize(), run.model.ByteSize(), models[1].ByteSize()),
        quantization=run.summary,
    )


def build_report(
    paths: Sequence[str | Path],
    options: ReportOptions | None = None,
    *,
    progress: Progress | None = None,
    data: Dataset | None = None,
) -> Report:
    """Measure one model, or compare an original (first) with a converted model (second).

    ``data``: samples to run when ``options.inputs`` names none (``convert --report`` passes
    the calibration samples no fit used); seeded random inputs when neither is given.

    Raises :class:`~convtool.errors.ConvToolError` subclasses for bad input (missing or
    unreadable files, bad shapes or data, gates that cannot be computed). Failed gates do not
    raise: check :attr:`Report.passed` (the CLI exits 1 on failure).
    """
    from convtool.runtime.session import environment

    options = options or ReportOptions()
    run = _prepare(paths, options, data)
    env = environment(options.session)
    timing = _time(run, options, progress)
    int8_run = _int8_measure(run.models, run.paths, options, run.timing_batch, run.drift_data,
                             _chunk(run.models[0], run.shapes), run.data is not None, progress, run.notes) \
        if options.int8_calibration is not None else None  # after the pair's timing, before the drift work
    node_times, profile_level = _profile(run, options, progress)
    outputs = _run_inputs(run, options, progress)
    accuracies = _accuracies(run, outputs)
    records = tuple(
        ModelRecord(path=p, params=run.params[i], macs=run.costs[i].macs, nodes=run.costs[i].nodes,
                    latency=timing.latencies[i], accuracy=accuracies[i], node_latency_ms=node_times[i],
                    macs_shapes=run.costs[i].shapes)
        for i, p in enumerate(run.paths)
    )
    comparison = _compare(run, records, outputs, timing) if run.pair else None
    layers = _layers(run, records, node_times)
    int8 = _int8_record(int8_run, run.paths, run.models, records, outputs[0], run.labels) \
        if int8_run is not None else None
    gates = _evaluate_gates(options, records, comparison)
    return Report(models=records, comparison=comparison, layers=layers, gates=gates, environment=env,
                  aa_check=timing.aa, inputs=run.inputs_desc, inputs_random=run.data is None,
                  profile_opt_level=profile_level, notes=tuple(run.notes), int8=int8)


def _prepare(paths: Sequence[str | Path], options: ReportOptions, data: Dataset | None) -> _Inputs:
    """Load and check the models, the data and every request; count the costs; build the feeds."""
    from convtool.runtime.inputs import input_shapes_from_data, load, random_dataset, random_feeds

    paths = [str(p) for p in paths]
    if len(paths) not in (1, 2):
        raise OptionError(f"report takes one model or two (original and converted), got {len(paths)}")
    _check_requests(options, len(paths))
    models = [load_model(p) for p in paths]
    if len(models) == 2:
        _same_inputs(models[0], models[1], paths)
    data = load(options.inputs, models[0], what="--inputs") if options.inputs else data
    shapes = options.input_shape_map
    if data is not None:
        shapes = input_shapes_from_data(models[0], data, shapes)
    if options.max_accuracy_drop is not None and (data is None or data.labels is None):
        raise OptionError("--max-accuracy-drop needs --inputs with a 'labels' array")
    costs = [model_costs(m, shapes) for m in models]
    notes: list[str] = list(data.notes) if data is not None else []  # e.g. float64 cast to float32
    for p, cs in zip(paths, costs):
        if cs.shapes == "observed":
            notes.append(f"{p}: {OBSERVED_NOTE}")
        if cs.reason is not None:
            notes.append(f"{p}: MACs unknown: {cs.reason}")
    if data is not None:  # the timing batch and the drift batches
        timing_batch = {k: v[: shapes[k][0]] if len(shapes.get(k, ())) > 0 else v[:1] for k, v in data.arrays.items()}
        drift_data, inputs_desc = data, data.source
    else:
        timing_batch = random_feeds(models[0], shapes, seed=options.seed)
        batch = next(iter(timing_batch.values())).shape[0] if timing_batch else 1
        drift_data = random_dataset(models[0], shapes, count=RANDOM_DRIFT_BATCHES * batch, seed=options.seed)
        inputs_desc = f"random (seed {options.seed})"
    return _Inputs(paths, models, data, shapes, costs, [model_params(m) for m in models], timing_batch,
                   drift_data, inputs_desc, notes)


def _time(run: _Inputs, options: ReportOptions, progress: Progress | None) -> _Timing:
    """Time the models interleaved, in rounds of fresh sessions (a pair until its speedup's
    interval excludes 1 or a cap), with the optional A/A twin; notes on noisy settings."""
    from convtool.runtime.session import make_session
    from convtool.runtime.timing import per_round, schedule, time_rounds

    if not options.latency:
        return _Timing([None] * len(run.models))
    timed_paths = list(run.paths) + ([run.paths[0]] if options.aa_check else [])
    looks = schedule(options.runs, options.run_cap) if run.pair else (options.runs,)

    def tick(done: int, _total: int) -> None:
        if progress is not None:
            progress("timing", done, _total)

    def decided(samples: list[list[float]], rounds: list[int]) -> bool:
        return resolved(samples[0], samples[1], margin=0.0, rounds=rounds, looks=len(looks))

    makers = [lambda p=p: make_session(p, options.session) for p in timed_paths]
    timed = time_rounds(makers, [run.timing_batch] * len(timed_paths), looks=looks, per_round=per_round(looks[0]),
                        warmup=options.warmup, stop=decided if run.pair else None,
                        max_seconds=options.max_seconds, progress=tick)
    stats = timed.stats
    result = _Timing(list(stats[: len(run.models)]))
    if options.aa_check:
        twin = speedup(stats[0].samples, stats[-1].samples, rounds=timed.rounds, looks=timed.looks)
        result.aa = AACheck(latency=stats[-1], ratio=twin.speedup, ci_low=twin.ci_low, ci_high=twin.ci_high)
    if run.pair:
        paired = result.paired = speedup(stats[0].samples, stats[1].samples, rounds=timed.rounds, looks=timed.looks)
        result.unresolved = not (paired.ci_low > 1.0 or paired.ci_high < 1.0)
        if result.unresolved:
            run.notes.append(f"speed not resolved at {paired.runs} runs: {paired.speedup:.2f}x, 95% CI "
                             f"{paired.ci_low:.2f}-{paired.ci_high:.2f}x includes 1.00x (no measurable difference "
                             "within the timing cap)")
    if options.runs < 20:
        run.notes.append(f"only {options.runs} timed runs per model: medians are noisy (use --runs 100+)")
    if options.threads > 1 and stats[0].median < 1.0:
        run.notes.append("sub-millisecond model with several threads: timings are often bimodal; use many runs")
    return result


def _profile(run: _Inputs, options: ReportOptions,
             progress: Progress | None) -> tuple[list[Mapping[str, float] | None], str | None]:
    """``--profile``: per-node times of each model and the optimisation level they were taken at."""
    node_times: list[Mapping[str, float] | None] = [None] * len(run.models)
    if not options.profile:
        return node_times, None
    from convtool.runtime.profile import profile_nodes

    level = None
    for i, (p, m) in _stages(progress, "profiling", list(zip(run.paths, run.models))):
        prof = profile_nodes(m, run.timing_batch, options.session, runs=min(options.runs, 20),
                             warmup=min(options.warmup, 5), path=p)
        node_times[i], level = prof.times_ms, prof.opt_level
    return node_times, level


def _run_inputs(run: _Inputs, options: ReportOptions, progress: Progress | None) -> list[dict[str, np.ndarray] | None]:
    """Each model's outputs on the drift data (a pair, or labels to score; timing makes its own sessions)."""
    from convtool.runtime.run import run_outputs
    from convtool.runtime.session import make_session

    outputs: list[dict[str, np.ndarray] | None] = [None] * len(run.models)
    if not (run.pair or run.labels is not None):
        return outputs
    sessions = [make_session(p, options.session) for p in run.paths]
    for i, s in _stages(progress, "running inputs", sessions):
        outputs[i] = run_outputs(run.models[i], run.drift_data, _chunk(run.models[0], run.shapes), session=s)
    return outputs


def _accuracies(run: _Inputs, outputs: Sequence[dict[str, np.ndarray] | None]) -> list[float | None]:
    """With labels: each model's top-1 accuracy, and a note when labels fall outside the classes."""
    if run.labels is None or run.data is None:
        return [None] * len(run.models)
    accuracies: list[float | None] = [accuracy(o, run.labels, p) for o, p in zip(outputs, run.paths) if o is not None]
    scores = class_scores(outputs[0] or {})
    problem = label_problem(scores[1], run.labels, str(run.data.source)) if scores is not None else None
    run.notes += [problem] if problem else []
    return accuracies


def _compare(run: _Inputs, records: Sequence[ModelRecord], outputs: Sequence[dict[str, np.ndarray] | None],
             timing: _Timing) -> Comparison:
    """Converted against original: reductions, the paired speedup and the drift."""
    drift = None
    if outputs[0] is not None and outputs[1] is not None:
        try:
            drift = compare_outputs(outputs[0], outputs[1])
        except ValueError as exc:
            raise OptionError(f"cannot compare the models' outputs: {exc}") from None
    paired = timing.paired
    return Comparison(
        param_reduction=_reduction(records[0].params, records[1].params),  # type: ignore[arg-type]
        mac_reduction=_reduction(records[0].macs, records[1].macs),
        speedup=None if paired is None else paired.speedup, drift=drift,
        ci_low=None if paired is None else paired.ci_low, ci_high=None if paired is None else paired.ci_high,
        runs=None if paired is None else paired.runs, resolved=None if paired is None else not timing.unresolved,
    )


def _layers(run: _Inputs, records: Sequence[ModelRecord],
            node_times: Sequence[Mapping[str, float] | None]) -> tuple[LayerRecord, ...]:
    """A pair's converted layers (a note when there are none), or a single model's nodes."""
    if run.pair:
        layers = _pair_layers(run.models[0], run.models[1], records[0], records[1])
        if not layers:
            run.notes.append("no converted layers found (the converter names new nodes <conv>.dw / <conv>.pw)")
        return layers
    times = node_times[0] or {}
    return tuple(LayerRecord(c.name, c.op_type, c.params, c.macs, times.get(c.name) if node_times[0] is not None else None)
                 for c in run.costs[0].nodes)


def _pair_layers(
    original: onnx.ModelProto, converted: onnx.ModelProto, before: ModelRecord, after: ModelRecord
) -> tuple[LayerRecord, ...]:
    from convtool.runtime.profile import SLOWER_TOLERANCE, map_converted_layers

    cost_before = {c.name: c for c in before.nodes}
    cost_after = {c.name: c for c in after.nodes}
    folded = folded_batchnorms(original, converted)  # a layer's params include its folded BN (as convert's)
    layers = []
    for mapping in map_converted_layers(original, converted):
        b = cost_before[mapping.original]
        bn_params = sum(cost_before[n].params for n in folded.get(mapping.original, ()) if n in cost_before)
        parts = [cost_after[n] for n in mapping.replacements if n in cost_after]
        macs_after = None if any(p.macs is None for p in parts) else sum(p.macs or 0 for p in parts)
        t_before = t_after = None
        if before.node_latency_ms is not None and after.node_latency_ms is not None:
            t_before = before.node_latency_ms.get(mapping.original)
            seen = [after.node_latency_ms[n] for n in mapping.replacements if n in after.node_latency_ms]
            t_after = float(sum(seen)) if seen else None
        slower = None
        if t_before is not None and t_after is not None:
            slower = t_after > t_before * (1.0 + SLOWER_TOLERANCE)
        layers.append(
            LayerRecord(
                name=mapping.original,
                op_type=b.op_type,
                params=sum(p.params for p in parts),
                macs=macs_after,
                latency_ms=t_after,
                params_before=b.params + bn_params,
                macs_before=b.macs,
                latency_ms_before=t_before,
                replaced_by=mapping.replacements,
                slower=slower,
            )
        )
    return tuple(layers)


def _evaluate_gates(
    options: ReportOptions, models: Sequence[ModelRecord], comparison: Comparison | None
) -> tuple[GateResult, ...]:
    requested = options.requested_gates()
    if not requested:
        return ()
    assert comparison is not None  # checked up front
    values: dict[str, float | None] = {
        "min_speedup": comparison.speedup,
        "max_drift": None if comparison.drift is None else comparison.drift.drift,
        "min_top1_agreement": None if comparison.drift is None else comparison.drift.top1_agreement,
        "max_accuracy_drop": (
            None
            if models[0].accuracy is None or models[1].accuracy is None
            else models[0].accuracy - models[1].accuracy
        ),
        "min_param_reduction": comparison.param_reduction,
        "min_mac_reduction": comparison.mac_reduction,
    }
    results = []
    for name, threshold in requested.items():
        value = values[name]
        flag, direction = GATES[name]
        if value is None:
            why = {
                "min_top1_agreement": "no output looks like class scores [N, C]",
                "max_accuracy_drop": "accuracy needs --inputs with a 'labels' array",
            }.get(name, "the value could not be measured")
            raise OptionError(f"{flag}: {why}")
        ok = value >= threshold if direction == "min" else value <= threshold
        ok = ok and math.isfinite(value)
        results.append(GateResult(name=name, threshold=float(threshold), value=float(value), passed=bool(ok)))
    return tuple(results)
