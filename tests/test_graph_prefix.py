"""graph/prefix.py: the part of a graph that computes some tensors, exposed as outputs."""

from __future__ import annotations

import numpy as np
import onnx
from builders import smooth_inputs, three_conv_model
from golden import run
from onnx import TensorProto, helper

from convtool.graph.prefix import prefix_model


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return out


def test_prefix_keeps_only_what_the_outputs_need_and_computes_the_same():
    model = three_conv_model()
    before = model.SerializeToString()
    prefix = prefix_model(model, ["r1"])
    assert [n.name for n in prefix.graph.node] == ["conv1", "bn1", "relu1"]
    assert {t.name for t in prefix.graph.initializer} == {"conv1.w", "bn1.s", "bn1.b", "bn1.m", "bn1.v"}
    assert [o.name for o in prefix.graph.output] == ["r1"]
    feeds = {"x": smooth_inputs(n=2)["x"]}
    (r1,) = run(prefix, feeds)
    np.testing.assert_allclose(r1, run(with_outputs(model, ["r1"]), feeds)[1], rtol=1e-6, atol=1e-6)
    assert model.SerializeToString() == before


def test_several_outputs_in_the_order_asked():
    model = three_conv_model()
    prefix = prefix_model(model, ["conv2.out", "conv1.out"])
    assert [o.name for o in prefix.graph.output] == ["conv2.out", "conv1.out"]
    assert [n.name for n in prefix.graph.node] == ["conv1", "bn1", "relu1", "conv2"]
    feeds = {"x": smooth_inputs(n=2)["x"]}
    got = run(prefix, feeds)
    want = run(with_outputs(model, ["conv2.out", "conv1.out"]), feeds)[1:]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
