"""graph/select.py: every rejected Conv comes with the reason a user reads in the table."""

from __future__ import annotations

import numpy as np
from builders import conv_model, make_model, with_output_shapes
from golden import compare
from onnx import helper, numpy_helper

from convtool.api import convert_model
from convtool.options import ConvertOptions, RankPolicy


def _model(nodes, inits, inputs=None, cin=8):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", 1, [1, cin, 8, 8])] + (inputs or []),
        [helper.make_tensor_value_info(n.output[0], 1, None) for n in nodes if n.output[0].startswith("y")],
        initializer=inits)
    return with_output_shapes(make_model(graph))


def _reasons(model, **kw):
    opts = ConvertOptions(**{"min_in_channels": 1, **kw})
    return {layer.name: (layer.status, layer.reason) for layer in convert_model(model, opts).record.layers}


def test_skip_reasons():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w1x1", f(8, 8, 1, 1)), ("wdw", f(8, 1, 3, 3)), ("wshared", f(8, 8, 3, 3)), ("wok", f(8, 8, 3, 3)),
        ("wq", rng.integers(-5, 5, (8, 8, 3, 3)).astype(np.int8)), ("sc", np.float32(0.1)), ("zp", np.int8(0)),
    ]]
    nodes = [
        helper.make_node("Conv", ["x", "w1x1"], ["y1"], name="pointwise", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "wdw"], ["y2"], name="depthwise", kernel_shape=[3, 3], group=8),
        helper.make_node("Conv", ["x", "wshared"], ["y3"], name="shared_a", kernel_shape=[3, 3]),
        helper.make_node("Conv", ["x", "wshared"], ["y4"], name="shared_b", kernel_shape=[3, 3]),
        helper.make_node("Conv", ["x", "wgraph"], ["y5"], name="graph_input", kernel_shape=[3, 3]),
        helper.make_node("DequantizeLinear", ["wq", "sc", "zp"], ["wdq"]),
        helper.make_node("Conv", ["x", "wdq"], ["y6"], name="quantized", kernel_shape=[3, 3]),
        helper.make_node("Conv", ["x", "wok"], ["y7"], name="good", kernel_shape=[3, 3]),
    ]
    model = _model(nodes, inits, [helper.make_tensor_value_info("wgraph", 1, [8, 8, 3, 3])])
    reasons = _reasons(model)
    assert reasons == {
        "pointwise": ("skipped", "kernel is 1x1"),
        "depthwise": ("skipped", "already depthwise"),
        "shared_a": ("skipped", "weight shared with another node"),
        "shared_b": ("skipped", "weight shared with another node"),
        "graph_input": ("skipped", "weight is a graph input, not a constant"),
        "quantized": ("skipped", "weight is quantized (DequantizeLinear)"),
        "good": ("converted", None),
    }


def test_rank_that_saves_nothing_is_skipped_but_full_rank_converts():
    model = conv_model(2, cin=8, cout=8)
    assert _reasons(model, rank=RankPolicy("fixed", 8)) == {"conv": ("skipped", "rank 8 would not reduce MACs (x1.89)")}
    assert _reasons(model, rank=RankPolicy("full", 0)) == {"conv": ("converted", None)}


def test_stem_and_filters():
    model = conv_model(2, cin=4, cout=8)
    assert _reasons(model, min_in_channels=8)["conv"] == (
        "skipped", "stem conv: 4 input channels < 8 (--min-in-channels)")
    assert _reasons(model, min_in_channels=4)["conv"] == ("converted", None)
    assert _reasons(model, exclude=("^co",))["conv"] == ("skipped", "excluded by --exclude '^co'")
    assert _reasons(model, include=("nomatch",))["conv"] == ("skipped", "not matched by --include")
    assert _reasons(model, include=("conv",))["conv"] == ("converted", None)


def test_unconverted_model_is_copied_unchanged():
    model = conv_model(2, cin=4, cout=8)
    result = convert_model(model, ConvertOptions())
    assert result.record.totals.converted == 0
    assert any("no Conv qualified" in w for w in result.record.warnings)
    assert result.model.SerializeToString() == model.SerializeToString()


def test_mixed_graph_runs_after_partial_conversion():
    model = conv_model(2, cin=8, cout=16, batchnorm=True)
    result = convert_model(model, ConvertOptions(rank=RankPolicy("fixed", 2)))
    assert result.record.layers[0].rank == 2
    (err,) = compare(model, result.model)
    assert err <= 1.5 * result.record.layers[0].weight_error


def test_shared_bias_and_unnamed_convs_convert():
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (8, 8, 3, 3)), ("w2", (8, 8, 3, 3)), ("b", (8,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b"], ["y1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y1", "w2", "b"], ["y2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = _model(nodes, inits)
    result = convert_model(model, ConvertOptions(rank=RankPolicy("full", 0)))
    assert [(layer.name, layer.status) for layer in result.record.layers] == [
        ("<Conv -> y1>", "converted"), ("<Conv -> y2>", "converted")]
    assert max(compare(model, result.model)) < 1e-5
