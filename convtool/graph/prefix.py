"""Prefix models: the part of a graph that computes some tensors, exposed as outputs.

Used to capture activations (the calibration refit) without running what comes after them.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx


def prefix_model(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``outputs``, keeping only the nodes they need.

    Graph inputs are all kept (the caller feeds them all).  Graphs with control-flow subgraphs
    are not pruned, only given the extra outputs.
    """
    graph = model.graph
    producers = {o: i for i, n in enumerate(graph.node) for o in n.output}
    subgraphs = has_subgraphs(model)
    if subgraphs:
        keep = set(range(len(graph.node)))
    else:
        keep = set()
        stack = list(outputs)
        while stack:
            idx = producers.get(stack.pop())
            if idx is None or idx in keep:
                continue
            keep.add(idx)
            stack.extend(graph.node[idx].input)
    out = with_nodes(model, keep, all_initializers=subgraphs)
    g = out.graph
    known = {vi.name: vi for vi in (*graph.value_info, *graph.output)}
    del g.output[:]
    for name in outputs:
        vi = known.get(name) or onnx.helper.make_tensor_value_info(name, _elem_type(model, name), None)
        g.output.append(vi)
    return out


def has_subgraphs(model: onnx.ModelProto) -> bool:
    """Whether any node carries a control-flow body (``If`` / ``Loop`` / ``Scan``)."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in model.graph.node for a in n.attribute)


def with_nodes(model: onnx.ModelProto, keep, all_initializers: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with only the nodes at indices ``keep`` (graph order) and the
    initializers they read (all of them with ``all_initializers``); inputs and outputs as
    they were, for the caller to set."""
    graph = model.graph
    needed = {i for k in keep for i in graph.node[k].input}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend(graph.node[k] for k in sorted(keep))
    del g.initializer[:]
    g.initializer.extend(t for t in graph.initializer if all_initializers or t.name in needed)
    return out


def _elem_type(model: onnx.ModelProto, tensor: str) -> int:
    """The element type of ``tensor``: that of the first float initializer feeding its producer."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        if tensor in node.output:
            for name in node.input:
                if name in inits:
                    return inits[name]
    return onnx.TensorProto.FLOAT
