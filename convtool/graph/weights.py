"""Reading and writing the weights of an emitted replacement in an ONNX model, in place.

The calibration refit changes weights, never structure: it finds the 1x1 Convs that end a
converted layer (:func:`pointwise_convs`) and writes new weights and biases into their
initializers (:func:`write_pointwise`).  New bias initializers get unique names derived from
the weight's name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from convtool.core.skip import Skip


def _taken(model: onnx.ModelProto) -> set[str]:
    taken = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    taken |= {o for n in model.graph.node for o in (*n.output, *n.input)}
    return taken


def unique_name(model: onnx.ModelProto, base: str) -> str:
    """``base``, or ``base_1``, ``base_2``... - the same rule as :class:`convtool.graph.emit.Namer`."""
    from convtool.graph.emit import Namer

    return Namer(_taken(model))(base)


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def read(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(initializers(model)[name])


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
            return
    raise KeyError(name)


def node_named(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if n.name == name), None)


def group_of(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def pointwise_convs(model: onnx.ModelProto, node: onnx.NodeProto) -> list[onnx.NodeProto] | Skip:
    """The 1x1 Convs whose (summed) outputs form the layer output, or why there are none.

    ``multiplier``/``repeat`` end with one 1x1 Conv; ``branches`` ends with a ``Sum`` of one
    1x1 Conv per branch, which together are one linear map of the concatenated branch inputs.
    """
    inits = initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}

    def is_pointwise(n: onnx.NodeProto | None) -> bool:
        return (n is not None and n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits
                and all(k == 1 for k in inits[n.input[1]].dims[2:]))

    if is_pointwise(node):
        return [node]
    if node.op_type in ("Sum", "Add"):
        convs = [producers.get(i) for i in node.input]
        if convs and all(is_pointwise(c) for c in convs):
            if len({group_of(c) for c in convs}) == 1:  # type: ignore[arg-type]
                return convs  # type: ignore[return-value]
    return Skip(f"refit needs the layer to end with 1x1 Convs; it ends with {node.op_type}")


def pointwise_weights(model: onnx.ModelProto, convs: list[onnx.NodeProto]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Each conv's weight, and the sum of their biases (``None`` when none has one)."""
    inits = initializers(model)
    weights = [numpy_helper.to_array(inits[c.input[1]]) for c in convs]
    bias = None
    for c in convs:
        if len(c.input) > 2 and c.input[2] in inits:
            b = numpy_helper.to_array(inits[c.input[2]]).astype(np.float64)
            bias = b if bias is None else bias + b
    return weights, bias


def write_pointwise(model: onnx.ModelProto, node: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """Write ``weight`` (and ``bias``; ``None`` zeroes an existing one) into ``node``'s inputs."""
    set_initializer(model, node.input[1], weight)
    if bias is None:
        if len(node.input) > 2 and node.input[2]:
            set_initializer(model, node.input[2], np.zeros(weight.shape[0], weight.dtype))
        return
    if len(node.input) > 2 and node.input[2]:
        set_initializer(model, node.input[2], bias)
    else:
        name = unique_name(model, f"{node.input[1]}.bias")
        model.graph.initializer.append(numpy_helper.from_array(bias, name))
        if len(node.input) == 2:
            node.input.append(name)
        else:
            node.input[2] = name


def spatial_conv(model: onnx.ModelProto, names: list[str]) -> onnx.NodeProto | None:
    """Among a converted layer's new nodes, the first Conv whose kernel is not 1x1 (it carries
    the original strides, pads, dilations and auto_pad)."""
    inits = initializers(model)
    for name in names:
        node = node_named(model, name)
        if node is not None and node.op_type == "Conv" and node.input[1] in inits:
            if any(k != 1 for k in inits[node.input[1]].dims[2:]):
                return node
    return None


def conv_attrs(node: onnx.NodeProto) -> dict:
    """``strides``, ``pads``, ``dilations`` (tuples) and ``auto_pad`` (str) of a Conv node."""
    out: dict = {"auto_pad": "NOTSET"}
    for a in node.attribute:
        if a.name in ("strides", "pads", "dilations"):
            out[a.name] = tuple(int(v) for v in a.ints)
        elif a.name == "auto_pad":
            out["auto_pad"] = a.s.decode() if isinstance(a.s, bytes) else str(a.s)
    return out


def write_factors(model: onnx.ModelProto, names: list[str], layout: str, factors, bias: np.ndarray | None,
                  group: int) -> None:
    """Write a factor pair (:class:`convtool.core.factorize.Factors`) into the nodes a layer was
    emitted as (``names``, in emission order), for every layout (the same permutations as
    :mod:`convtool.graph.emit`); the bias goes where the emitter put it."""
    from convtool.graph.emit import branch_weights, repeat_weights

    convs = [n for n in (node_named(model, name) for name in names) if n is not None and n.op_type == "Conv"]
    if layout == "repeat" and factors.rank > 1:
        dw, pw = repeat_weights(factors, group)
        pairs = [(convs[0], dw, None), (convs[1], pw, bias)]
    elif layout == "branches" and factors.rank > 1:
        pairs = []
        for j, (dw, pw) in enumerate(branch_weights(factors, group)):
            pairs += [(convs[2 * j], dw, None), (convs[2 * j + 1], pw, bias if j == 0 else None)]
    else:  # multiplier (and the r=1 forms of repeat/branches), pointwise_first: first, then second
        pairs = [(convs[0], factors.first, None), (convs[1], factors.second, bias)]
    for node, weight, b in pairs:
        set_initializer(model, node.input[1], np.ascontiguousarray(weight))
        if b is not None or (len(node.input) > 2 and node.input[2]):
            write_pointwise(model, node, np.ascontiguousarray(weight), b)
