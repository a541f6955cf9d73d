"""The pure conversion step: ``convert(model, options, overrides) -> Conversion(model, record)``.

Select every Conv (:mod:`convtool.graph.select`: a site, or a rejection with its reason),
plan each site's rank and layout (:mod:`convtool.core.plan`, honouring the per-layer
``overrides`` a driver passes), rewrite the graph (:mod:`convtool.graph.emit`, one
``cleanup().toposort()`` at the end), export keeping the model's identity, check it, and count
parameters and MACs (from static shapes; where ONNX shape inference gives up, from shapes
observed in one onnxruntime run, :mod:`convtool.runtime.observe`).  No data, no timing, no
refit: the drivers in :mod:`convtool.search` call this step with their plans, never the other
way round.  The caller's model is never
modified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx

from convtool.analysis.costs import model_params
from convtool.core.plan import Decision, Override, plan_layer
from convtool.core.skip import Skip
from convtool.errors import OptionError
from convtool.graph.emit import Namer, replace_conv
from convtool.graph.export import copy_model, finish
from convtool.graph.io import check_model
from convtool.graph.select import ConvSite, Rejection, find_convs, import_graph
from convtool.options import ConvertOptions
from convtool.records import ConversionRecord, LayerChange, Totals
from convtool.runtime.observe import OBSERVED_NOTE, model_costs

__all__ = ["Conversion", "Planned", "convert", "plan"]


@dataclass
class Planned:
    """Every Conv of a model with its decision (or the reason it stays): the plan before surgery."""

    graph: object  # the graphsurgeon graph (convtool.graph owns every graphsurgeon call)
    sites: list[ConvSite | Rejection]
    decisions: dict[str, Decision | Skip]

    def candidates(self) -> list[tuple[ConvSite, Decision]]:
        """The sites that would be converted, with their decisions."""
        return [(s, d) for s in self.sites if isinstance(s, ConvSite)
                for d in [self.decisions[s.name]] if isinstance(d, Decision)]


@dataclass
class Conversion:
    model: onnx.ModelProto
    record: ConversionRecord
    sites: list[ConvSite | Rejection]  # in graph order, one per record layer
    decisions: dict[str, Decision] = field(default_factory=dict)  # the converted layers, by name


def plan(model: onnx.ModelProto, options: ConvertOptions, overrides: Mapping[str, Override] | None = None,
         source: str = "<memory>") -> Planned:
    """Select and plan every Conv of ``model`` without touching the graph."""
    graph = import_graph(model, source)
    sites = find_convs(model, graph, options.select_rules)
    overrides = overrides or {}
    decisions = {s.name: plan_layer(s.layer, options.rank, options.layout, overrides.get(s.name))
                 for s in sites if isinstance(s, ConvSite)}
    return Planned(graph, sites, decisions)


def _rejected_params(site: Rejection) -> int:
    geo = site.geometry
    if not geo.out_channels:
        return 0
    return int(geo.out_channels * (geo.in_channels // max(geo.group, 1)) * geo.kernel_size)


def _layer(site: ConvSite | Rejection, decision: Decision | Skip | None) -> LayerChange:
    geo = site.geometry
    before = site.layer.params if isinstance(site, ConvSite) else _rejected_params(site)
    base = dict(name=site.name, kernel=list(geo.kernel), in_channels=geo.in_channels, out_channels=geo.out_channels,
                group=geo.group, params_before=before)
    if isinstance(site, Rejection):
        return LayerChange(status="skipped", reason=site.reason, params_after=before, **base)
    if not isinstance(decision, Decision):
        return LayerChange(status="skipped", reason=decision.reason if decision is not None else None,
                           params_after=before, **base)
    bn = site.layer.batchnorm
    return LayerChange(status="converted", reason=None, rank=decision.rank, params_after=decision.params_after,
                       weight_error=decision.weight_error, layout=decision.layout, note=decision.note,
                       folded_batchnorm=bn.name if bn is not None else None, **base)


def convert(model: onnx.ModelProto, options: ConvertOptions | None = None,
            overrides: Mapping[str, Override] | None = None, *, source: str = "<memory>",
            count_macs: bool = True) -> Conversion:
    """Convert every qualifying Conv of ``model`` as planned; a new model and its record.

    ``overrides``: per-layer rank/layout from a driver (rank 0 leaves a layer as it is).
    ``count_macs=False`` skips the MAC counts (drivers evaluating many trials).
    """
    options = options or ConvertOptions()
    planned = plan(model, options, overrides, source)
    graph = planned.graph
    namer = Namer.for_graph(graph)
    layers: list[LayerChange] = []
    converted = 0
    for site in planned.sites:
        decision = planned.decisions.get(site.name) if isinstance(site, ConvSite) else None
        layer = _layer(site, decision)
        if isinstance(site, ConvSite) and isinstance(decision, Decision):
            layer.new_nodes = replace_conv(graph, site.node, site.batchnorm_node, decision, namer)
            converted += 1
        layers.append(layer)
    if converted:
        new_model = finish(graph, model)
        if options.check:
            check_model(new_model, "the converted model")
    else:
        new_model = copy_model(model)
    totals = Totals(conv_nodes=len(layers), converted=converted, skipped=len(layers) - converted,
                    params_before=model_params(model), params_after=model_params(new_model),
                    macs_before=None, macs_after=None, macs_unknown_reason="not counted")
    warnings: list[str] = []
    if count_macs:
        warnings += fill_macs(model, new_model, planned.sites, layers, options.input_shape_map, totals)
    record = ConversionRecord(source, None, layers, totals, options.rank.describe(), warnings)
    decisions = {name: d for name, d in planned.decisions.items() if isinstance(d, Decision)}
    return Conversion(new_model, record, planned.sites, decisions)


def fill_macs(before: onnx.ModelProto, after: onnx.ModelProto, sites, layers: list[LayerChange],
              input_shapes: Mapping[str, tuple[int, ...]], totals: Totals) -> list[str]:
    """Per-layer MACs of both models and the whole-model MACs in ``totals`` (counts, why they
    are unknown, where the shapes came from), in place; returns the warnings to show.

    Shapes: :func:`convtool.runtime.observe.model_costs` (static inference; one onnxruntime run
    per model only when it gives up).  Unknown stays ``None`` with its reason, never 0.
    """
    try:
        costs_b = model_costs(before, input_shapes)
        unchanged = after is before or not any(layer.converted for layer in layers)  # after: a copy
        costs_a = costs_b if unchanged else model_costs(after, input_shapes)
    except OptionError as exc:
        totals.macs_before = totals.macs_after = totals.macs_shapes = None
        totals.macs_unknown_reason = str(exc)
        return [f"MACs unknown: {exc}"]
    by_name_a = {c.name: c.macs for c in costs_a.nodes}
    for site, layer in zip(sites, layers):
        layer.macs_before = costs_b.nodes[site.index].macs
        if layer.converted:
            parts = [by_name_a.get(n) for n in layer.new_nodes]
            layer.macs_after = None if any(p is None for p in parts) else int(sum(parts))  # type: ignore[arg-type]
        else:
            layer.macs_after = layer.macs_before
    totals.macs_before, totals.macs_after = costs_b.macs, costs_a.macs
    totals.macs_unknown_reason = costs_b.reason or (
        None if costs_a.reason is None else f"converted model: {costs_a.reason}")
    totals.macs_shapes = "observed" if "observed" in (costs_b.shapes, costs_a.shapes) else "inferred"
    warnings = []
    if totals.macs_shapes == "observed":
        warnings.append(OBSERVED_NOTE)
    if totals.macs_unknown_reason is not None:
        warnings.append(f"MACs unknown: {totals.macs_unknown_reason}")
    return warnings


