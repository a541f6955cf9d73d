"""Suffix models: the part of a graph downstream of one tensor, fed from outside.

The budget search measures what converting ONE layer does to the model's outputs without
running the whole model again for every candidate: the layer's new output is computed from
cached inputs, and only the nodes that depend on it run (:mod:`convtool.search.sensitivity`).

``suffix_model(model, start)`` keeps every node reachable forward from ``start``.  Its graph
inputs are ``start`` plus every *boundary* tensor: a tensor those nodes read that none of them
writes (an earlier activation reaching forward through a skip connection or a concat, or a
graph input); initializers stay initializers.  Its outputs are the model outputs that depend
on ``start``; the other model outputs do not change when the layer does.

Graphs with control-flow subgraphs are refused (their bodies may read outer-scope tensors that
the boundary would have to include); the caller falls back to whole-model runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from convtool.errors import ConvToolError
from convtool.graph.prefix import has_subgraphs, with_nodes

__all__ = ["Suffix", "downstream", "has_subgraphs", "suffix_model", "value_infos"]


@dataclass(frozen=True)
class Suffix:
    """A suffix model and its interface."""

    model: onnx.ModelProto
    start: str
    inputs: tuple[str, ...]  # ``start`` first, then the boundary tensors in graph order
    outputs: tuple[str, ...]  # the model outputs that depend on ``start``


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Types and shapes of every tensor ONNX shape inference resolves (the model's own where it
    fails)."""
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is best effort; inputs then get an unknown shape
        pass
    g = model.graph
    return {vi.name: vi for vi in (*g.input, *g.value_info, *g.output)}


def downstream(model: onnx.ModelProto, start: str) -> tuple[list[int], list[str], list[str]]:
    """The suffix of ``start`` without building it: the indices of the nodes reachable forward
    from it (graph order), its boundary tensors and the model outputs that depend on it."""
    if has_subgraphs(model):
        raise ConvToolError("the graph has control-flow subgraphs; suffix models are not supported")
    graph = model.graph
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    keep: set[int] = set()
    stack = [start]
    reached = {start}
    while stack:
        for i in consumers.get(stack.pop(), ()):
            if i in keep:
                continue
            keep.add(i)
            for out in graph.node[i].output:
                if out and out not in reached:
                    reached.add(out)
                    stack.append(out)
    written = {o for i in keep for o in graph.node[i].output}
    inits = {t.name for t in graph.initializer}
    boundary: list[str] = []
    for i in sorted(keep):
        for name in graph.node[i].input:
            if name and name != start and name not in written and name not in inits and name not in boundary:
                boundary.append(name)
    outputs = [o.name for o in graph.output if o.name in written or o.name == start]
    return sorted(keep), boundary, outputs


def suffix_model(model: onnx.ModelProto, start: str, infos: dict | None = None) -> Suffix:
    """The nodes downstream of ``start`` as a model (see the module docstring).

    ``infos``: name -> ValueInfoProto with the tensors' types (default: :func:`value_infos`;
    pass them in when cutting many suffixes of one model).
    """
    keep, boundary, outputs = downstream(model, start)
    infos = infos if infos is not None else value_infos(model)
    out = with_nodes(model, keep)
    g = out.graph
    del g.input[:]
    for name in (start, *boundary):
        vi = infos.get(name)
        if vi is None or not vi.type.tensor_type.elem_type:
            vi = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        g.input.append(vi)
    del g.output[:]
    g.output.extend(o for o in model.graph.output if o.name in outputs)
    del g.value_info[:]
    return Suffix(out, start, (start, *boundary), tuple(outputs))
