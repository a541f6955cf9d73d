"""Exporting a graphsurgeon graph back to an ONNX model that keeps the original's identity.

Every model-level field of the original (opset imports, IR version, producer, metadata - which
rapidocr reads its character table from) is kept; only the graph changes.  IR < 4 models list
every initializer as a graph input, so new initializers are listed too.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from convtool.analysis.shapes import copy_field

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


def export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
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


def finish(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """The last step of every rewrite: one ``cleanup().toposort()``, then :func:`export`."""
    graph.cleanup().toposort()
    return export(graph, like)


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
