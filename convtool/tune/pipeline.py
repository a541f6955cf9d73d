"""The glue between :func:`convtool.api.convert_model` and the latency tuner.

Kept here so that the pipeline in ``api.py`` reads as three calls: :func:`start` before the
layer loop, :func:`select` per layer, :func:`confirm_model` after the rewrite.

The end-to-end guard: after conversion the whole original and converted models are timed
interleaved (A/B) with the same session options.  When the converted model is slower beyond
noise (the paired 95 % interval of its speedup lies entirely below 1), the conversion is
undone - the caller gets the original model back, every layer is reported as skipped with
the measured reason, and a warning says so - so ``--latency-aware`` never hands out a model
measurably slower than its input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import onnx

from convtool.graph.select import ConvSite
from convtool.options import ConvertOptions
from convtool.plan import Decision
from convtool.report import LayerChange
from convtool.tune.decide import Verdict
from convtool.tune.tuner import LayerChoice, LayerTuner, confirm, conv_input_shapes

__all__ = ["LatencySession", "start", "select", "confirm_model", "layer_fields"]

log = logging.getLogger(__name__)


@dataclass
class LatencySession:
    tuner: LayerTuner
    shapes: dict[str, tuple[int, ...]]
    choices: dict[str, LayerChoice] = field(default_factory=dict)


def start(model: onnx.ModelProto, options: ConvertOptions, warnings: list[str]) -> LatencySession | None:
    """A tuner for this model, or ``None`` when ``--latency-aware`` is off."""
    if options.latency_aware is None:
        return None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    try:
        shapes = conv_input_shapes(model, options.input_shape_map)
    except Exception as exc:  # noqa: BLE001 - an OptionError from shape inference, said once
        warnings.append(f"--latency-aware: input shapes unknown ({exc}); no layer can be measured")
        shapes = {}
    return LatencySession(LayerTuner(options.latency_aware, opset, progress=lambda m: log.info("%s", m)), shapes)


def select(session: LatencySession, site: ConvSite, decision: Decision, options: ConvertOptions) -> LayerChoice:
    """Measure ``site``'s candidate replacements; the choice's ``decision`` is ``None`` to keep it."""
    x_shape = session.shapes.get(site.node.inputs[0].name)
    choice = session.tuner.evaluate(site, decision, options, x_shape)
    session.choices[site.name] = choice
    return choice


def layer_fields(choice: LayerChoice | None) -> dict[str, Any]:
    """The :class:`~convtool.report.LayerChange` latency fields for one layer."""
    if choice is None:
        return {}
    best = choice.best
    fields: dict[str, Any] = {"latency_decision": choice.reason}
    if best is not None:
        fields.update(latency_original_ms=best.verdict.original_ms, latency_replacement_ms=best.verdict.replacement_ms,
                      latency_speedup=best.verdict.speedup,
                      latency_candidates=[{"layout": c.layout, "rank": c.rank, "original_ms": c.verdict.original_ms,
                                           "replacement_ms": c.verdict.replacement_ms, "speedup": c.verdict.speedup,
                                           "ci_low": c.verdict.ci_low, "ci_high": c.verdict.ci_high,
                                           "runs": c.verdict.runs, "cached": c.cached}
                                          for c in choice.candidates])
    return fields


def _summary(session: LatencySession, options: ConvertOptions, v: Verdict | None, reverted: bool) -> dict[str, Any]:
    lat = options.latency_aware
    assert lat is not None
    tuner = session.tuner
    out: dict[str, Any] = {
        "threads": lat.threads, "opt_level": lat.opt_level, "allow_spinning": False,
        "onnxruntime": tuner.ort_version, "cpu": tuner.cpu, "margin": lat.margin,
        "layers_measured": tuner.measured, "cache_hits": tuner.cache.hits,
        "cache_dir": str(tuner.cache.root) if tuner.cache.enabled else None,
        "end_to_end": None, "reverted": reverted,
    }
    if v is not None:
        out["end_to_end"] = {"original_ms": v.original_ms, "converted_ms": v.replacement_ms, "speedup": v.speedup,
                             "ci_low": v.ci_low, "ci_high": v.ci_high, "runs": v.runs}
    return out


def confirm_model(session: LatencySession, original: onnx.ModelProto, converted: onnx.ModelProto,
                  layers: list[LayerChange], options: ConvertOptions, warnings: list[str],
                  ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Time the whole models (when asked and something changed); undo a conversion that is slower.

    Returns the model to hand out and the record's ``latency`` summary; ``layers`` is updated
    in place when the conversion is undone.
    """
    lat = options.latency_aware
    assert lat is not None
    if not lat.confirm or not any(layer.converted for layer in layers):
        return converted, _summary(session, options, None, False)
    v = confirm(original, converted, lat, options.input_shape_map)
    if v.ci_high < 1.0:
        reason = (f"whole model {1 / v.speedup:.2f}x slower with the converted layers "
                  f"({v.original_ms:.3g} -> {v.replacement_ms:.3g} ms, measured end to end); kept the original")
        for layer in layers:
            if layer.converted:
                layer.status, layer.reason = "skipped", reason
                layer.params_after, layer.new_nodes, layer.rank, layer.layout = layer.params_before, [], None, None
                layer.weight_error = None
        warnings.append(f"--latency-aware: {reason}")
        kept = onnx.ModelProto()
        kept.CopyFrom(original)
        return kept, _summary(session, options, v, True)
    return converted, _summary(session, options, v, False)
