"""convert.py, golden: converted models compute what the originals compute (onnxruntime), over
stride x dilation x pads x group x bias x 1-D/2-D/3-D, float16, BatchNormalization folding,
old IR versions and weights computed by Constant nodes or foldable subgraphs."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from builders import conv_model, with_output_shapes
from golden import compare
from onnx import TensorProto, helper, numpy_helper

from convtool.convert import convert
from convtool.options import ConvertOptions, RankPolicy

# the multiplier layout over the whole matrix (test_graph_emit.py runs the others on a subset)
FULL = ConvertOptions(rank=RankPolicy("full", 0), min_in_channels=1, layout="multiplier")

GEOMETRIES = list(itertools.product(
    (1, 2, 3),                      # dims
    (1, 2),                         # stride
    (1, 2),                         # dilation
    ("explicit", "SAME_UPPER", None),  # pads / auto_pad
    (1, 2),                         # groups
    (True, False),                  # bias
))
# onnxruntime itself rejects auto_pad SAME_* together with dilation > 1
GEOMETRIES = [g for g in GEOMETRIES if not (g[3] == "SAME_UPPER" and g[2] > 1)]


@pytest.mark.parametrize("dims,stride,dilation,pads,group,bias", GEOMETRIES)
def test_full_rank_is_exact(dims, stride, dilation, pads, group, bias):
    model = conv_model(dims, stride=stride, dilation=dilation, pads=pads, group=group, bias=bias)
    result = convert(model, FULL)
    assert result.record.totals.converted == 1, result.record.layers[0].reason
    (err,) = compare(model, result.model)
    assert err < 1e-5


@pytest.mark.parametrize("dims", (1, 2, 3))
def test_full_rank_float16(dims):
    model = conv_model(dims, dtype=np.float16, group=2)
    result = convert(model, FULL)
    conv_inits = [t for t in result.model.graph.initializer if t.name.startswith("W.")]
    assert conv_inits and all(t.data_type == TensorProto.FLOAT16 for t in conv_inits)
    (err,) = compare(model, result.model)
    assert err < 5e-3


@pytest.mark.parametrize("orientation", ("multiplier", "pointwise_first"))
@pytest.mark.parametrize("batchnorm", (False, True))
def test_low_rank_error_follows_weight_error(orientation, batchnorm):
    model = conv_model(2, cin=16, cout=16, size=12, batchnorm=batchnorm)
    errors = []
    for r in (1, 2, 4, 9):
        opts = ConvertOptions(rank=RankPolicy("fixed", r) if r < 9 else RankPolicy("full", 0),
                              min_in_channels=1, layout=orientation)
        result = convert(model, opts)
        layer = result.record.layers[0]
        assert layer.status == "converted" and layer.rank == r
        (err,) = compare(model, result.model)
        # random iid inputs: the output error tracks the kernel's relative error
        assert err <= 1.5 * layer.weight_error + 1e-4, (r, err, layer.weight_error)
        errors.append(err)
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-5


def test_batchnorm_is_folded_and_output_name_kept():
    model = conv_model(2, batchnorm=True)
    result = convert(model, FULL)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == ["Conv", "Conv"]
    assert result.model.graph.node[-1].output[0] == "y"
    assert result.record.layers[0].folded_batchnorm == "bn"
    assert compare(model, result.model)[0] < 1e-5


def test_opset_ir_version_and_metadata_kept():
    model = conv_model(2, opset=13, ir_version=7)
    model.producer_name = "someone"
    onnx.helper.set_model_props(model, {"k": "v"})
    out = convert(model, FULL).model
    assert out.ir_version == 7
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 13)]
    assert out.producer_name == "someone"
    assert {p.key: p.value for p in out.metadata_props} == {"k": "v"}


def test_old_ir_version_lists_initializers_as_inputs():
    model = conv_model(2, opset=9, ir_version=8)
    model.ir_version = 3
    for init in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    result = convert(model, FULL)
    inputs = {i.name for i in result.model.graph.input}
    inits = {t.name for t in result.model.graph.initializer}
    assert "W" not in inputs and "W" not in inits  # dropped together
    assert inits <= inputs
    assert compare(model, result.model)[0] < 1e-5


def test_constant_node_and_folded_subgraph_weights():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w_flat"], value=numpy_helper.from_array(w.reshape(8, -1), "wv")),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array(w.shape, np.int64), "sv")),
        helper.make_node("Reshape", ["w_flat", "shape"], ["W1"]),
        helper.make_node("Conv", ["x", "W1"], ["h"], name="from_subgraph", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["W2"], value=numpy_helper.from_array(w, "w2")),
        helper.make_node("Conv", ["h", "W2"], ["y"], name="from_constant", kernel_shape=[3, 3]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 8, 10, 10])],
                              [helper.make_tensor_value_info("y", 1, None)])
    model = with_output_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    result = convert(model, FULL)
    assert [layer.status for layer in result.record.layers] == ["converted", "converted"]
    assert compare(model, result.model)[0] < 1e-5


def test_sample_models_exact_at_full_rank(sample_model):
    model = onnx.load(sample_model)
    result = convert(model, ConvertOptions(rank=RankPolicy("full", 0)))
    assert result.record.totals.converted >= 5
    assert max(compare(model, result.model)) < 1e-5
