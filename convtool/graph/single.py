"""One-layer models: a Conv alone at its real input shape, and its replacement.

For timing a candidate layer (:mod:`convtool.search.latency`): the original Conv alone (with a
following BatchNormalization already folded in, as onnxruntime itself fuses it) and its
replacement emitted by the same code path as the real conversion (:func:`replace_conv`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from convtool.core.plan import Decision
from convtool.graph.emit import Namer, replace_conv

__all__ = ["ConvShape", "batch_free", "conv_shape", "original_model", "replacement_model", "window_attrs"]


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


def window_attrs(node: gs.Node, dims: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], str]:
    """A Conv node's ``strides``, ``pads``, ``dilations`` (ONNX defaults filled in) and ``auto_pad``."""
    attrs = node.attrs
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    return (tuple(int(v) for v in attrs.get("strides", [1] * dims)),
            tuple(int(v) for v in attrs.get("pads", [0] * (2 * dims))),
            tuple(int(v) for v in attrs.get("dilations", [1] * dims)), auto_pad)


def conv_shape(node: gs.Node, decision: Decision, x_shape: tuple[int, ...]) -> ConvShape:
    """The timing-relevant shape of ``node`` converted by ``decision``."""
    geo = decision.layer.geometry
    strides, pads, dilations, auto_pad = window_attrs(node, len(geo.kernel))
    return ConvShape(
        x_shape=tuple(int(v) for v in x_shape),
        dtype=str(np.dtype(decision.weight.dtype)),
        kernel=tuple(int(k) for k in geo.kernel),
        in_channels=geo.in_channels,
        out_channels=geo.out_channels,
        group=geo.group,
        strides=strides,
        pads=pads,
        dilations=dilations,
        auto_pad=auto_pad,
        bias=decision.bias is not None,
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
    from convtool.graph.export import export

    base = original_model(shape, decision.weight, decision.bias, opset)
    graph = gs.import_onnx(base)
    replace_conv(graph, graph.nodes[0], None, decision, Namer.for_graph(graph))
    graph.cleanup().toposort()
    return export(graph, base)


def batch_free(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the first dim of its inputs and outputs symbolic (``N``), in place: one
    session then runs batches of any size."""
    for vi in (*model.graph.input, *model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "N"
    return model
