"""Glue between :func:`convtool.api.convert_model` and the calibration package.

``prepare`` loads and validates the data before any conversion work (bad data fails fast),
and fills symbolic input dims from the data's shapes for the MAC counts; ``calibrate_layers``
runs the sequential refit on the converted model and writes each layer's output errors into
the record's :class:`~convtool.report.LayerChange` entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import onnx

from convtool.calibrate.config import CalibrationOptions
from convtool.calibrate.data import CalibrationData, load_calibration, model_inputs, validate


def calibration_options(options) -> CalibrationOptions:
    return options.calibration or CalibrationOptions()


def prepare(model: onnx.ModelProto, options, arrays: Mapping[str, np.ndarray] | CalibrationData | None):
    """``(options, data)``: the validated data (``None`` when none was asked for) and the options
    with data-derived input shapes for inputs whose non-batch dims are symbolic."""
    cal = calibration_options(options)
    if isinstance(arrays, CalibrationData):
        data = arrays
    elif arrays is not None:
        data = validate(arrays, model, "<arrays>", max_samples=cal.max_samples, seed=cal.seed)
    elif cal.source is not None:
        data = load_calibration(cal.source, model, cal.image, max_samples=cal.max_samples, seed=cal.seed)
    else:
        return options, None
    given = options.input_shape_map
    extra = []
    for spec in model_inputs(model):
        if spec.name in given or spec.dims is None:
            continue
        if any(d is None or d == 0 for d in spec.dims[1:]):
            extra.append((spec.name, (1, *data.arrays[spec.name].shape[1:])))
    if extra:
        options = replace(options, input_shapes=tuple(options.input_shapes) + tuple(extra))
    return options, data


def calibrate_layers(original: onnx.ModelProto, converted: onnx.ModelProto, layers: Sequence,
                     data: CalibrationData, options) -> tuple[onnx.ModelProto, dict]:
    """Refit the converted layers; fill ``output_error_before/after``; return (model, info)."""
    from convtool.calibrate.capture import calibrate_model, targets_from_layers

    outcome = calibrate_model(original, converted, targets_from_layers(layers), data, calibration_options(options))
    by_name = outcome.by_name()
    for layer in layers:
        refit = by_name.get(layer.name)
        if refit is not None and refit.result is not None:
            layer.output_error_before = refit.result.error_before
            layer.output_error_after = refit.result.error_after if refit.result.accepted else refit.result.error_before
    return outcome.model, outcome.info
