"""Orchestration: the one place that runs the drivers in order and assembles the record.

``convert_model(model, options)``:

1. prepare the calibration data once (validated before any work; symbolic input dims filled
   from the data's shapes for the MAC counts);
2. ``--max-drift``: the drift-budget search (:mod:`convtool.search.budget`) -> a plan; under
   ``--objective latency`` (the default) it times layers and the whole model itself;
3. ``--latency-aware`` (unless the search timed): time the planned layers
   (:mod:`convtool.search.latency`) -> a plan;
4. the pure conversion step with that plan (:func:`convtool.convert.convert`);
5. ``--latency-aware``: the end-to-end check; a slower model is not handed out;
6. calibration: the sequential refit (:mod:`convtool.search.calibrate`);
   then ``--finetune``: distillation of the original into the converted model
   (:mod:`convtool.search.finetune`; kept only if the held-out drift drops);
   then ``--quantize int8``: cross-layer equalization of the converted pairs
   (:mod:`convtool.graph.equalize`) and onnxruntime's static INT8 quantization
   (:mod:`convtool.runtime.quantize`) on the calibration data's fit part, its drift against
   the original measured on the held-out part;
7. MACs, warnings and the drivers' summaries go into the record.

Each driver calls the pure step (or plans) and returns a summary; nothing calls back up.
The caller's model is never modified.  :func:`convert_file` adds reading, path rules and the
atomic write.  ``progress(stage, done, total)`` reports long steps; the library never prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from convtool.analysis.costs import model_params
from convtool.convert import convert, fill_macs, plan
from convtool.core.plan import Override
from convtool.errors import CalibrationDataError, ConvToolError, OptionError
from convtool.graph.export import copy_model
from convtool.graph.io import check_model, load_model, save_model
from convtool.options import ConvertOptions, SweepOptions
from convtool.records import ConversionRecord
from convtool.runtime.inputs import Dataset, fixed_batch, input_shapes_from_data, load, shared_samples, validate

if TYPE_CHECKING:  # pragma: no cover
    from convtool.search.sweep import SweepResult

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)``; stage is a short label such as ``"refit"``.
Progress = Callable[[str, int, int], None]

DATA_FREE_WARNING = (
    "data-free factorisation: on trained models low ranks can cost a lot of accuracy "
    "(rank 1 on every layer of a 100%-accurate digits CNN gave 10%, chance level); measure with "
    "'convtool report' and calibrate with --calibration"
)


@dataclass
class ConversionResult:
    model: onnx.ModelProto
    record: ConversionRecord
    #: with calibration data: the samples no fit used (the search's held-out part, else the
    #: refit's), for measuring the result (``convert --report``); ``None`` without data
    held_out: Dataset | None = None


def held_out_samples(model: onnx.ModelProto, data: Dataset, fit_data: Dataset | None,
                     options: ConvertOptions) -> Dataset | None:
    """The calibration samples no fit saw: with a ``--max-drift`` search, its held-out split
    (every refit and fine-tune used the rest); else the refit's held-out split (used only to
    choose each layer's fit: its regulariser and whether to keep it).  Named in ``source``."""

    cal = options.calibration_or_default
    searched = fit_data is not None and fit_data is not data
    _, held = data.split(cal.holdout, cal.seed + 1 if searched else cal.seed, fixed_batch(model) or 1)
    if held is None:
        return None
    why = "held out from every fit" if searched else "held out by the refit, which used them only to choose each fit"
    return replace(held, source=f"{data.source} ({why})")


def prepare_data(model: onnx.ModelProto, options: ConvertOptions,
                 arrays: Mapping[str, np.ndarray] | Dataset | None) -> tuple[ConvertOptions, Dataset | None]:
    """``(options, data)``: the validated calibration data (``None`` when none was asked for)
    and the options with every input's shape filled from the data where the user gave none
    (:func:`convtool.runtime.inputs.input_shapes_from_data`)."""
    cal = options.calibration_or_default
    if isinstance(arrays, Dataset):
        data = arrays
    elif arrays is not None:
        data = validate(arrays, model, "<arrays>", max_samples=cal.max_samples, seed=cal.seed)
    elif options.calibration is not None and cal.source is not None:
        data = load(cal.source, model, cal.image, max_samples=cal.max_samples, seed=cal.seed)
    else:
        return options, None
    given = options.input_shape_map
    extra = [(k, v) for k, v in input_shapes_from_data(model, data, given).items() if k not in given]
    if extra:
        options = replace(options, input_shapes=tuple(options.input_shapes) + tuple(extra))
    return options, data


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def convert_model(model: onnx.ModelProto, options: ConvertOptions | None = None, source: str = "<memory>",
                  calibration_data: Mapping[str, np.ndarray] | Dataset | None = None,
                  progress: Progress | None = None) -> ConversionResult:
    """Convert every qualifying Conv of ``model``; returns a new model and the record.

    ``calibration_data`` (one array per model input, samples on axis 0), or
    ``options.calibration.source``, turns on the least-squares refit; ``options.max_drift``
    chooses per-layer ranks under a drift budget; ``options.latency_aware`` keeps only
    replacements measured to be faster.
    """
    run = _Run.start(model, options or ConvertOptions(), source, calibration_data, progress)
    for step in (_search, _tune, _convert, _confirm_latency, _refit, _finetune, _quantize_step, _count):
        step(run)
    return run.result()


@dataclass
class _Run:
    """One ``convert_model`` call: its inputs, and what the steps so far made of them."""

    model: onnx.ModelProto
    options: ConvertOptions
    source: str
    progress: Progress | None
    data: Dataset | None
    fit_data: Dataset | None
    warnings: list[str]
    overrides: dict[str, Override] = field(default_factory=dict)
    search: Any = None  # convtool.search.budget.SearchResult
    tuning: Any = None  # convtool.search.latency.Tuning
    conversion: Any = None  # convtool.convert.Conversion
    new_model: onnx.ModelProto | None = None

    @classmethod
    def start(cls, model: onnx.ModelProto, options: ConvertOptions, source: str,
              calibration_data: Mapping[str, np.ndarray] | Dataset | None, progress: Progress | None) -> _Run:
        """Validate the data and every request before any work."""
        options, data = prepare_data(model, options, calibration_data)  # bad data fails before any work
        if options.finetune is not None:  # --finetune: no data or no torch fails before any work
            from convtool.search.finetune import check_ready

            check_ready(data)
        if options.quantize is not None and data is None:
            raise OptionError("--quantize int8 needs calibration data (--calibration): the activation ranges are "
                              "calibrated on it")
        warnings = list(data.notes) if data is not None else []  # e.g. float64 cast to float32
        return cls(model, options, source, progress, data, data, warnings)

    @property
    def record(self) -> ConversionRecord:
        return self.conversion.record

    @property
    def searched_model(self) -> bool:
        """The search's final model is the one to ship (it measured it; no later tuning changed the plan)."""
        return self.search is not None and self.search.model is not None and self.tuning is None

    def result(self) -> ConversionResult:
        data = self.data
        held = held_out_samples(self.model, data, self.fit_data, self.options) \
            if data is not None and not data.random else None
        assert self.new_model is not None
        return ConversionResult(self.new_model, self.record, held)


def _search(run: _Run) -> None:
    """``--max-drift``: the drift-budget search chooses the plan (and times it under ``--objective latency``)."""
    if run.options.max_drift is None:
        return
    from convtool.search.budget import search as budget_search

    run.search = budget_search(run.model, run.options, run.data, source=run.source, progress=run.progress)
    run.overrides, run.fit_data = dict(run.search.overrides), run.search.fit_data
    run.warnings += run.search.warnings


def _tune(run: _Run) -> None:
    """``--latency-aware`` (unless a search under ``--objective latency`` timed every layer already)."""
    if run.options.latency_aware is None or (run.search is not None and run.search.timed):
        return
    from convtool.search import latency

    run.tuning = latency.tune(run.model, run.options, plan(run.model, run.options, run.overrides, run.source),
                              run.overrides, progress=_stage(run.progress, "timing layers"))
    run.overrides = run.tuning.overrides
    run.warnings += run.tuning.warnings


def _convert(run: _Run) -> None:
    """The pure conversion step with the plan; the search's summary applies itself to the record."""
    run.conversion = convert(run.model, run.options, run.overrides, source=run.source, count_macs=False)
    run.new_model, record = run.conversion.model, run.conversion.record
    search = run.search
    record.search = search.summary if search is not None else None
    if search is not None:
        search.apply(record.layers)
        record.latency = search.latency
        budget = search.summary
        record.rank_policy = (f"max drift {budget.max_drift:g} ({budget.metric}), "
                              f"ranks {'/'.join(str(r) for r in run.options.search_ranks)}, "
                              f"objective {budget.objective}")


def _confirm_latency(run: _Run) -> None:
    """``--latency-aware``: the layers' choices, then the end-to-end check; a slower model is not handed out."""
    if run.tuning is None:
        return
    from convtool.search import latency

    lat, record = run.options.latency_aware, run.record
    assert lat is not None
    latency.apply_choices(record.layers, run.tuning.choices)
    verdict, reverted = None, False
    if lat.confirm and record.totals.converted and run.options.quantize is None:  # INT8: checked after quantizing
        verdict = latency.confirm(run.model, run.new_model, lat, run.options.input_shape_map,
                                  progress=_stage(run.progress, "timing models"))
        if not verdict.convert:  # slower, or not resolved: the safe choice is the original
            reverted = True
            reason = (f"whole model {verdict.speedup:.2f}x ({verdict.ci_low:.2f}-{verdict.ci_high:.2f}x) with the "
                      f"converted layers ({verdict.original_ms:.3g} -> {verdict.replacement_ms:.3g} ms, measured "
                      "end to end) is not faster beyond noise; kept the original")
            _revert(record, reason)
            run.warnings.append(f"--latency-aware: {reason}")
            run.new_model = copy_model(run.model)
    record.latency = latency.summary(run.tuning, lat, verdict, reverted)


def _refit(run: _Run) -> None:
    """Calibration: the search's measured model as it is, else the sequential refit."""
    record, search = run.record, run.search
    if not record.totals.converted:
        return
    if run.searched_model:
        # the search's final model: the one whose held-out drift it measured (same plan, same weights)
        run.new_model = copy_model(search.model)
        record.calibration = search.calibration
        _copy_layer_errors(record)
    elif run.fit_data is not None:
        from convtool.search.calibrate import refit_layers

        cal_options = run.options.calibration_or_default
        if search is not None and search.factors in ("data-aware", "pointwise"):
            cal_options = replace(cal_options, factors=search.factors)  # the refit the search measured
        run.new_model, record.calibration = refit_layers(
            run.model, run.new_model, record.layers, run.fit_data, cal_options,
            search.cache if search is not None else None, progress=_stage(run.progress, "refitting layers"),
            decisions=run.conversion.decisions)
        _copy_layer_errors(record)


def _finetune(run: _Run) -> None:
    """``--finetune``: distil the original model into the converted one (:mod:`convtool.search.finetune`)."""
    record, search, options = run.record, run.search, run.options
    if run.searched_model and search.finetune is not None:
        from convtool.search import finetune as ft  # the search fine-tuned its plans already

        record.finetune = ft.with_search_note(search.finetune)
        if not search.finetune.kept:
            run.warnings.append(f"--finetune: {search.finetune.decision}")
    elif options.finetune is not None and run.data is not None and record.totals.converted:
        from convtool.search import finetune as ft

        train, held = ft.split(run.data, run.fit_data, options.calibration_or_default)
        tuned = ft.finetune(run.model, run.new_model, record.layers, train, held, options.finetune,
                            batch_size=options.calibration_or_default.batch_size,
                            progress=ft.stage_progress(run.progress))
        run.new_model, record.finetune = tuned.model, tuned.summary
        if search is not None:
            record.finetune = ft.with_search_note(tuned.summary)
        if not tuned.summary.kept:
            run.warnings.append(f"--finetune: {tuned.summary.decision}")


def _quantize_step(run: _Run) -> None:
    """``--quantize int8``: the search's quantized model, else equalize + quantize here."""
    record, search = run.record, run.search
    if search is not None and search.quantization is not None and run.tuning is None:
        # the search quantized, measured and timed its model against the INT8 original itself (when
        # it kept the original layers its plan converts nothing, and the record says so already)
        run.new_model, record.quantization = copy_model(search.model), search.quantization
    elif run.options.quantize is not None and run.data is not None:
        run.new_model, record.quantization = _quantize(run.model, run.new_model, record, run.data, run.options)
        lat = run.options.latency_aware
        if run.tuning is not None and lat is not None and lat.confirm and record.totals.converted:
            run.new_model = _never_slower_int8(run.model, run.new_model, record, run.data, run.options,
                                               run.warnings, run.progress)


def _count(run: _Run) -> None:
    """Parameters and MACs of the final model, and the closing warnings, into the record."""
    record, totals = run.record, run.record.totals
    totals.params_after = model_params(run.new_model)
    run.warnings += fill_macs(run.model, run.new_model, run.conversion.sites, record.layers,
                              run.options.input_shape_map, totals)
    if totals.converted and run.options.rank.kind != "full" and record.calibration is None:
        run.warnings.append(DATA_FREE_WARNING)
    if not totals.converted and run.search is None:
        run.warnings.append("no Conv qualified for conversion; the model is unchanged")
    record.warnings = list(record.warnings) + run.warnings


def _copy_layer_errors(record) -> None:
    """Each refitted layer's output errors from the calibration summary into its record entry."""
    if record.calibration is None:
        return
    by_name = {r.name: r for r in record.calibration.layers}
    for layer in record.layers:
        r = by_name.get(layer.name)
        if r is not None and r.output_error_before is not None:
            layer.output_error_before = r.output_error_before
            layer.output_error_after = r.output_error_after if r.refitted else r.output_error_before


def _quantize(original: onnx.ModelProto, converted: onnx.ModelProto, record: ConversionRecord, data: Dataset,
              options: ConvertOptions):
    """``--quantize int8``: equalize, quantize on the fit part, measure drift on the held-out part."""
    from convtool.graph.equalize import equalize_model
    from convtool.runtime.quantize import quantize_model

    q = options.quantize
    assert q is not None
    fit, held = _int8_split(original, data, options)
    pairs: list = []
    if q.equalize and record.totals.converted:
        converted, pairs = equalize_model(converted, record.layers)
    quantized = quantize_model(converted, fit, q)
    return quantized.model, _with_drift(quantized.summary, original, quantized.model, held, options, pairs)


def _int8_split(original: onnx.ModelProto, data: Dataset, options: ConvertOptions) -> tuple[Dataset, Dataset | None]:
    """(fit, held-out): the refit's split - INT8 calibrates on the first, its drift is measured on the second."""
    cal = options.calibration_or_default
    return data.split(cal.holdout, cal.seed, fixed_batch(original) or 1)


def _with_drift(summary, original: onnx.ModelProto, quantized: onnx.ModelProto, held: Dataset | None,
                options: ConvertOptions, pairs=()):
    """``summary`` with the quantized model's drift against the float original on ``held``."""
    from convtool.analysis.drift import compare_outputs
    from convtool.runtime.run import run_outputs

    if held is None:
        return replace(summary, equalized=tuple(pairs), drift=None, drift_samples=0)
    batch = options.calibration_or_default.batch_size
    drift = compare_outputs(run_outputs(original, held, batch), run_outputs(quantized, held, batch)).drift
    return replace(summary, equalized=tuple(pairs), drift=drift, drift_samples=held.count)


def _revert(record: ConversionRecord, reason: str) -> None:
    """Every converted layer of ``record`` back to skipped, with ``reason``."""
    for layer in record.layers:
        if layer.converted:
            layer.skip(reason)
    record.totals.converted, record.totals.skipped = 0, len(record.layers)


def _never_slower_int8(original: onnx.ModelProto, quantized: onnx.ModelProto, record: ConversionRecord,
                       data: Dataset, options: ConvertOptions, warnings: list[str],
                       progress: Progress | None) -> onnx.ModelProto:
    """``--latency-aware --quantize int8``: the quantized conversion against the INT8-quantized
    original (what the user would otherwise ship); not faster beyond noise -> the latter."""
    from convtool.runtime.quantize import quantize_model
    from convtool.search import latency

    q = options.quantize
    lat = options.latency_aware
    assert q is not None and lat is not None
    fit, held = _int8_split(original, data, options)
    baseline = quantize_model(original, fit, q)
    verdict = latency.confirm(baseline.model, quantized, lat, options.input_shape_map,
                              progress=_stage(progress, "timing INT8 models"))
    if record.latency is not None:
        record.latency = replace(record.latency, end_to_end=latency.end_to_end(verdict))
    if verdict.convert:
        return quantized
    reason = (f"the quantized converted model is {verdict.speedup:.2f}x ({verdict.ci_low:.2f}-{verdict.ci_high:.2f}x) "
              "the INT8-quantized original, not faster beyond noise; kept the original layers (quantized)")
    _revert(record, reason)
    if record.latency is not None:
        record.latency = replace(record.latency, reverted=True)
    record.quantization = _with_drift(baseline.summary, original, baseline.model, held, options)
    warnings.append(f"--latency-aware --quantize int8: {reason}")
    return baseline.model


def default_output(path: Path) -> Path:
    """``<stem>.dws.onnx`` beside the input."""
    return path.with_name(f"{path.stem}.dws.onnx")


def convert_file(input_path: str | Path, output_path: str | Path | None = None,
                 options: ConvertOptions | None = None, dry_run: bool = False,
                 progress: Progress | None = None) -> ConversionResult:
    """Load, convert and (unless ``dry_run``) atomically write; the record names both files."""
    src = Path(input_path)
    dst = Path(output_path) if output_path is not None else default_output(src)
    if not dry_run and dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise OptionError(f"refusing to overwrite the input model {src}; choose another -o")
    model = load_model(src)
    check_model(model, str(src), full=False)
    result = convert_model(model, options, source=str(src), progress=progress)
    if not dry_run:
        save_model(result.model, dst)
        result.record.output = str(dst)
    return result


def sweep_model(model: onnx.ModelProto, options: ConvertOptions, sweep_options: SweepOptions,
                calibration_data: Mapping[str, np.ndarray] | Dataset | None = None,
                eval_data: Mapping[str, np.ndarray] | Dataset | None = None, source: str = "<memory>",
                progress: Progress | None = None) -> SweepResult:
    """The trade-off curve (:mod:`convtool.search.sweep`): one search over the calibration data,
    one selection per budget, every point measured on ``eval_data`` (which no fit saw)."""
    from convtool.search.sweep import sweep

    options, data = prepare_data(model, options, calibration_data)
    if options.finetune is not None:
        from convtool.search.finetune import check_ready

        check_ready(data)  # torch and data, before any work
    if eval_data is None:
        raise OptionError("a sweep needs evaluation data that the search does not see (--inputs eval.npz)")
    evaluation = eval_data if isinstance(eval_data, Dataset) else validate(eval_data, model, "<arrays>",
                                                                           what="evaluation data")
    shared = shared_samples(data, evaluation) if data is not None else 0
    if shared == evaluation.count:
        raise CalibrationDataError(
            f"the evaluation data {evaluation.source} is the calibration data: all {evaluation.count} of its samples are "
            "calibration samples the search fits and measures on; pass samples it never sees")
    result = sweep(model, options, data, evaluation, sweep_options, source=source, progress=progress)
    notes = [*(data.notes if data is not None else ()), *evaluation.notes]
    if shared:
        notes.append(f"{shared} of the {evaluation.count} evaluation samples are also calibration samples: the "
                     "evaluation is not entirely on data the search never saw")
    result.record.warnings = [*notes, *result.record.warnings]
    return result


def sweep_file(input_path: str | Path, out_dir: str | Path, eval_path: str | Path, options: ConvertOptions,
               sweep_options: SweepOptions, progress: Progress | None = None) -> SweepResult:
    """Load, sweep and (``save_models``) write each point's model into ``out_dir`` as
    ``<stem>.drift-<budget>.onnx``; the record names the files."""
    src, out = Path(input_path), Path(out_dir)
    model = load_model(src)
    check_model(model, str(src), full=False)
    cal = options.calibration_or_default
    evaluation = load(eval_path, model, cal.image, what="evaluation data")
    result = sweep_model(model, options, sweep_options, eval_data=evaluation, source=str(src), progress=progress)
    if sweep_options.save_models:
        out.mkdir(parents=True, exist_ok=True)
        points = []
        for point, m in zip(result.record.points, result.models):
            path = out / f"{src.stem}.drift-{point.budget:g}.onnx"
            save_model(m, path)
            points.append(replace(point, model=str(path)))
        result.record.points = points
    return result


__all__ = ["ConversionResult", "ConvToolError", "convert_file", "convert_model", "default_output", "held_out_samples",
           "prepare_data",
           "sweep_file", "sweep_model"]
