"""convert.py: the pure step ``convert(model, options, overrides) -> Conversion`` and ``plan``.

It never mutates the caller's model, follows a driver's per-layer overrides (rank 0 leaves a
layer with its reason; a layout override changes only that layer), and records one layer per
Conv in graph order.  Numerical equivalence is in test_convert_golden.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import conv_model, make_model, three_conv_model, with_output_shapes
from golden import compare
from onnx import TensorProto, helper, numpy_helper

from convtool.analysis.costs import model_params
from convtool.convert import convert, plan
from convtool.core.plan import Override
from convtool.core.skip import Skip
from convtool.options import ConvertOptions, RankPolicy

RANK2 = ConvertOptions(rank=RankPolicy.fixed(2), layout="multiplier", min_in_channels=1)


def test_caller_model_is_not_mutated():
    model = conv_model(batchnorm=True)
    before = model.SerializeToString()
    for layout in ("multiplier", "repeat", "branches", "pointwise_first", "auto"):
        convert(model, ConvertOptions(rank=RankPolicy.fixed(2), layout=layout, min_in_channels=1))
    convert(model, RANK2, {"conv": Override(rank=0, reason="kept")})
    assert model.SerializeToString() == before


def test_big_untouched_weights_are_carried_over_and_the_caller_keeps_its_own():
    """Untouched large constants are exported through data-free stand-ins (the weights are
    copied in once, after export); the converted model has the real values, the caller's
    model its own."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((128, 128, 1, 1)).astype(np.float32)  # 64 KiB: a 1x1 conv, never converted
    w3 = rng.standard_normal((128, 128, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "big"], ["h"], name="pw", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["h", "w3"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(big, "big"), numpy_helper.from_array(w3, "w3")])
    model = with_output_shapes(make_model(graph))
    before = model.SerializeToString()
    result = convert(model, ConvertOptions(rank=RankPolicy.fixed(1)))
    assert [layer.status for layer in result.record.layers] == ["skipped", "converted"]
    carried = {t.name: t for t in result.model.graph.initializer}["big"]
    np.testing.assert_array_equal(numpy_helper.to_array(carried), big)
    assert model.SerializeToString() == before
    second = convert(model, ConvertOptions(rank=RankPolicy.fixed(1)))  # the same model converts the same again
    assert second.model.SerializeToString() == result.model.SerializeToString()


def test_unconverted_model_is_a_copy():
    model = conv_model(cin=4)  # a stem: fewer input channels than the default minimum
    result = convert(model, ConvertOptions())
    assert result.record.totals.converted == 0 and result.record.layers[0].status == "skipped"
    assert result.model is not model and result.model.SerializeToString() == model.SerializeToString()
    result.model.graph.node[0].name = "changed"
    assert model.graph.node[0].name == "conv"


def test_rank_zero_override_leaves_the_layer_with_its_reason():
    model = three_conv_model()
    result = convert(model, RANK2, {"conv2": Override(rank=0, reason="over the drift budget")})
    layers = {layer.name: layer for layer in result.record.layers}
    assert layers["conv2"].status == "skipped" and layers["conv2"].reason == "over the drift budget"
    assert layers["conv2"].params_after == layers["conv2"].params_before and not layers["conv2"].new_nodes
    assert layers["conv1"].converted and layers["conv3"].converted
    assert "conv2" in {n.name for n in result.model.graph.node}  # the original node is still there
    default = convert(model, RANK2, {"conv2": Override(rank=0)})
    assert default.record.layers[1].reason == "left unconverted (per-layer rank 0)"


def test_layout_override_changes_only_that_layer():
    model = three_conv_model()
    result = convert(model, RANK2, {"conv2": Override(layout="branches")})
    assert [layer.layout for layer in result.record.layers] == ["multiplier", "branches", "multiplier"]
    assert "Sum" in [n.op_type for n in result.model.graph.node]
    # the layouts are the same function: only the emitted nodes differ
    assert compare(convert(model, RANK2).model, result.model)[0] < 1e-5


def test_rank_override_per_layer():
    result = convert(three_conv_model(), RANK2, {"conv1": Override(rank=1), "conv3": Override(rank=3)})
    assert [layer.rank for layer in result.record.layers] == [1, 2, 3]


def test_plan_says_what_convert_will_do_without_touching_the_graph():
    model = three_conv_model()
    overrides = {"conv2": Override(rank=0, reason="kept")}
    planned = plan(model, RANK2, overrides)
    assert [site.name for site, _ in planned.candidates()] == ["conv1", "conv3"]
    assert planned.decisions["conv2"] == Skip("kept")
    assert len(planned.graph.nodes) == len(model.graph.node)  # no surgery yet
    result = convert(model, RANK2, overrides)
    assert [layer.name for layer in result.record.layers if layer.converted] == ["conv1", "conv3"]


def test_record_one_layer_per_conv_in_graph_order_with_totals():
    model = three_conv_model()
    result = convert(model, RANK2, {"conv2": Override(rank=0)})
    record = result.record
    assert [layer.name for layer in record.layers] == ["conv1", "conv2", "conv3"]
    assert [site.name for site in result.sites] == ["conv1", "conv2", "conv3"]
    t = record.totals
    assert (t.conv_nodes, t.converted, t.skipped) == (3, 2, 1)
    assert t.params_before == model_params(model) and t.params_after == model_params(result.model)
    assert t.params_after < t.params_before and t.macs_after < t.macs_before
    assert record.rank_policy == "rank 2"
    conv1 = record.layers[0]
    assert conv1.folded_batchnorm == "bn1" and conv1.new_nodes == ["conv1.dw", "conv1.pw"]
    assert conv1.macs_after < conv1.macs_before and conv1.weight_error > 0


def test_count_macs_false_skips_the_counts():
    result = convert(three_conv_model(), RANK2, count_macs=False)
    assert result.record.totals.macs_before is None and result.record.totals.macs_unknown_reason == "not counted"
    assert all(layer.macs_before is None for layer in result.record.layers)


def test_symbolic_shapes_make_macs_unknown_with_a_reason():
    model = conv_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    result = convert(model, RANK2)
    totals = result.record.totals
    assert totals.macs_before is None and totals.macs_after is None
    assert "--input-shape" in totals.macs_unknown_reason
    assert any(w.startswith("MACs unknown: ") for w in result.record.warnings)
    shaped = convert(model, ConvertOptions(rank=RankPolicy.fixed(2), min_in_channels=1,
                                           input_shapes=(("x", (2, 8, 9, 9)),)))
    assert shaped.record.totals.macs_before == convert(conv_model(), RANK2).record.totals.macs_before


@pytest.mark.parametrize("check", (True, False))
def test_check_option_validates_the_result(check, monkeypatch):
    import convtool.convert as step

    seen = []
    monkeypatch.setattr(step, "check_model", lambda model, what: seen.append(what))
    convert(conv_model(), ConvertOptions(min_in_channels=1, check=check))
    assert seen == (["the converted model"] if check else [])


def test_converted_model_passes_the_full_checker():
    result = convert(three_conv_model(dims=3), RANK2)
    onnx.checker.check_model(result.model, full_check=True)
