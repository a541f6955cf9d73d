"""Parameters and multiply-accumulates (MACs), per node and for the whole model.

What is counted (FLOPs are reported as exactly ``2 x MACs``):

* ``Conv`` (1-D/2-D/3-D, any ``group``), ``ConvInteger``:
  ``MACs = N * prod(out_spatial) * Cout * (Cin / group) * prod(kernel)``, i.e. every output
  element costs one MAC per weight in its group's receptive field
  (``numel(Y) * prod(W.shape[1:])``). Strides, dilations, pads and ``auto_pad`` enter through
  the inferred output shape.
* ``ConvTranspose``: counted on the input side,
  ``MACs = N * prod(in_spatial) * Cin * (Cout / group) * prod(kernel)``
  (``numel(X) * prod(W.shape[1:])``): every input element is scattered through every weight of
  its group.
* ``Gemm``: ``M * N * K`` (``transA``/``transB`` honoured; ``alpha``/``beta`` scaling not counted).
* ``MatMul``, ``MatMulInteger`` (batched, numpy broadcasting, 1-D operands):
  ``numel(Y) * K``.
* Not counted: bias additions, the ``C`` term of Gemm, activations, normalisation, pooling,
  elementwise and data-movement ops; every other op has 0 MACs.

``macs`` is ``None`` for a counted op whose needed shapes are still unknown after shape
inference (e.g. behind a data-dependent ``NonZero``); model totals sum the known values.

Parameters: a node's ``params`` is the element count of its constant inputs (initializers and
outputs of ``Constant`` nodes). A constant shared by several nodes is counted at each of them,
but once in :func:`model_params`. :func:`model_params` counts *every* constant element of the
model, including tiny shape constants (a Reshape target adds its 4 elements): a simple,
reproducible definition that matches "total parameters" of the file, instead of a heuristic
about which constants are "real" weights. Subgraph (If/Loop/Scan) constants are included in
:func:`model_params`; nodes inside subgraphs are not costed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from convtool.analysis.shapes import infer_skeleton

__all__ = ["NodeCost", "node_costs", "model_params", "model_macs", "tensor_elements"]


@dataclass(frozen=True)
class NodeCost:
    """Static cost of one graph node.

    ``params``: elements of the node's constant inputs. ``macs``: multiply-accumulates for one
    run at the analysed input shapes, ``None`` when a needed shape is unknown.
    """

    name: str
    op_type: str
    params: int
    macs: int | None

    @property
    def flops(self) -> int | None:
        """``2 x macs``."""
        return None if self.macs is None else 2 * self.macs


def tensor_elements(tensor: onnx.TensorProto) -> int:
    """Number of elements of a tensor, from its dims (no data is read)."""
    return math.prod(tensor.dims)


def _attribute_elements(attr: onnx.AttributeProto) -> int:
    """Elements of a ``Constant`` node's value attribute."""
    if attr.type == onnx.AttributeProto.TENSOR:
        return tensor_elements(attr.t)
    if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
        return tensor_elements(attr.sparse_tensor.values)
    if attr.type in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.INT, onnx.AttributeProto.STRING):
        return 1
    if attr.type == onnx.AttributeProto.FLOATS:
        return len(attr.floats)
    if attr.type == onnx.AttributeProto.INTS:
        return len(attr.ints)
    if attr.type == onnx.AttributeProto.STRINGS:
        return len(attr.strings)
    return 0


def _constant_node_elements(node: onnx.NodeProto) -> int:
    return sum(_attribute_elements(a) for a in node.attribute if a.name.startswith(("value", "sparse_value")))


def _graph_params(graph: onnx.GraphProto) -> int:
    total = sum(tensor_elements(t) for t in graph.initializer)
    # Sparse initializers: count the stored (non-zero) values.
    total += sum(tensor_elements(t.values) for t in graph.sparse_initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            total += _constant_node_elements(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                total += _graph_params(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                total += sum(_graph_params(g) for g in attr.graphs)
    return total


def model_params(model: onnx.ModelProto) -> int:
    """Every constant element of the model: initializers (sparse: stored values) and
    ``Constant`` nodes, subgraphs included, each tensor once."""
    return _graph_params(model.graph)


def _shape_table(graph: onnx.GraphProto) -> dict[str, tuple[int, ...] | None]:
    shapes: dict[str, tuple[int, ...] | None] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.WhichOneof("value") != "tensor_type" or not vi.type.tensor_type.HasField("shape"):
            shapes.setdefault(vi.name, None)
            continue
        dims: list[int] | None = []
        for d in vi.type.tensor_type.shape.dim:
            if d.WhichOneof("value") == "dim_value":
                dims.append(d.dim_value)  # type: ignore[union-attr]
            else:
                dims = None
                break
        if dims is not None or shapes.get(vi.name) is None:
            shapes[vi.name] = None if dims is None else tuple(dims)
    for t in graph.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def _ints(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _node_macs(node: onnx.NodeProto, shape: Mapping[str, tuple[int, ...] | None]) -> int | None:
    def get(i: int, io: Sequence[str]) -> tuple[int, ...] | None:
        return shape.get(io[i]) if i < len(io) and io[i] else None

    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return 0
    if op in ("Conv", "ConvInteger"):
        y, w = get(0, node.output), get(1, node.input)
        if y is None or w is None:
            return None
        return math.prod(y) * math.prod(w[1:])
    if op == "ConvTranspose":
        x, w = get(0, node.input), get(1, node.input)
        if x is None or w is None:
            return None
        return math.prod(x) * math.prod(w[1:])
    if op == "Gemm":
        a, y = get(0, node.input), get(0, node.output)
        if a is None or y is None or len(a) != 2:
            return None
        k = a[0] if _ints(node, "transA", 0) else a[1]
        return math.prod(y) * k
    if op in ("MatMul", "MatMulInteger"):
        a, y = get(0, node.input), get(0, node.output)
        if a is None or y is None or len(a) == 0:
            return None
        return math.prod(y) * a[-1]
    return 0


def _costs_of_inferred(graph: onnx.GraphProto) -> list[NodeCost]:
    shapes = _shape_table(graph)
    constant_elems: dict[str, int] = {t.name: tensor_elements(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            constant_elems[node.output[0]] = _constant_node_elements(node)
    costs = []
    for i, node in enumerate(graph.node):
        seen: set[str] = set()
        params = 0
        for name in node.input:
            if name in constant_elems and name not in seen:
                seen.add(name)
                params += constant_elems[name]
        costs.append(
            NodeCost(
                name=node.name or f"{node.op_type}_{i}",
                op_type=node.op_type,
                params=params,
                macs=_node_macs(node, shapes),
            )
        )
    return costs


def node_costs(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> list[NodeCost]:
    """One :class:`NodeCost` per top-level node, in graph order.

    Shapes come from ONNX shape inference after fixing the inputs (see
    :func:`convtool.analysis.shapes.with_static_shapes`); raises
    :class:`~convtool.errors.OptionError` when an input has symbolic dims the user must fix.
    Unnamed nodes are reported as ``<op_type>_<index>``.
    """
    return _costs_of_inferred(infer_skeleton(model, input_shapes).graph)


def model_macs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None) -> int:
    """Sum of the known per-node MACs (see the module docstring for what is counted)."""
    return sum(c.macs for c in node_costs(model, input_shapes) if c.macs is not None)
