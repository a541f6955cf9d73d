"""One-layer models and their interleaved timing.

For a candidate Conv at its real input shape (from shape inference on the whole model) this
builds two tiny models - the original Conv alone (with a following BatchNormalization already
folded in, as onnxruntime itself fuses it) and its replacement emitted by the same code path as
the real conversion (:func:`convtool.graph.rewrite.replace_conv`) - and times them interleaved
in one process with :func:`convtool.bench.latency.time_models` (ABBA order, spinning off, the
user's threads and optimisation level).

Run count: a few warm-up runs estimate the pair's cost, then ``budget_ms`` of timed runs,
clamped to ``[min_runs, max_runs]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from convtool.bench.latency import SessionConfig, make_session, time_models
from convtool.graph.rewrite import Namer, replace_conv
from convtool.graph.select import ConvSite, Geometry
from convtool.plan import Decision

__all__ = ["ConvShape", "conv_shape", "original_model", "replacement_model", "time_pair"]


@dataclass(frozen=True)
class ConvShape:
    """Everything about a Conv that its latency depends on (weight values aside)."""

    x_shape: tuple[int, ...]
    dtype: str
    kernel: tuple[int, ...]
    in_channels: int
    out_channels: int
    group: int
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    auto_pad: str
    bias: bool

    def attrs(self) -> dict:
        out: dict = {"kernel_shape": list(self.kernel), "group": self.group, "strides": list(self.strides),
                     "dilations": list(self.dilations)}
        if self.auto_pad not in ("", "NOTSET"):
            out["auto_pad"] = self.auto_pad
        else:
            out["pads"] = list(self.pads)
        return out


def conv_shape(site: ConvSite, x_shape: tuple[int, ...], bias: bool) -> ConvShape:
    attrs = site.node.attrs
    geo = site.geometry
    d = len(geo.kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    return ConvShape(
        x_shape=tuple(int(v) for v in x_shape),
        dtype=str(np.dtype(site.weight.dtype)),
        kernel=tuple(int(k) for k in geo.kernel),
        in_channels=geo.in_channels,
        out_channels=geo.out_channels,
        group=geo.group,
        strides=tuple(int(s) for s in attrs.get("strides", [1] * d)),
        pads=tuple(int(p) for p in attrs.get("pads", [0] * (2 * d))),
        dilations=tuple(int(v) for v in attrs.get("dilations", [1] * d)),
        auto_pad=str(auto_pad),
        bias=bias,
    )


def original_model(shape: ConvShape, weight: np.ndarray, bias: np.ndarray | None, opset: int) -> onnx.ModelProto:
    """The Conv alone, on an input of ``shape.x_shape``."""
    dtype = np.dtype(shape.dtype)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    inits = [numpy_helper.from_array(np.ascontiguousarray(weight.astype(dtype)), "w")]
    inputs = ["x", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(bias.astype(dtype)), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", **shape.attrs())
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", elem, list(shape.x_shape))],
                              [helper.make_tensor_value_info("y", elem, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 11))], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model)  # a valid model: the output gets its shape
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    return model


def replacement_model(shape: ConvShape, decision: Decision, opset: int) -> onnx.ModelProto:
    """``decision``'s replacement of the Conv, emitted exactly as the conversion emits it."""
    base = original_model(shape, decision.weight, decision.bias, opset)
    graph = gs.import_onnx(base)
    node = graph.nodes[0]
    geo = Geometry(list(shape.kernel), shape.in_channels, shape.out_channels, shape.group)
    site = ConvSite(node, "conv", decision.weight, decision.bias, geo, 0)
    replace_conv(graph, site, decision.factors, decision.bias, Namer.for_graph(graph), layout=decision.layout)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = base.ir_version
    return out


def _feeds(shape: ConvShape, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(shape.x_shape).astype(np.dtype(shape.dtype))}


def time_pair(original: onnx.ModelProto, replacement: onnx.ModelProto, shape: ConvShape, config: SessionConfig, *,
              budget_ms: float, min_runs: int, max_runs: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """Paired timed runs (ms) of both models, interleaved ABBA; run ``i`` of each is a pair."""
    sessions = [make_session(original, config), make_session(replacement, config)]
    feeds = _feeds(shape)
    probe = time_models(sessions, [feeds, feeds], runs=2, warmup=warmup)
    per_pair = max(probe[0].median + probe[1].median, 1e-3)
    runs = int(np.clip(budget_ms / per_pair, min_runs, max_runs))
    a, b = time_models(sessions, [feeds, feeds], runs=runs, warmup=0)
    return list(a.samples), list(b.samples)
