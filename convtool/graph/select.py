"""Finding the Conv nodes that can be factorised, and saying why the others cannot.

Each Conv becomes either a :class:`ConvSite` (constant weight, geometry known, optionally a
following inference BatchNormalization to fold) or a :class:`Rejection` with a reason a
user understands.  Checks happen here, before any surgery (rank-based skips are decided
later, by the planner, because they need the factorisation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from convtool.core.conv import BatchNormParams, ConvLayer, Geometry
from convtool.core.skip import Skip
from convtool.options import SelectRules

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
_QUANT_OPS = {"DequantizeLinear", "DynamicQuantizeLinear", "QuantizeLinear"}
_MAX_FOLD_NODES = 64


@dataclass(frozen=True)
class Rejection(Skip):
    """A Conv that stays as it is, and why (a :class:`~convtool.core.skip.Skip` with its place)."""

    node: gs.Node
    name: str
    geometry: Geometry
    index: int


@dataclass
class ConvSite:
    """A convertible Conv: the graph node(s) to replace and the layer as numbers."""

    node: gs.Node
    layer: ConvLayer
    index: int
    batchnorm_node: gs.Node | None = None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def geometry(self) -> Geometry:
        return self.layer.geometry


def import_graph(model: onnx.ModelProto, source: str = "<memory>") -> gs.Graph:
    """The model as a graphsurgeon graph, or a one-line ModelLoadError."""
    from convtool.errors import ModelLoadError

    try:
        return gs.import_onnx(model)
    except Exception as exc:  # noqa: BLE001 - graphsurgeon raises many types on bad graphs
        raise ModelLoadError(f"{source}: cannot read the graph ({type(exc).__name__}: {exc})") from None


def node_label(node: gs.Node) -> str:
    """The name a user sees for a node: its name, else its first output's name."""
    if node.name:
        return node.name
    return f"<Conv -> {node.outputs[0].name}>" if node.outputs else "<unnamed Conv>"


class ConstantResolver:
    """Turns a tensor into its constant value, folding small constant subgraphs.

    Folding uses :mod:`onnx.reference` on the original model's nodes, so any op whose
    inputs are all constants (``ConstantOfShape``, ``Reshape`` of an initializer, ...) folds.
    """

    def __init__(self, model: onnx.ModelProto, graph: gs.Graph):
        self._model = model
        self._graph_inputs = {t.name for t in graph.inputs}
        self._producers = {out: n for n in model.graph.node for out in n.output}
        self._cache: dict[str, np.ndarray | Skip] = {}

    def value(self, tensor: gs.Tensor) -> np.ndarray | Skip:
        """The constant value, or why there is none."""
        if isinstance(tensor, gs.Constant):
            return np.asarray(tensor.values)
        if tensor.name in self._graph_inputs:
            return Skip("weight is a graph input, not a constant")
        if tensor.name not in self._cache:
            self._cache[tensor.name] = self._fold(tensor)
        return self._cache[tensor.name]

    def _fold(self, tensor: gs.Tensor) -> np.ndarray | Skip:
        if not tensor.inputs:
            return Skip("weight has no producer and is not a constant")
        producer = tensor.inputs[0]
        if producer.op in _QUANT_OPS:
            return Skip(f"weight is quantized ({producer.op})")
        if producer.op == "Constant" and "value" in producer.attrs:
            return np.asarray(producer.attrs["value"].values)
        return self._evaluate(tensor.name)

    def _evaluate(self, name: str) -> np.ndarray | Skip:
        """Evaluate the ancestors of ``name`` if they bottom out in constants only."""
        inits = {t.name: t for t in self._model.graph.initializer}
        needed: list[onnx.NodeProto] = []
        seen: set[str] = set()
        stack = [name]
        while stack:
            cur = stack.pop()
            if cur in seen or cur == "" or cur in inits:
                continue
            seen.add(cur)
            if cur in self._graph_inputs:
                return Skip("weight is computed from a graph input, not a constant")
            node = self._producers.get(cur)
            if node is None:
                return Skip("weight has no producer and is not a constant")
            if node.op_type in _QUANT_OPS:
                return Skip(f"weight is quantized ({node.op_type})")
            if node.domain not in ("", "ai.onnx") or any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
                return Skip(f"weight is computed by {node.op_type}, which convtool does not fold")
            if node not in needed:
                needed.append(node)
            if len(needed) > _MAX_FOLD_NODES:
                return Skip("weight is computed by a large subgraph; fold constants first")
            stack.extend(node.input)
        order = [n for n in self._model.graph.node if n in needed]
        used_inits = [inits[i] for n in order for i in n.input if i in inits]
        sub = onnx.helper.make_graph(
            order, "fold", [], [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
            initializer=list({t.name: t for t in used_inits}.values()),
        )
        sub_model = onnx.helper.make_model(sub, opset_imports=list(self._model.opset_import), ir_version=self._model.ir_version)
        try:
            from onnx.reference import ReferenceEvaluator

            (out,) = ReferenceEvaluator(sub_model).run(None, {})
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot fold"
            return Skip(f"weight subgraph could not be constant-folded ({type(exc).__name__})")
        return np.asarray(out)


def _geometry(node: gs.Node, weight_shape: tuple | None) -> Geometry:
    group = int(node.attrs.get("group", 1))
    kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
    cout = cin = 0
    if weight_shape is not None and all(isinstance(d, (int, np.integer)) for d in weight_shape):
        cout, cin_g = int(weight_shape[0]), int(weight_shape[1])
        cin = cin_g * group
        kernel = kernel or [int(k) for k in weight_shape[2:]]
    strides = tuple(int(s) for s in node.attrs.get("strides", [1] * len(kernel)))
    return Geometry(tuple(kernel), cin, cout, group, strides)


def _reject(node, name, reason: str, shape, index) -> Rejection:
    return Rejection(reason, node, name, _geometry(node, shape), index)


def _filter_reason(name: str, rules: SelectRules) -> str | None:
    if rules.include and not any(re.search(p, name) for p in rules.include):
        return "not matched by --include"
    for pattern in rules.exclude:
        if re.search(pattern, name):
            return f"excluded by --exclude {pattern!r}"
    return None


def _batchnorm_after(conv: gs.Node, out_channels: int, graph_outputs: set[str],
                     resolver: ConstantResolver) -> tuple[gs.Node, BatchNormParams] | None:
    out = conv.outputs[0]
    if out.name in graph_outputs or len(out.outputs) != 1:
        return None
    bn = out.outputs[0]
    if bn.op != "BatchNormalization" or bn.inputs[0] is not out or int(bn.attrs.get("training_mode", 0)):
        return None
    if any(t.outputs or t.name in graph_outputs for t in bn.outputs[1:]):
        return None
    values = [resolver.value(t) for t in bn.inputs[1:5]]
    if len(values) != 4 or any(isinstance(v, Skip) for v in values):
        return None
    if any(np.shape(v) != (out_channels,) for v in values):  # e.g. opset < 9 with spatial=0
        return None
    return bn, BatchNormParams(bn.name or "BatchNormalization", *values, eps=float(bn.attrs.get("epsilon", 1e-5)))


def find_convs(model: onnx.ModelProto, graph: gs.Graph, rules: SelectRules) -> list[ConvSite | Rejection]:
    """Every Conv in ``graph`` (graph order) as a candidate site or a rejection."""
    resolver = ConstantResolver(model, graph)
    graph_outputs = {t.name for t in graph.outputs}
    results: list[ConvSite | Rejection] = []
    for index, node in enumerate(graph.nodes):
        if node.op != "Conv":
            continue
        name = node_label(node)
        w_tensor = node.inputs[1]
        shape = tuple(w_tensor.shape) if w_tensor.shape is not None else None
        weight = resolver.value(w_tensor)
        if isinstance(weight, Skip):
            results.append(_reject(node, name, weight.reason, shape, index))
            continue
        geo = _geometry(node, weight.shape)
        reason = _structural_reason(node, weight, geo, w_tensor, rules)
        bias = None
        if reason is None and len(node.inputs) > 2 and node.inputs[2].name:
            b = resolver.value(node.inputs[2])
            if isinstance(b, Skip):
                reason = "bias is not a constant"
            else:  # a shared bias is fine: the replacement gets its own copy
                bias = b
        if reason is None:
            reason = _filter_reason(name, rules)
        if reason is not None:
            results.append(Rejection(reason, node, name, geo, index))
            continue
        bn = _batchnorm_after(node, geo.out_channels, graph_outputs, resolver) if rules.fold_batchnorm else None
        layer = ConvLayer(name, weight, bias, geo, bn[1] if bn else None)
        results.append(ConvSite(node, layer, index, bn[0] if bn else None))
    return results


def _structural_reason(node, weight, geo: Geometry, w_tensor, rules: SelectRules) -> str | None:
    if weight.dtype not in _FLOAT_DTYPES:
        return f"weight dtype {weight.dtype} is not float32 or float16"
    if weight.ndim not in (3, 4, 5):
        return f"{weight.ndim - 2}-D convolution is not supported (1-D, 2-D and 3-D are)"
    if len(w_tensor.outputs) > 1:
        return "weight shared with another node"
    if int(np.prod(weight.shape[2:])) == 1:
        return f"kernel is {'x'.join(str(k) for k in weight.shape[2:])}"
    if weight.shape[1] == 1:
        return "1 input channel: nothing to separate" if geo.group == 1 else "already depthwise"
    if geo.in_channels < rules.min_in_channels:
        return f"stem conv: {geo.in_channels} input channels < {rules.min_in_channels} (--min-in-channels)"
    if len(node.inputs) > 1 and node.inputs[0].dtype is not None and np.dtype(node.inputs[0].dtype) != weight.dtype:
        return f"input dtype {np.dtype(node.inputs[0].dtype)} differs from weight dtype {weight.dtype}"
    return None
