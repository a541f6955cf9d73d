"""The conversion pipeline: load -> select -> factorise -> rewrite -> check -> record.

:func:`convert_model` is the library entry point: it takes an ``onnx.ModelProto`` and
returns a new one plus a :class:`~convtool.report.ConversionRecord`; the caller's model is
never modified.  :func:`convert_file` adds reading, atomic writing and path rules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from convtool.analysis.costs import NodeCost, model_params, node_costs
from convtool.analysis.shapes import copy_field
from convtool.errors import ConvToolError, ModelLoadError, OptionError
from convtool.graph.io import check_model, load_model, save_model
from convtool.graph.rewrite import Namer, replace_conv
from convtool.graph.select import ConvSite, Rejection, find_convs
from convtool.options import ConvertOptions
from convtool.plan import Decision, plan_site
from convtool.report import ConversionRecord, LayerChange, Totals
from convtool.tune import pipeline as tune_pipeline

log = logging.getLogger(__name__)

DATA_FREE_WARNING = (
    "data-free factorisation: on trained models low ranks can cost a lot of accuracy "
    "(rank 1 on every layer of a 100%-accurate digits CNN gave 10%, chance level); measure with "
    "'convtool report' and calibrate with --calibration"
)


@dataclass
class ConversionResult:
    model: onnx.ModelProto
    record: ConversionRecord
    decisions: list[Decision]


def _conv_params(site: ConvSite | Rejection) -> int:
    if isinstance(site, ConvSite):
        n = site.weight.size + (site.bias.size if site.bias is not None else 0)
        if site.batchnorm is not None:
            n += 4 * site.geometry.out_channels
        return int(n)
    geo = site.geometry
    if not geo.out_channels:
        return 0
    return int(geo.out_channels * (geo.in_channels // max(geo.group, 1)) * max(1, math.prod(geo.kernel)))


def _costs(model: onnx.ModelProto, options: ConvertOptions, warnings: list[str], what: str) -> list[NodeCost] | None:
    try:
        return node_costs(model, options.input_shape_map)
    except OptionError as exc:
        warnings.append(f"MACs of the {what} model unknown: {exc}")
        return None


_BIG_TENSOR_BYTES = 1 << 16


def _stand_ins(graph: gs.Graph) -> dict[str, onnx.TensorProto]:
    """Swap untouched large constants for data-free stand-ins before export.

    graphsurgeon's export copies every initializer twice (make_graph, then make_model); for a
    143M-parameter model that is most of the conversion time.  Untouched constants still hold
    the caller's TensorProto (``LazyValues``); we point them at a stand-in with the same
    name, type and dims and copy the real tensor in once, after export.  The caller's model
    is never modified: only our graph's reference is replaced.
    """
    originals: dict[str, onnx.TensorProto] = {}
    for tensor in graph.tensors().values():
        lazy = getattr(tensor, "_values", None)
        if not isinstance(tensor, gs.Constant) or not isinstance(lazy, gs.ir.tensor.LazyValues):
            continue
        proto = lazy.tensor
        if not isinstance(proto, onnx.TensorProto) or lazy.nbytes < _BIG_TENSOR_BYTES:
            continue
        stand_in = onnx.TensorProto(name=proto.name, data_type=proto.data_type, dims=list(proto.dims))
        originals[proto.name] = proto
        lazy.tensor = stand_in
    return originals


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping every model-level field of ``like`` (opset, IR version, metadata)."""
    originals = _stand_ins(graph)
    out = gs.export_onnx(graph, do_type_check=False)
    for init in out.graph.initializer:
        original = originals.get(init.name)
        if original is not None:
            init.CopyFrom(original)
    for desc, _ in out.ListFields():
        if desc.name != "graph":
            out.ClearField(desc.name)
    for desc, value in like.ListFields():
        if desc.name != "graph":
            copy_field(out, desc.name, value)
    if out.ir_version < 4:
        # IR < 4 requires every initializer to be listed as a graph input as well.
        listed = {i.name for i in out.graph.input}
        for init in out.graph.initializer:
            if init.name not in listed:
                out.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return out


def convert_model(model: onnx.ModelProto, options: ConvertOptions | None = None, source: str = "<memory>",
                  calibration_data: Mapping[str, np.ndarray] | None = None) -> ConversionResult:
    """Convert every qualifying Conv of ``model``; returns a new model and the record.

    ``calibration_data`` (one array per model input, samples on axis 0), or
    ``options.calibration.source``, turns on the least-squares refit (:mod:`convtool.calibrate`);
    ``options.max_drift`` chooses per-layer ranks under a drift budget
    (:mod:`convtool.calibrate.autorank`).
    """
    options = options or ConvertOptions()
    if options.max_drift is not None:
        from convtool.calibrate.autorank import convert_within_budget

        return convert_within_budget(model, options, source, calibration_data)
    calibration = None
    if options.calibration is not None or calibration_data is not None:
        from convtool.calibrate.pipeline import prepare

        options, calibration = prepare(model, options, calibration_data)  # validates before any work
    warnings: list[str] = []
    try:
        graph = gs.import_onnx(model)
    except Exception as exc:  # noqa: BLE001 - graphsurgeon raises many types on bad graphs
        raise ModelLoadError(f"{source}: cannot read the graph ({type(exc).__name__}: {exc})") from None

    sites = find_convs(model, graph, options)
    latency = tune_pipeline.start(model, options, warnings) if options.latency_aware is not None else None
    namer = Namer.for_graph(graph)
    layers: list[LayerChange] = []
    decisions: list[Decision] = []
    for site in sites:
        geo = site.geometry
        base = dict(name=site.name, kernel=list(geo.kernel), in_channels=geo.in_channels,
                    out_channels=geo.out_channels, group=geo.group, params_before=_conv_params(site))
        if isinstance(site, Rejection):
            layers.append(LayerChange(status="skipped", reason=site.reason, params_after=base["params_before"], **base))
            continue
        decision = plan_site(site, options)
        if isinstance(decision, str):
            layers.append(LayerChange(status="skipped", reason=decision, params_after=base["params_before"], **base))
            continue
        timing: dict = {}
        if latency is not None:  # --latency-aware: keep the layer unless a replacement is measurably faster
            choice = tune_pipeline.select(latency, site, decision, options)
            timing = tune_pipeline.layer_fields(choice)
            if choice.decision is None:
                layers.append(LayerChange(status="skipped", reason=choice.reason, params_after=base["params_before"],
                                          **base, **timing))
                continue
            decision = choice.decision
        new_nodes = replace_conv(graph, site, decision.factors, decision.bias, namer, layout=decision.layout)
        f = decision.factors
        params_after = f.first.size + f.second.size + (decision.bias.size if decision.bias is not None else 0)
        layers.append(LayerChange(
            status="converted", reason=None, rank=decision.rank, params_after=int(params_after),
            weight_error=decision.weight_error, layout=decision.layout,
            folded_batchnorm=(site.batchnorm.node.name or "BatchNormalization") if site.batchnorm else None,
            new_nodes=new_nodes, **base, **timing))
        decisions.append(decision)

    if decisions:
        graph.cleanup().toposort()
        new_model = _export(graph, model)
    else:
        new_model = onnx.ModelProto()
        new_model.CopyFrom(model)
    if options.check and decisions:
        check_model(new_model, "the converted model")

    latency_summary = None
    if latency is not None:
        new_model, latency_summary = tune_pipeline.confirm_model(latency, model, new_model, layers, options, warnings)
        decisions = [d for d in decisions if any(layer.converted and layer.name == d.site.name for layer in layers)]

    calibration_info = None
    if calibration is not None and decisions:  # sequential least-squares refit of the pointwise convs
        from convtool.calibrate.pipeline import calibrate_layers

        new_model, calibration_info = calibrate_layers(model, new_model, layers, calibration, options)
    macs_b, macs_a = _fill_macs(model, new_model, sites, layers, options, warnings)
    converted = sum(layer.converted for layer in layers)
    totals = Totals(
        conv_nodes=len(layers), converted=converted, skipped=len(layers) - converted,
        params_before=model_params(model), params_after=model_params(new_model),
        macs_before=macs_b, macs_after=macs_a,
    )
    if converted and options.rank.kind != "full" and calibration_info is None:
        warnings.append(DATA_FREE_WARNING)
    if not converted:
        warnings.append("no Conv qualified for conversion; the model is unchanged")
    record = ConversionRecord(source, None, layers, totals, options.rank.describe(), warnings,
                              calibration=calibration_info)
    record.latency = latency_summary
    return ConversionResult(new_model, record, decisions)


def _total(costs: list[NodeCost] | None) -> int | None:
    return None if costs is None else sum(c.macs for c in costs if c.macs is not None)


def _fill_macs(before: onnx.ModelProto, after: onnx.ModelProto, sites, layers: list[LayerChange],
               options: ConvertOptions, warnings: list[str]) -> tuple[int | None, int | None]:
    """Per-layer MACs from shape inference on both models; returns the whole-model totals."""
    costs_b = _costs(before, options, warnings, "original")
    costs_a = _costs(after, options, warnings, "converted") if costs_b is not None else None
    if costs_b is None:
        return None, None
    by_name_a = {c.name: c.macs for c in costs_a or []}
    for site, layer in zip(sites, layers):
        layer.macs_before = costs_b[site.index].macs
        if layer.converted:
            parts = [by_name_a.get(n) for n in layer.new_nodes]
            layer.macs_after = None if any(p is None for p in parts) else sum(parts)
        else:
            layer.macs_after = layer.macs_before
    return _total(costs_b), _total(costs_a)


def default_output(path: Path) -> Path:
    """``<stem>.dws.onnx`` beside the input."""
    return path.with_name(f"{path.stem}.dws.onnx")


def convert_file(input_path: str | Path, output_path: str | Path | None = None,
                 options: ConvertOptions | None = None, dry_run: bool = False) -> ConversionResult:
    """Load, convert and (unless ``dry_run``) atomically write; the record names both files."""
    src = Path(input_path)
    dst = Path(output_path) if output_path is not None else default_output(src)
    if not dry_run and dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise OptionError(f"refusing to overwrite the input model {src}; choose another -o")
    model = load_model(src)
    check_model(model, str(src), full=False)
    result = convert_model(model, options, source=str(src))
    if not dry_run:
        save_model(result.model, dst)
        result.record.output = str(dst)
    return result


__all__ = ["ConversionResult", "ConvToolError", "convert_file", "convert_model", "default_output"]
