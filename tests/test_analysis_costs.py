"""Parameter and MAC counts against hand-computed values, and static-shape handling."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convtool.analysis.costs import NodeCost, costs_from_shapes, model_params, node_costs, shape_needs, static_costs
from convtool.analysis.shapes import with_static_shapes
from convtool.cli.params import parse_input_shapes
from convtool.errors import OptionError


def _model(nodes, inputs, outputs, inits=(), opset=17, ir=8):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def _conv_model(x_shape, w_shape, bias=True, **attrs):
    w = numpy_helper.from_array(np.zeros(w_shape, np.float32), "W")
    inits = [w]
    ins = ["X", "W"]
    if bias:
        inits.append(numpy_helper.from_array(np.zeros(w_shape[0], np.float32), "B"))
        ins.append("B")
    node = helper.make_node("Conv", ins, ["Y"], name="conv", **attrs)
    return _model(
        [node],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        inits,
    )


# (x_shape, w_shape, attrs, expected output spatial dims), MACs computed by hand below.
CONV_CASES = {
    "2d-3x3-same": ((1, 16, 32, 32), (32, 16, 3, 3), dict(pads=[1, 1, 1, 1]), (32, 32)),
    "2d-stride2": ((2, 8, 15, 15), (4, 8, 3, 3), dict(strides=[2, 2]), (7, 7)),
    "2d-dilation2-pads": ((1, 4, 10, 10), (6, 4, 3, 3), dict(dilations=[2, 2], pads=[1, 1, 1, 1]), (8, 8)),
    "2d-grouped": ((1, 8, 6, 6), (12, 2, 3, 3), dict(group=4), (4, 4)),
    "2d-depthwise": ((1, 8, 6, 6), (8, 1, 3, 3), dict(group=8, pads=[1, 1, 1, 1]), (6, 6)),
    "2d-auto-pad-same": ((1, 3, 9, 9), (5, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2]), (5, 5)),
    "1d": ((1, 4, 20), (8, 4, 5), dict(strides=[3]), (6,)),
    "3d": ((1, 2, 4, 6, 6), (3, 2, 2, 3, 3), dict(pads=[0, 1, 1, 0, 1, 1]), (3, 6, 6)),
}


@pytest.mark.parametrize("case", CONV_CASES, ids=list(CONV_CASES))
def test_conv_macs_and_params_match_hand_computation(case):
    x_shape, w_shape, attrs, out_spatial = CONV_CASES[case]
    model = _conv_model(x_shape, w_shape, **attrs)
    n, cin = x_shape[:2]
    cout, cin_g = w_shape[:2]
    group = attrs.get("group", 1)
    assert cin_g == cin // group
    expected_macs = n * math.prod(out_spatial) * cout * (cin // group) * math.prod(w_shape[2:])
    expected_params = math.prod(w_shape) + cout
    [cost] = node_costs(model)
    assert cost == NodeCost("conv", "Conv", expected_params, expected_macs)
    assert cost.flops == 2 * expected_macs
    assert model_macs(model) == expected_macs
    assert model_params(model) == expected_params


def test_hand_numbers_for_a_familiar_layer():
    # ResNet stem-like: 1x64x56x56 -> 64, 3x3, pad 1: 56*56*64*64*9 = 115,605,504 MACs.
    model = _conv_model((1, 64, 56, 56), (64, 64, 3, 3), bias=False, pads=[1, 1, 1, 1])
    assert model_macs(model) == 115_605_504
    assert model_params(model) == 36_864


def test_conv_transpose_counts_input_side():
    # X 1x4x5x5, W [Cin=4, Cout/g=3, 3, 3], stride 2: 25 * 4 * 3 * 9 = 2700 MACs.
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "W")
    node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], name="up", strides=[2, 2])
    model = _model(
        [node],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [w],
    )
    assert node_costs(model) == [NodeCost("up", "ConvTranspose", 108, 2700)]


def test_gemm_matmul_and_elementwise():
    a = numpy_helper.from_array(np.zeros((20, 10), np.float32), "Wg")  # transB: [N=20, K=10]
    c = numpy_helper.from_array(np.zeros((20,), np.float32), "Cg")
    m = numpy_helper.from_array(np.zeros((20, 7), np.float32), "Wm")
    nodes = [
        helper.make_node("Gemm", ["X", "Wg", "Cg"], ["G"], name="fc", transB=1),  # 3x10 @ 10x20
        helper.make_node("Relu", ["G"], ["R"], name="relu"),
        helper.make_node("MatMul", ["R", "Wm"], ["M"], name="mm"),  # 3x20 @ 20x7
        helper.make_node("MatMul", ["B1", "B2"], ["Y"], name="bmm"),  # 2x5x3x4 @ 4x6 -> 2x5x3x6
    ]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 10]),
            helper.make_tensor_value_info("B1", TensorProto.FLOAT, [2, 5, 3, 4]),
            helper.make_tensor_value_info("B2", TensorProto.FLOAT, [4, 6]),
        ],
        [
            helper.make_tensor_value_info("M", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
        ],
        [a, c, m],
    )
    costs = {c.name: c for c in node_costs(model)}
    assert costs["fc"] == NodeCost("fc", "Gemm", 220, 3 * 20 * 10)
    assert costs["relu"] == NodeCost("relu", "Relu", 0, 0)
    assert costs["mm"] == NodeCost("mm", "MatMul", 140, 3 * 7 * 20)
    assert costs["bmm"] == NodeCost("bmm", "MatMul", 0, 2 * 5 * 3 * 6 * 4)
    assert [c.name for c in node_costs(model)] == ["fc", "relu", "mm", "bmm"]
    assert model_macs(model) == 600 + 420 + 720


def test_constant_nodes_count_as_params_and_shared_weights_once():
    w = numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "W")
    const = helper.make_node(
        "Constant", [], ["W2"], name="w2", value=numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32))
    )
    shape = helper.make_node("Constant", [], ["S"], name="s", value_ints=[1, -1])
    nodes = [
        const,
        shape,
        helper.make_node("Conv", ["X", "W"], ["A"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["A", "W"], ["B"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["B", "W2"], ["C"], name="c3"),
        helper.make_node("Reshape", ["C", "S"], ["Y"], name="flat"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [w],
    )
    costs = {c.name: c for c in node_costs(model)}
    assert costs["c1"].params == costs["c2"].params == 144
    assert costs["c3"] == NodeCost("c3", "Conv", 16, 25 * 4 * 4)
    assert costs["flat"].params == 2
    assert model_params(model) == 144 + 16 + 2
    assert model_macs(model) == 2 * 25 * 4 * 4 * 9 + 25 * 16


def test_symbolic_batch_defaults_to_one_and_user_shapes_apply():
    model = _conv_model(("N", 3, 8, 8), (4, 3, 3, 3), bias=False)
    assert model_macs(model) == 6 * 6 * 4 * 3 * 9
    assert model_macs(model, {"X": (2, 3, 8, 8)}) == 2 * 6 * 6 * 4 * 3 * 9
    static = with_static_shapes(model, {"X": [2, 3, 8, 8]})
    assert [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 8, 8]
    assert [d.dim_value for d in static.graph.output[0].type.tensor_type.shape.dim] == [2, 4, 6, 6]
    # the caller's model is untouched
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert not model.graph.output[0].type.tensor_type.HasField("shape")


def test_symbolic_spatial_dims_need_input_shape():
    model = _conv_model(("N", 3, "H", "W"), (4, 3, 3, 3))
    with pytest.raises(OptionError, match=r"--input-shape X=DIMS"):
        node_costs(model)
    assert model_macs(model, parse_input_shapes(["X=1,3,10,10"])) == 8 * 8 * 4 * 3 * 9


def test_input_shape_errors():
    model = _conv_model((1, 3, 8, 8), (4, 3, 3, 3))
    with pytest.raises(OptionError, match="unknown input 'nope'.*'X'"):
        with_static_shapes(model, {"nope": (1,)})
    with pytest.raises(OptionError, match="rank 4"):
        with_static_shapes(model, {"X": (1, 3, 8)})
    for bad in ["X", "=1,2", "X=1,a", "X=0,3"]:
        with pytest.raises(OptionError):
            parse_input_shapes([bad])
    with pytest.raises(OptionError, match="twice"):
        parse_input_shapes(["X=1", "X=2"])
    assert parse_input_shapes(["a=b=1,2", "s=", "x=1x3x4"]) == {"a=b": (1, 2), "s": (), "x": (1, 3, 4)}


def test_old_ir_initializers_listed_as_inputs_are_constants():
    model = _conv_model((1, 3, 8, 8), (4, 3, 3, 3), bias=False)
    model.ir_version = 3
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3, 3, 3]))
    assert model_macs(model) == 6 * 6 * 4 * 3 * 9
    with pytest.raises(OptionError, match="unknown input 'W'"):
        with_static_shapes(model, {"W": (4, 3, 3, 3)})


def test_large_weights_are_not_needed_for_inference():
    # weights above the skeleton threshold lose their data for inference; counts are unchanged
    model = _conv_model((1, 64, 8, 8), (128, 64, 3, 3), pads=[1, 1, 1, 1])
    static = with_static_shapes(model)
    assert static.graph.initializer[0].raw_data == model.graph.initializer[0].raw_data
    onnx.checker.check_model(static, full_check=True)
    assert model_macs(model) == 64 * 128 * 64 * 9


def test_unknown_shapes_give_none():
    nodes = [
        helper.make_node("NonZero", ["X"], ["I"], name="nz"),
        helper.make_node("Cast", ["I"], ["F"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["F", "F2"], ["Y"], name="mm"),
    ]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("F2", TensorProto.FLOAT, [5, 3]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    costs = {c.name: c for c in node_costs(model)}
    assert costs["mm"].macs is None and costs["mm"].flops is None
    assert model_macs(model) is None  # unknown is never 0, nor a partial sum
    static = static_costs(model)
    assert static.macs is None and static.shapes == "inferred"
    assert static.unknown == ("F",)  # NonZero gives F [1, ?]; the MatMul output Y [1, 3] is known
    assert static.unknown_nodes == ["mm"]
    assert static.reason == "ONNX shape inference could not resolve the shapes of 1 counted node(s) (e.g. mm)"


def test_counts_from_a_given_shape_table():
    # the same graph counted from shapes known some other way (e.g. observed with onnxruntime)
    nodes = [
        helper.make_node("NonZero", ["X"], ["I"], name="nz"),
        helper.make_node("Cast", ["I"], ["F"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["F", "F2"], ["Y"], name="mm"),
    ]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("F2", TensorProto.FLOAT, [5, 3]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    assert [shape_needs(n) for n in model.graph.node] == [(), (), ("F", "Y")]
    costs = costs_from_shapes(model, {"F": (1, 5), "Y": (1, 3)}, source="observed")
    assert costs.macs == 15 and costs.reason is None and costs.unknown == ()
    assert costs.shapes == "observed"
    half = costs_from_shapes(model, {"F": (1, 5)}, source="observed")
    assert half.macs is None and half.unknown == ("Y",)
    assert half.reason is not None and "nor a run with onnxruntime" in half.reason


def test_shape_needs_per_op():
    conv = helper.make_node("Conv", ["X", "W", "B"], ["Y"])
    convt = helper.make_node("ConvTranspose", ["X", "W"], ["Y"])
    gemm = helper.make_node("Gemm", ["A", "B", "C"], ["Y"])
    custom = helper.make_node("Conv", ["X", "W"], ["Y"], domain="com.example")
    assert shape_needs(conv) == ("Y", "W")
    assert shape_needs(convt) == ("X", "W")
    assert shape_needs(gemm) == ("A", "Y")
    assert shape_needs(custom) == () and shape_needs(helper.make_node("Relu", ["X"], ["Y"])) == ()
    assert shape_needs(helper.make_node("Conv", ["X"], ["Y"])) == ("Y", "")  # malformed: never known


def test_input_shape_cannot_contradict_static_dims():
    model = _conv_model((1, 3, 8, 8), (4, 3, 3, 3))
    with pytest.raises(OptionError, match="fixes dim 2 to 8"):
        with_static_shapes(model, {"X": (1, 3, 9, 8)})
    assert model_macs(model, {"X": (1, 3, 8, 8)}) == 6 * 6 * 4 * 3 * 9


def model_macs(model, input_shapes=None):
    """Whole-model MACs from static shapes (what these tests pin)."""
    return static_costs(model, input_shapes).macs
