"""graph/equalize.py: every layout's pairs are found, equalized, and the model computes the same."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import make_model, smooth_inputs, three_conv_model
from golden import run
from onnx import TensorProto, helper, numpy_helper

from convtool.api import convert_model
from convtool.graph.equalize import equalize_model, layer_pairs
from convtool.graph.weights import read
from convtool.options import ConvertOptions, RankPolicy
from convtool.records import LayerChange


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize("layout,rank,pairs_per_layer", [
    ("multiplier", 1, 1), ("multiplier", 3, 1), ("repeat", 2, 1), ("branches", 3, 3), ("pointwise_first", 2, 1),
])
def test_equalized_model_is_exact_in_float(layout, rank, pairs_per_layer):
    model = three_conv_model()
    result = convert_model(model, ConvertOptions(rank=RankPolicy("fixed", rank), layout=layout))
    converted = [layer for layer in result.record.layers if layer.converted]
    assert converted
    before = onnx.ModelProto()
    before.CopyFrom(result.model)
    equalized, pairs = equalize_model(result.model, result.record.layers)
    assert result.model == before  # functional: the caller's model is not modified
    assert len(pairs) == pairs_per_layer * len(converted)
    assert all(p.imbalance_after == pytest.approx(1.0) for p in pairs)
    assert any(p.imbalance_before > 1.01 for p in pairs)
    onnx.checker.check_model(equalized, full_check=True)
    x = smooth_inputs(4)
    for a, b in zip(run(result.model, x), run(equalized, x)):
        assert _rel(a, b) < 1e-5
    changed = [p.first for p in pairs if not np.array_equal(read(equalized, _weight(equalized, p.first)),
                                                               read(result.model, _weight(result.model, p.first)))]
    assert changed  # the weights really moved


def _weight(model: onnx.ModelProto, node: str) -> str:
    return next(n.input[1] for n in model.graph.node if n.name == node)


def test_a_bias_on_the_first_conv_is_scaled_with_it():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 1, 3, 3)).astype(np.float32), "dw.w"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "dw.b"),
             numpy_helper.from_array((rng.standard_normal((4, 6, 1, 1)) * np.array([1, 50, 1, 50, 0.1, 1])[None, :, None, None]
                                      ).astype(np.float32), "pw.w")]
    nodes = [helper.make_node("Conv", ["x", "dw.w", "dw.b"], ["m"], name="l.dw", group=3, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["m", "pw.w"], ["y"], name="l.pw")]
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], inits)
    model = make_model(graph)
    layer = LayerChange("l", "converted", None, [3, 3], 3, 4, 1, rank=2, new_nodes=["l.dw", "l.pw"])
    equalized, pairs = equalize_model(model, [layer])
    assert [(p.first, p.second) for p in pairs] == [("l.dw", "l.pw")]
    assert not np.allclose(read(equalized, "dw.b"), read(model, "dw.b"))
    x = {"x": rng.standard_normal((1, 3, 5, 5)).astype(np.float32)}
    assert _rel(run(model, x)[0], run(equalized, x)[0]) < 1e-5


def test_no_pair_when_the_intermediate_tensor_is_used_elsewhere():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 1, 3, 3)).astype(np.float32), "dw.w"),
             numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "pw.w")]
    nodes = [helper.make_node("Conv", ["x", "dw.w"], ["m"], name="l.dw", group=3, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["m", "pw.w"], ["y"], name="l.pw")]
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5]),
                               helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 3, 5, 5])], inits)
    model = make_model(graph)
    assert layer_pairs(model, ["l.dw", "l.pw"]) == []  # rescaling would change the output m
