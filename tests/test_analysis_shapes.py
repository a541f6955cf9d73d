"""Static shape tables, and the graph where ONNX shape inference gives up (issue 8, item 15).

``padded_nhwc_model`` reproduces a third-party classifier: an NHWC input transposed to NCHW,
then padding amounts built at run time (``Shape -> Shape -> Sub -> ConstantOfShape -> Concat``,
as converters emit them) feeding a ``Pad`` before the first Conv.  ONNX shape inference does
not propagate ``ConstantOfShape`` values, so every tensor after the ``Pad`` has ``unk__N`` dims
even at a fully static input shape.  The runtime tests reuse it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convtool.analysis.costs import static_costs
from convtool.analysis.shapes import resolve_input_shapes, shape_table, static_shapes
from convtool.errors import OptionError

#: input_0 = 1x32x32x3 (NHWC) -> x 1x3x32x32 -> pad 1 -> xp 1x3x34x34
#: conv1 8x3x3x3 stride 2 -> c1 1x8x16x16: 16*16 * 8 * 3*9 = 55,296 MACs
#: conv2 16x8x3x3 pad 1   -> c2 1x16x16x16: 16*16 * 16 * 8*9 = 294,912 MACs
#: global average pool, flatten -> f 1x16; fc 16x10 MatMul: 16 * 10 = 160 MACs
SHAPE = {"input_0": (1, 32, 32, 3)}
CONV1_MACS, CONV2_MACS, FC_MACS = 16 * 16 * 8 * 3 * 9, 16 * 16 * 16 * 8 * 9, 16 * 10
TOTAL_MACS = CONV1_MACS + CONV2_MACS + FC_MACS  # 350,368


def padded_nhwc_model(static_pads: bool = False, seed: int = 0) -> onnx.ModelProto:
    """The classifier described above; ``static_pads`` builds the same network with a constant
    ``pads`` initializer, which shape inference resolves (same weights, same MACs)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "B2"),
        numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "Wfc"),
    ]
    nodes = [helper.make_node("Transpose", ["input_0"], ["x"], name="to_nchw", perm=[0, 3, 1, 2])]
    if static_pads:
        inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"))
    else:
        inits += [
            numpy_helper.from_array(np.array([1, 1], np.int64), "one_one"),
            numpy_helper.from_array(np.array([2], np.int64), "two"),
        ]
        nodes += [
            helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
            helper.make_node("Shape", ["x_shape"], ["rank"], name="rank"),
            helper.make_node("Sub", ["rank", "two"], ["spatial"], name="spatial"),
            helper.make_node("ConstantOfShape", ["spatial"], ["zeros"], name="zeros",
                             value=numpy_helper.from_array(np.array([0], np.int64))),
            helper.make_node("Concat", ["zeros", "one_one", "zeros", "one_one"], ["pads"], name="pads", axis=0),
        ]
    nodes += [
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"),
        helper.make_node("Conv", ["xp", "W1"], ["c1"], name="conv1", strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "Wfc"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "padded_nhwc",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_shape_inference_gives_up_after_a_runtime_pad():
    table = static_shapes(padded_nhwc_model(), SHAPE)
    assert table["input_0"] == (1, 32, 32, 3)
    assert table["x"] == (1, 3, 32, 32)  # the Transpose is resolved...
    assert table["pads"] == (8,)  # ...and the pads' length, not their values
    for name in ("xp", "c1", "r1", "c2", "f"):  # everything after the Pad is unk__N
        assert table[name] is None, name
    assert table["W1"] == (8, 3, 3, 3)  # initializers always have dims
    costs = static_costs(padded_nhwc_model(), SHAPE)
    assert costs.macs is None
    assert costs.unknown_nodes == ["conv1", "conv2", "fc"]
    assert costs.unknown == ("c1", "c2", "f", "logits")  # only what counted ops need (not xp, r1, g...)
    assert costs.reason == "ONNX shape inference could not resolve the shapes of 3 counted node(s) (e.g. conv1)"


def test_the_same_network_with_constant_pads_is_inferred():
    costs = static_costs(padded_nhwc_model(static_pads=True), SHAPE)
    assert {c.name: c.macs for c in costs.nodes if c.macs} == {"conv1": CONV1_MACS, "conv2": CONV2_MACS,
                                                               "fc": FC_MACS}
    assert costs.macs == TOTAL_MACS and costs.reason is None and costs.shapes == "inferred"


def test_nhwc_spatial_dims_still_need_input_shape():
    with pytest.raises(OptionError, match="--input-shape input_0=DIMS"):
        static_shapes(padded_nhwc_model())


def test_shape_table_unknown_rank_symbolic_dims_and_duplicates():
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [], "g",
        [vi("a", TensorProto.FLOAT, [2, 3]), vi("b", TensorProto.FLOAT, None), vi("c", TensorProto.FLOAT, ["n", 3])],
        [vi("a", TensorProto.FLOAT, ["m", 3])],  # a second, less precise declaration of "a"
        [numpy_helper.from_array(np.zeros((4, 5), np.float32), "w")],
        value_info=[vi("s", TensorProto.FLOAT, [])],
    )
    assert shape_table(graph) == {"a": (2, 3), "b": None, "c": None, "s": (), "w": (4, 5)}


def _inputs_model(*inputs) -> onnx.ModelProto:
    vis = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs]
    w = numpy_helper.from_array(np.zeros((1,), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Identity", [inputs[0][0]], ["y"])], "g",
                              [*vis, helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_one_input_shape_resolver():
    """User shapes win; a symbolic batch becomes 1; initializers listed as inputs are not inputs;
    any other symbolic dim names the flag that fixes it."""
    model = _inputs_model(("x", ["N", 3, 8, 8]), ("m", [2, 4]))
    assert resolve_input_shapes(model) == {"x": (1, 3, 8, 8), "m": (2, 4)}
    assert resolve_input_shapes(model, {"x": (5, 3, 8, 8)}) == {"x": (5, 3, 8, 8), "m": (2, 4)}
    with pytest.raises(OptionError, match=r"unknown input 'w'"):
        resolve_input_shapes(model, {"w": (1,)})
    with pytest.raises(OptionError, match=r"the model fixes dim 1 to 3"):
        resolve_input_shapes(model, {"x": (1, 4, 8, 8)})
    spatial = _inputs_model(("x", ["N", 3, "H", "W"]))
    with pytest.raises(OptionError, match=r"^input x \[N,3,H,W\] has symbolic dims; pass --input-shape x=DIMS"):
        resolve_input_shapes(spatial)
