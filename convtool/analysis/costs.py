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

Where the dims come from: :func:`costs_from_shapes` counts from any shape table; the tensors a
counted op needs are exactly :func:`shape_needs` (Conv: output and weight; ConvTranspose: input
and weight; Gemm/MatMul: first input and output).  :func:`static_costs` uses ONNX shape
inference only (:func:`convtool.analysis.shapes.static_shapes`).  When inference
leaves some of those tensors unknown, :class:`Costs` lists them in ``unknown`` and
:func:`convtool.runtime.observe.model_costs` fills them with the shapes onnxruntime observes
(``Costs.shapes == "observed"``); that is the one entry point every caller uses (convert,
report, sweep, the search).  This module never runs a model.

Unknown is never 0: ``macs`` is ``None`` for a counted op whose needed shapes are unknown (e.g.
behind a data-dependent ``NonZero``, or a ``Pad`` whose amounts are computed at run time), and
a model total is ``None`` as soon as one counted op is unknown, with a one-line reason
(:attr:`Costs.reason`).

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
from typing import Literal

import onnx

from convtool.analysis.shapes import Shape, static_shapes

__all__ = ["NodeCost", "Costs", "ShapeSource", "node_costs", "static_costs", "costs_from_shapes", "shape_needs",
           "model_params", "tensor_elements", "folded_batchnorms"]

#: Where the dims of counted ops came from: ONNX shape inference alone, or (for at least one
#: counted op) a run of the model with onnxruntime (:mod:`convtool.runtime.observe`).
ShapeSource = Literal["inferred", "observed"]


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


@dataclass(frozen=True)
class Costs:
    """Per-node costs of a model and how much of it is known.

    ``shapes``: where the counted ops' dims came from. ``unknown``: tensors counted ops need
    whose dims are still unknown (graph order, each once). ``reason``: why some MACs are
    unknown, ``None`` when every counted op is known.
    """

    nodes: tuple[NodeCost, ...]
    shapes: ShapeSource = "inferred"
    unknown: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def macs(self) -> int | None:
        """Whole-model MACs; ``None`` when any counted op is unknown (never a partial sum)."""
        if any(c.macs is None for c in self.nodes):
            return None
        return sum(c.macs or 0 for c in self.nodes)

    @property
    def unknown_nodes(self) -> list[str]:
        """Names of the nodes whose MACs are unknown."""
        return [c.name for c in self.nodes if c.macs is None]


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


def _ints(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


#: Per counted op: the (field, index) of each tensor whose dims its MAC count needs.
_NEEDS: dict[str, tuple[tuple[str, int], ...]] = {
    "Conv": (("output", 0), ("input", 1)),
    "ConvInteger": (("output", 0), ("input", 1)),
    "ConvTranspose": (("input", 0), ("input", 1)),
    "Gemm": (("input", 0), ("output", 0)),
    "MatMul": (("input", 0), ("output", 0)),
    "MatMulInteger": (("input", 0), ("output", 0)),
}


def shape_needs(node: onnx.NodeProto) -> tuple[str, ...]:
    """Names of the tensors whose dims the MAC count of ``node`` needs, in the order
    :func:`_node_macs` reads them; empty for ops that cost 0 MACs ("" for a missing input)."""
    if node.domain not in ("", "ai.onnx"):
        return ()
    out = []
    for field, i in _NEEDS.get(node.op_type, ()):
        io = getattr(node, field)
        out.append(io[i] if i < len(io) else "")
    return tuple(out)


def _node_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape | None]) -> int | None:
    needs = shape_needs(node)
    if not needs:
        return 0
    dims = [shapes.get(n) if n else None for n in needs]
    if any(d is None for d in dims):
        return None
    op = node.op_type
    if op in ("Conv", "ConvInteger"):
        y, w = dims
        return math.prod(y) * math.prod(w[1:])  # type: ignore[arg-type,index]
    if op == "ConvTranspose":
        x, w = dims
        return math.prod(x) * math.prod(w[1:])  # type: ignore[arg-type,index]
    a, y = dims
    assert a is not None and y is not None
    if op == "Gemm":
        if len(a) != 2:
            return None
        k = a[0] if _ints(node, "transA", 0) else a[1]
        return math.prod(y) * k
    if len(a) == 0:  # MatMul, MatMulInteger
        return None
    return math.prod(y) * a[-1]


def costs_from_shapes(model: onnx.ModelProto, shapes: Mapping[str, Shape | None],
                      source: ShapeSource = "inferred") -> Costs:
    """Count every top-level node of ``model`` with the dims in ``shapes`` (tensor name ->
    dims, ``None`` or absent: unknown); ``source`` says where they came from."""
    graph = model.graph
    constant_elems: dict[str, int] = {t.name: tensor_elements(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            constant_elems[node.output[0]] = _constant_node_elements(node)
    nodes = []
    unknown: dict[str, None] = {}  # ordered set
    for i, node in enumerate(graph.node):
        seen: set[str] = set()
        params = 0
        for name in node.input:
            if name in constant_elems and name not in seen:
                seen.add(name)
                params += constant_elems[name]
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown.update((n, None) for n in shape_needs(node) if n and shapes.get(n) is None)
        nodes.append(NodeCost(name=node.name or f"{node.op_type}_{i}", op_type=node.op_type, params=params, macs=macs))
    missing = [c.name for c in nodes if c.macs is None]
    reason = None
    if missing:
        where = ("ONNX shape inference could not resolve" if source == "inferred"
                 else "neither ONNX shape inference nor a run with onnxruntime resolved")
        reason = f"{where} the shapes of {len(missing)} counted node(s) (e.g. {missing[0]})"
    return Costs(tuple(nodes), source, tuple(unknown), reason)


def static_costs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Costs:
    """:func:`costs_from_shapes` with the dims ONNX shape inference resolves at the given (or
    default) input shapes; never runs the model.

    Raises :class:`~convtool.errors.OptionError` when an input has symbolic dims the user must fix.
    """
    return costs_from_shapes(model, static_shapes(model, input_shapes))


def node_costs(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> list[NodeCost]:
    """``static_costs(model, input_shapes).nodes`` as a list.

    Superseded by :func:`convtool.runtime.observe.model_costs`, the one cost entry point of
    convert, report, sweep and the search; kept only until ``search/budget.py`` calls that.
    """
    return list(static_costs(model, input_shapes).nodes)


def folded_batchnorms(original: onnx.ModelProto, converted: onnx.ModelProto) -> dict[str, tuple[str, ...]]:
    """Node name -> the ``BatchNormalization`` nodes that read its output in ``original`` and are
    gone from ``converted`` (folded into the node's replacement).

    **A layer's parameters** are the constant elements of its Conv node plus those of the
    BatchNormalization folded into it: the layer as it stands in the original model, the part
    the replacement takes over.  ``convert`` (its per-layer ``params_before``) and ``report``
    (a converted layer's ``params_before``) both count them so.  Names as in :class:`NodeCost`
    (``op_type_i`` for unnamed nodes).
    """
    def names(model: onnx.ModelProto) -> list[str]:
        return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]

    kept = set(names(converted))
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(original.graph.node):
        for x in node.input:
            readers.setdefault(x, []).append(i)
    labels = names(original)
    out: dict[str, tuple[str, ...]] = {}
    for i, node in enumerate(original.graph.node):
        bns = tuple(labels[j] for x in node.output for j in readers.get(x, ())
                    if original.graph.node[j].op_type == "BatchNormalization" and labels[j] not in kept)
        if bns:
            out[labels[i]] = bns
    return out
