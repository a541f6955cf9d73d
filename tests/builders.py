"""The shared test models, built inline with ``onnx.helper`` (one place; tests import from here).

* :func:`conv_model` - one Conv (optionally followed by a BatchNormalization), parameterised
  over dims x stride x dilation x pads x group x bias x dtype; the weight is ``W``, the bias
  ``B``, the node ``conv``, the output ``y``.
* :func:`three_conv_model` - conv1 (8->16, + BN) -> Relu -> conv2 (16->16, group 2, bias) ->
  Relu -> conv3 (16->8): small enough to calibrate in a second, deep enough for a refit to
  see the layers before it.
* :func:`smooth_inputs` - correlated, image-like samples for :func:`three_conv_model`.
* :func:`conv_relu` - Conv (3->4) -> Relu with a symbolic batch, for sessions and profiling.
* :func:`make_model` / :func:`with_output_shapes` - the boilerplate around a graph.
* :func:`noisy` - seeded timings, for the latency decision rule and the drivers that use it.

Import as ``from builders import conv_model``: pytest's default import mode puts this
``tests/`` folder (it has no ``__init__.py``) on ``sys.path``; nothing edits it by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"


def make_model(graph: onnx.GraphProto, opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def with_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fill graph-output shapes by inference (a declared output without a shape is invalid)."""
    return onnx.shape_inference.infer_shapes(model)


def conv_model(dims: int = 2, *, cin: int = 8, cout: int = 12, k: int = 3, stride: int = 1, dilation: int = 1,
               pads: str | None = "explicit", group: int = 1, bias: bool = True, dtype=np.float32, size: int = 9,
               batch: int | str = 2, batchnorm: bool = False, seed: int = 0, opset: int = 17,
               ir_version: int = 8) -> onnx.ModelProto:
    """One Conv ``x -> y`` with constant weight ``W`` (and bias ``B``).

    ``pads``: ``"explicit"`` (asymmetric: 1 before, 2 or 0 after), an ``auto_pad`` value
    (``"SAME_UPPER"``, ``"VALID"``...) or ``None`` (no padding attribute).  3-D kernels are
    ``k x 2 x k`` (not cubic, so axis mix-ups show).  ``batchnorm`` adds an inference
    BatchNormalization ``bn`` after the Conv (the Conv then writes ``c``).
    """
    rng = np.random.default_rng(seed)
    kernel = [k] * dims if dims != 3 else [k, 2, k]
    w = rng.standard_normal((cout, cin // group, *kernel)).astype(dtype)
    attrs: dict = {"kernel_shape": kernel, "strides": [stride] * dims, "dilations": [dilation] * dims, "group": group}
    if pads == "explicit":
        attrs["pads"] = [1] * dims + [2 if dims == 1 else 0] * dims
    elif pads is not None:
        attrs["auto_pad"] = pads
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["x", "W"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(dtype), "B"))
        inputs.append("B")
    nodes = [helper.make_node("Conv", inputs, ["c" if batchnorm else "y"], name="conv", **attrs)]
    if batchnorm:
        for name, arr in (("s", rng.uniform(0.5, 1.5, cout)), ("b", rng.standard_normal(cout)),
                          ("m", rng.standard_normal(cout)), ("v", rng.uniform(0.5, 2, cout))):
            inits.append(numpy_helper.from_array(arr.astype(dtype), name))
        nodes.append(helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn", epsilon=1e-3))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, [batch, cin] + [size] * dims)],
        [helper.make_tensor_value_info("y", elem, None)], initializer=inits)
    return with_output_shapes(make_model(graph, opset, ir_version))


def three_conv_model(dims: int = 2, batchnorm: bool = True, batch: int | str = "N") -> onnx.ModelProto:
    """conv1 (8->16, k3, +BN) -> Relu -> conv2 (16->16, k3, group 2, bias) -> Relu -> conv3 (16->8).

    Input ``x`` ``[batch, 8, 9...]``, output ``y`` (an Identity of conv3) of the same shape.
    """
    rng = np.random.default_rng(0)
    k = [3] * dims
    sp = [9] * dims
    pads = [1] * (2 * dims)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv(name: str, x: str, cin: int, cout: int, group: int = 1, bias: bool = False) -> str:
        w = rng.standard_normal((cout, cin // group, *k)) / np.sqrt(cin * 3 ** dims)
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.w"))
        ins = [x, f"{name}.w"]
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}.b"))
            ins.append(f"{name}.b")
        nodes.append(helper.make_node("Conv", ins, [f"{name}.out"], name=name, kernel_shape=k, pads=pads, group=group))
        return f"{name}.out"

    h = conv("conv1", "x", 8, 16)
    if batchnorm:
        for nm, v in (("s", rng.uniform(0.5, 2, 16)), ("b", rng.standard_normal(16)),
                      ("m", rng.standard_normal(16) * 0.1), ("v", rng.uniform(0.5, 2, 16))):
            inits.append(numpy_helper.from_array(v.astype(np.float32), f"bn1.{nm}"))
        nodes.append(helper.make_node("BatchNormalization", [h, "bn1.s", "bn1.b", "bn1.m", "bn1.v"], ["bn1.out"],
                                      name="bn1"))
        h = "bn1.out"
    nodes.append(helper.make_node("Relu", [h], ["r1"], name="relu1"))
    h = conv("conv2", "r1", 16, 16, group=2, bias=True)
    nodes.append(helper.make_node("Relu", [h], ["r2"], name="relu2"))
    h = conv("conv3", "r2", 16, 8)
    nodes.append(helper.make_node("Identity", [h], ["y"], name="out"))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, *sp])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, *sp])], inits)
    return make_model(graph)


def smooth_inputs(n: int = 24, dims: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    """``{"x": [n, 8, 9...]}``: 3x3 blocks of one value plus a little noise (image-like, so
    low-rank layers have something to learn)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, *([3] * dims)))
    for axis in range(2, 2 + dims):
        x = np.repeat(x, 3, axis=axis)
    return {"x": (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)}


def conv_relu(names: Sequence[str] = ("conv", "relu")) -> onnx.ModelProto:
    """``X [N, 3, 8, 8] -> Conv (4 out, 3x3, pads 1) -> Relu -> Y``."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    nodes = [
        helper.make_node("Conv", ["X", "W"], ["C"], name=names[0], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["C"], ["Y"], name=names[1]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [w])
    return make_model(graph)


def noisy(median: float, n: int = 40, spread: float = 0.05, seed: int = 0) -> list[float]:
    """``n`` seeded timings (ms) around ``median``, for the latency rules (no test times for real)."""
    rng = np.random.default_rng(seed)
    return list(median * (1 + spread * rng.standard_normal(n)))
