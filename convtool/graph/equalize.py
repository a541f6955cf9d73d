"""Cross-layer equalization of a converted model's factor pairs (:mod:`convtool.core.equalize`).

For every converted layer (a :class:`~convtool.records.LayerChange` with its ``new_nodes``) the
pairs are found by structure, not by layout name: a Conv among the layer's new nodes whose only
consumer is another Conv of the same layer, with constant weights (and bias) used by no other
node, and whose output is not a graph output.  That is the depthwise -> pointwise pair of the
``multiplier`` and ``repeat`` layouts (the Concat before the depthwise does not matter), each
branch of ``branches`` (one pair per branch; the Sum after the pointwise convs does not
matter), and the 1x1 -> grouped conv of ``pointwise_first``.  A layer where no such pair exists
(none is emitted today) is listed with ``pairs = 0``.

Weights are read and written through :mod:`convtool.graph.weights`; the graph's structure, names
and every other tensor stay as they are.  Functional: the caller's model is not modified.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import onnx

from convtool.core.equalize import equalize_pair, imbalance
from convtool.graph.export import copy_model
from convtool.graph.weights import group_of, initializers, node_named, read, set_initializer
from convtool.records import EqualizedPair, LayerChange

__all__ = ["equalize_model", "layer_pairs"]


def layer_pairs(model: onnx.ModelProto, names: Sequence[str]) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """The (first, second) Conv pairs among the nodes ``names`` (see the module docstring)."""
    inits = initializers(model)
    uses = Counter(i for n in model.graph.node for i in n.input)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    convs = [n for n in (node_named(model, name) for name in names) if n is not None and n.op_type == "Conv"]
    in_layer = {n.name for n in convs}

    def constant_params(n: onnx.NodeProto) -> bool:
        params = [i for i in n.input[1:] if i]
        return all(p in inits and uses[p] == 1 for p in params)

    pairs = []
    for first in convs:
        out = first.output[0]
        users = consumers.get(out, [])
        if out in outputs or len(users) != 1 or users[0].op_type != "Conv" or users[0].name not in in_layer:
            continue
        second = users[0]
        if second.input[0] == out and constant_params(first) and constant_params(second):
            pairs.append((first, second))
    return pairs


def equalize_model(model: onnx.ModelProto, layers: Sequence[LayerChange]) -> tuple[onnx.ModelProto,
                                                                                   list[EqualizedPair]]:
    """A copy of ``model`` with every converted layer's pairs equalized, and what was done."""
    out = copy_model(model)
    done: list[EqualizedPair] = []
    for layer in layers:
        if not layer.converted:
            continue
        for first, second in layer_pairs(out, layer.new_nodes):
            w1, w2 = read(out, first.input[1]), read(out, second.input[1])
            b1 = read(out, first.input[2]) if len(first.input) > 2 and first.input[2] else None
            eq = equalize_pair(w1, w2, group_of(second), b1)
            set_initializer(out, first.input[1], eq.first)
            set_initializer(out, second.input[1], eq.second)
            if b1 is not None:
                set_initializer(out, first.input[2], eq.first_bias)
            done.append(EqualizedPair(layer.name, first.name, second.name, int(eq.scales.size),
                                      float(eq.scales.min()), float(eq.scales.max()),
                                      imbalance(*eq.ranges_before), imbalance(*eq.ranges_after)))
    return out, done
