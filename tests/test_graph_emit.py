"""graph/emit.py: every layout exact at full rank and equal to the others at any rank; names
derive from the replaced node through one uniqueness helper; spatial attributes go to the
depthwise Conv only."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from builders import conv_model, make_model
from golden import compare
from onnx import TensorProto, helper

from convtool.convert import convert as convert_step
from convtool.core.factorize import decompose, factors, reconstruct
from convtool.core.plan import effective_layout
from convtool.graph.emit import Namer, branch_weights, repeat_order, repeat_weights
from convtool.options import ConvertOptions, RankPolicy

SPATIAL = ("strides", "pads", "dilations", "auto_pad")


def convert(model, layout: str, rank: int | None = None):
    policy = RankPolicy.full() if rank is None else RankPolicy.fixed(rank)
    return convert_step(model, ConvertOptions(rank=policy, layout=layout, min_in_channels=1))


GEOMETRIES = [
    dict(dims=d, stride=s, dilation=dl, pads=p, group=g, bias=b)
    for d, s, dl, p, g, b in itertools.product(
        (1, 2, 3), (1, 2), (1, 2), ("explicit", "SAME_UPPER", "VALID"), (1, 2), (True, False)
    )
    # keep the matrix small but cover every factor in every dimensionality
    if (s, dl, p, g, b) in {(1, 1, "explicit", 1, True), (2, 1, "SAME_UPPER", 2, False), (1, 2, "VALID", 1, False),
                            (2, 2, "explicit", 2, True), (1, 1, "SAME_UPPER", 1, False)}
]


# test_convert_golden.py runs the multiplier layout over the full geometry matrix
@pytest.mark.parametrize("layout", ("repeat", "branches", "pointwise_first"))
@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_exact_at_full_rank(layout, geo):
    size = 7 if geo["dims"] == 3 else 11
    model = conv_model(size=size, cout=6, batch=1, **geo)
    result = convert(model, layout)
    (layer,) = result.record.layers
    assert layer.converted, layer.reason
    assert layer.layout == effective_layout(layout, layer.rank)
    (err,) = compare(model, result.model)
    assert err < 1e-5


@pytest.mark.parametrize("layout", ("repeat", "branches"))
@pytest.mark.parametrize("group", (1, 2))
def test_layouts_equal_multiplier_at_low_rank(layout, group):
    model = conv_model(cin=16, cout=16, group=group, size=12)
    base = convert(model, "multiplier", 2).model
    other = convert(model, layout, 2).model
    assert len(other.graph.node) > len(base.graph.node)
    (err,) = compare(base, other)
    assert err < 1e-5


@pytest.mark.parametrize("layout", ("repeat", "branches"))
def test_multiplier_one_forms_have_only_multiplier_one_depthwise(layout):
    model = conv_model(cin=8, cout=12, group=2, size=10)
    result = convert(model, layout, 3)
    inits = {t.name: t for t in result.model.graph.initializer}
    spatial_convs = 0
    for node in result.model.graph.node:
        if node.op_type != "Conv":
            continue
        w = inits[node.input[1]]
        group = next(a.i for a in node.attribute if a.name == "group")
        if any(d > 1 for d in w.dims[2:]):  # the depthwise conv: one in, one out channel per group
            spatial_convs += 1
            assert w.dims[1] == 1 and w.dims[0] == group
    ops = [n.op_type for n in result.model.graph.node]
    assert spatial_convs == (1 if layout == "repeat" else 3)
    assert ops.count("Concat" if layout == "repeat" else "Sum") == 1


@pytest.mark.parametrize("layout", ("repeat", "branches"))
def test_rank_one_is_the_multiplier_layout(layout):
    result = convert(conv_model(), layout, 1)
    assert result.record.layers[0].layout == "multiplier"
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Conv"]


def test_float16_kept():
    model = conv_model(dtype=np.float16, cin=8, cout=8)
    for layout in ("repeat", "branches"):
        result = convert(model, layout)
        floats = [t for t in result.model.graph.initializer if t.name != "W.split"]
        assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)
        (err,) = compare(model, result.model)
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
    kernel_b = np.zeros_like(w)
    for dw_j, pw_j in branch_weights(f, group):
        for o in range(cout):
            gi = o // (cout // group)
            for i in range(cin_g):
                kernel_b[o, i] += pw_j[o, i, 0, 0] * dw_j[gi * cin_g + i, 0]
    ref = reconstruct(f, group)
    np.testing.assert_allclose(kernel, ref, atol=1e-10)
    np.testing.assert_allclose(kernel_b, ref, atol=1e-10)


def test_names_derive_from_the_replaced_node():
    model = conv_model(cin=8, cout=8, group=2)
    result = convert(model, "repeat", 2)
    names = [n.name for n in result.model.graph.node]
    assert names == ["conv.split", "conv.rep", "conv.dw", "conv.pw"]
    assert result.model.graph.node[-1].output[0] == "y"
    assert result.record.layers[0].new_nodes == names
    assert {t.name for t in result.model.graph.initializer} == {"W.split", "W.dw", "W.pw", "W.bias"}


@pytest.mark.parametrize("layout,expected", [
    ("multiplier", ["conv.dw", "conv.pw"]),
    ("pointwise_first", ["conv.pw", "conv.dw"]),
    ("branches", ["conv.b0.dw", "conv.b0.pw", "conv.b1.dw", "conv.b1.pw", "conv.sum"]),
])
def test_node_names_per_layout(layout, expected):
    result = convert(conv_model(cin=16, cout=8), layout, 2 if layout == "branches" else 1)
    assert result.record.layers[0].new_nodes == expected  # emission order; the graph is toposorted
    assert sorted(n.name for n in result.model.graph.node) == sorted(expected)
    assert result.model.graph.node[-1].output[0] == "y"


def test_namer_is_deterministic_and_unique():
    namer = Namer(["a", "a_1", "b"])
    assert [namer("a"), namer("a"), namer("b"), namer("c"), namer("c")] == ["a_2", "a_3", "b_1", "c", "c_1"]


def test_new_names_avoid_existing_tensors_and_nodes():
    """A graph that already uses the names a replacement would take gets suffixed names, and
    still computes the same."""
    model = conv_model(cin=8, cout=8, batch=1)
    graph = model.graph
    graph.node.append(helper.make_node("Identity", ["y"], ["y.dw"], name="conv.dw"))
    graph.output.append(helper.make_tensor_value_info("y.dw", TensorProto.FLOAT, None))
    model = onnx.shape_inference.infer_shapes(make_model(graph))
    result = convert(model, "multiplier")
    nodes = {n.name: n for n in result.model.graph.node}
    assert set(nodes) == {"conv.dw", "conv.dw_1", "conv.pw"}
    assert nodes["conv.dw"].op_type == "Identity" and nodes["conv.dw_1"].op_type == "Conv"
    assert nodes["conv.dw_1"].output[0] == "y.dw_1" and nodes["conv.pw"].input[0] == "y.dw_1"
    assert max(compare(model, result.model)) < 1e-5


@pytest.mark.parametrize("layout", ("multiplier", "repeat", "branches", "pointwise_first"))
@pytest.mark.parametrize("pads", ("explicit", "SAME_UPPER"))
def test_spatial_attributes_go_to_the_depthwise_conv_only(layout, pads):
    model = conv_model(cin=16, cout=8, group=2, stride=2, dilation=1 if pads == "SAME_UPPER" else 2, pads=pads,
                       size=12)
    original = {a.name: helper.get_attribute_value(a) for a in model.graph.node[0].attribute if a.name in SPATIAL}
    result = convert(model, layout, 2)
    inits = {t.name: t for t in result.model.graph.initializer}
    kinds = []
    for node in result.model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        spatial = {k: v for k, v in attrs.items() if k in SPATIAL}
        if all(d == 1 for d in inits[node.input[1]].dims[2:]):
            kinds.append("1x1")
            assert spatial == {} and attrs["kernel_shape"] == [1, 1]
        else:
            kinds.append("spatial")
            assert spatial == original and attrs["kernel_shape"] == [3, 3]
    assert "1x1" in kinds and "spatial" in kinds
    (err,) = compare(model, result.model)  # random iid inputs: the output error tracks the kernel's
    assert err <= 1.5 * result.record.layers[0].weight_error + 1e-4


@pytest.mark.parametrize("opset", (11, 13, 18))
def test_repeat_with_groups_at_any_opset(opset):
    model = conv_model(cin=8, cout=8, group=2, opset=opset)
    result = convert(model, "repeat")
    assert result.model.opset_import[0].version == opset
    split = next(n for n in result.model.graph.node if n.op_type == "Split")
    # Split takes its sizes as an input from opset 13 on, as an attribute before
    assert (len(split.input) == 2) == (opset >= 13)
    (err,) = compare(model, result.model)
    assert err < 1e-5
