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
    has_subgraphs = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for n in graph.node for a in n.attribute)
    if has_subgraphs:
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
    needed = {i for k in keep for i in graph.node[k].input}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend(graph.node[k] for k in sorted(keep))
    inits = [t for t in graph.initializer if t.name in needed or has_subgraphs]
    del g.initializer[:]
    g.initializer.extend(inits)
    known = {vi.name: vi for vi in (*graph.value_info, *graph.output)}
    del g.output[:]
    for name in outputs:
        vi = known.get(name) or onnx.helper.make_tensor_value_info(name, _elem_type(model, name), None)
        g.output.append(vi)
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
