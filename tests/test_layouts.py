"""Emission layouts: each one exact at full rank, equivalent to the others at any rank."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convtool.api import convert_model
from convtool.core.factorize import decompose, factors
from convtool.graph.emit import branch_weights, effective_layout, repeat_order, repeat_weights
from convtool.cli.params import parse_rank
from convtool.options import ConvertOptions, RankPolicy
import golden

LAYOUTS = ("multiplier", "repeat", "branches", "pointwise_first")


def conv_model(dims: int = 2, cin: int = 8, cout: int = 6, k: int = 3, group: int = 1, stride: int = 1,
               dilation: int = 1, pads: str = "explicit", bias: bool = True, size: int = 9,
               dtype=np.float32, seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    kernel = [k] * dims
    w = rng.standard_normal((cout, cin // group, *kernel)).astype(dtype)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(dtype), "b"))
        inputs.append("b")
    attrs: dict = {"kernel_shape": kernel, "group": group, "strides": [stride] * dims, "dilations": [dilation] * dims}
    if pads == "explicit":
        attrs["pads"] = [1] * dims + [k // 2] * dims
    elif pads != "none":
        attrs["auto_pad"] = pads
    node = helper.make_node("Conv", inputs, ["y"], name="conv", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", elem, [1, cin] + [size] * dims)],
        [helper.make_tensor_value_info("y", elem, None)], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    return model


def convert(model, layout: str, rank: str = "full"):
    opts = ConvertOptions(rank=parse_rank(rank, None), layout=layout, min_in_channels=1)
    return convert_model(model, opts)


GEOMETRIES = [
    dict(dims=d, stride=s, dilation=dl, pads=p, group=g, bias=b)
    for d, s, dl, p, g, b in itertools.product(
        (1, 2, 3), (1, 2), (1, 2), ("explicit", "SAME_UPPER", "VALID"), (1, 2), (True, False)
    )
    # keep the matrix small but cover every factor in every dimensionality
    if (s, dl, p, g, b) in {(1, 1, "explicit", 1, True), (2, 1, "SAME_UPPER", 2, False), (1, 2, "VALID", 1, False),
                            (2, 2, "explicit", 2, True), (1, 1, "SAME_UPPER", 1, False)}
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_exact_at_full_rank(layout, geo):
    size = 7 if geo["dims"] == 3 else 11
    model = conv_model(size=size, **geo)
    result = convert(model, layout)
    (layer,) = result.record.layers
    assert layer.converted, layer.reason
    assert layer.layout == effective_layout(layout, layer.rank)
    (err,) = golden.compare(model, result.model)
    assert err < 1e-5


@pytest.mark.parametrize("layout", ("repeat", "branches"))
@pytest.mark.parametrize("group", (1, 2))
def test_layouts_equal_multiplier_at_low_rank(layout, group):
    model = conv_model(cin=16, cout=16, group=group, size=12)
    base = convert(model, "multiplier", "2").model
    other = convert(model, layout, "2").model
    assert len(other.graph.node) > len(base.graph.node)
    (err,) = golden.compare(base, other)
    assert err < 1e-5


@pytest.mark.parametrize("layout", ("repeat", "branches"))
def test_multiplier_one_forms_have_only_multiplier_one_depthwise(layout):
    model = conv_model(cin=8, cout=12, group=2, size=10)
    result = convert(model, layout, "3")
    conv_nodes = [n for n in result.model.graph.node if n.op_type == "Conv"]
    inits = {t.name: t for t in result.model.graph.initializer}
    for node in conv_nodes:
        w = inits[node.input[1]]
        group = next(a.i for a in node.attribute if a.name == "group")
        spatial = list(w.dims[2:])
        if any(d > 1 for d in spatial):  # the depthwise conv: one in, one out channel per group
            assert w.dims[1] == 1 and w.dims[0] == group
    if layout == "repeat":
        assert [n.op_type for n in result.model.graph.node].count("Concat") == 1
    else:
        assert [n.op_type for n in result.model.graph.node].count("Sum") == 1


@pytest.mark.parametrize("layout", ("repeat", "branches"))
def test_rank_one_is_the_multiplier_layout(layout):
    model = conv_model()
    result = convert(model, layout, "1")
    assert result.record.layers[0].layout == "multiplier"
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Conv"]


def test_auto_picks_multiplier_one_forms():
    model = conv_model(cin=8, cout=16)  # more outputs than inputs: depthwise-first
    assert convert(model, "auto", "1").record.layers[0].layout == "multiplier"
    assert convert(model, "auto", "2").record.layers[0].layout == "branches"
    wide_in = conv_model(cin=32, cout=8)
    assert convert(wide_in, "auto", "1").record.layers[0].layout == "pointwise_first"
    # at r >= 2 pointwise-first's second conv is not depthwise: auto stays depthwise-first
    assert convert(wide_in, "auto", "2").record.layers[0].layout == "branches"
    strided = conv_model(cin=32, cout=8, stride=2)
    assert convert(strided, "auto", "1").record.layers[0].layout == "multiplier"


def test_float16_kept():
    model = conv_model(dtype=np.float16, cin=8, cout=8)
    for layout in ("repeat", "branches"):
        result = convert(model, layout)
        assert all(t.data_type == TensorProto.FLOAT16 for t in result.model.graph.initializer if t.name != "w.split")
        (err,) = golden.compare(model, result.model)
        assert err < 5e-3


@pytest.mark.parametrize("group,rank", [(1, 2), (2, 3), (4, 2)])
def test_permuted_weights_reconstruct_the_kernel(group, rank):
    rng = np.random.default_rng(1)
    cin, cout, k = 8, 12, (3, 3)
    w = rng.standard_normal((cout, cin // group, *k))
    f = factors(decompose(w, group), rank)
    dw, pw = repeat_weights(f, group)
    order = repeat_order(cin, group, rank)
    assert sorted(order.tolist()) == list(range(cin * rank))
    # repeated channel m copies input channel order[m] // r and carries component order[m] % r
    cin_g = cin // group
    kernel = np.zeros_like(w)
    for o in range(cout):
        gi = o // (cout // group)
        for col in range(cin_g * rank):
            m = gi * cin_g * rank + col
            c = order[m] // rank
            kernel[o, c - gi * cin_g] += pw[o, col, 0, 0] * dw[m, 0]
    full = f.first.reshape(cin, rank, *k)  # noqa: F841 - documents the source layout
    branches = branch_weights(f, group)
    kernel_b = np.zeros_like(w)
    for dw_j, pw_j in branches:
        for o in range(cout):
            gi = o // (cout // group)
            for i in range(cin_g):
                kernel_b[o, i] += pw_j[o, i, 0, 0] * dw_j[gi * cin_g + i, 0]
    from convtool.core.factorize import reconstruct

    ref = reconstruct(f, group)
    np.testing.assert_allclose(kernel, ref, atol=1e-10)
    np.testing.assert_allclose(kernel_b, ref, atol=1e-10)


def test_names_derive_from_the_replaced_node():
    model = conv_model(cin=8, cout=8, group=2)
    result = convert(model, "repeat", "2")
    names = [n.name for n in result.model.graph.node]
    assert names == ["conv.split", "conv.rep", "conv.dw", "conv.pw"]
    assert result.model.graph.node[-1].output[0] == "y"
    assert result.record.layers[0].new_nodes == names


@pytest.mark.parametrize("opset", (11, 13, 18))
def test_repeat_with_groups_at_any_opset(opset):
    model = conv_model(cin=8, cout=8, group=2, opset=opset)
    result = convert(model, "repeat")
    assert result.model.opset_import[0].version == opset
    (err,) = golden.compare(model, result.model)
    assert err < 1e-5
