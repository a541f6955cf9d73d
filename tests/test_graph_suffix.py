"""graph/suffix.py: the part of a graph downstream of one tensor equals the full model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import make_model, smooth_inputs, three_conv_model
from golden import run
from onnx import TensorProto, helper, numpy_helper

from convtool.errors import ConvToolError
from convtool.graph.prefix import prefix_model
from convtool.graph.suffix import suffix_model


def skip_model() -> onnx.ModelProto:
    """x -> a (Relu) -> b (Conv) -> c = a + b (skip) -> y; plus an output ``side`` from ``a`` only."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.2, "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Conv", ["a", "w"], ["b"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "b"], ["c"], name="add"),
        helper.make_node("Sigmoid", ["c"], ["y"], name="sig"),
        helper.make_node("Neg", ["a"], ["side"], name="neg"),
    ]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4, 5, 5])  # noqa: E731
    graph = helper.make_graph(nodes, "skip", [vi("x")], [vi("y"), vi("side")], [w])
    return make_model(graph)


def test_suffix_of_a_skip_connection_takes_the_skip_as_a_boundary_input_and_computes_the_same():
    model = skip_model()
    suf = suffix_model(model, "b")
    assert suf.inputs == ("b", "a")
    assert suf.outputs == ("y",)  # "side" does not depend on b
    assert [n.name for n in suf.model.graph.node] == ["add", "sig"]
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5)).astype(np.float32)
    a, b = run(prefix_model(model, ["a", "b"]), {"x": x})
    (y,) = run(suf.model, {"b": b, "a": a})
    np.testing.assert_allclose(y, run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)
    onnx.checker.check_model(suf.model, full_check=True)


def test_suffix_of_a_chain_equals_the_full_model():
    model = three_conv_model()
    suf = suffix_model(model, "r1")
    assert suf.inputs == ("r1",)
    feeds = {"x": smooth_inputs(n=3)["x"]}
    (r1,) = run(prefix_model(model, ["r1"]), feeds)
    np.testing.assert_allclose(run(suf.model, {"r1": r1})[0], run(model, feeds)[0], rtol=1e-5, atol=1e-5)
    assert "conv1.w" not in {t.name for t in suf.model.graph.initializer}


def test_the_caller_model_is_untouched_and_subgraphs_are_refused():
    model = three_conv_model()
    before = model.SerializeToString()
    suffix_model(model, "r1")
    assert model.SerializeToString() == before
    then = helper.make_graph([helper.make_node("Identity", ["r1"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    cond = helper.make_node("If", ["c"], ["z"], then_branch=then, else_branch=then)
    looped = onnx.ModelProto()
    looped.CopyFrom(model)
    looped.graph.node.append(cond)
    with pytest.raises(ConvToolError, match="subgraphs"):
        suffix_model(looped, "r1")
