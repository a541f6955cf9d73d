"""graph/single.py: the one-layer models --latency-aware times are the layer and its replacement."""

from __future__ import annotations

import onnx_graphsurgeon as gs
import pytest
from builders import conv_model
from golden import compare

from convtool.core.plan import plan_layer
from convtool.graph.select import find_convs
from convtool.graph.single import conv_shape, original_model, replacement_model
from convtool.options import ConvertOptions, RankPolicy
from convtool.search.latency import tensor_shapes


@pytest.mark.parametrize("layout", ("multiplier", "repeat", "branches", "pointwise_first"))
@pytest.mark.parametrize("pads", ("SAME_UPPER", "explicit"))
def test_timed_models_are_the_layer_and_its_replacement(layout, pads):
    model = conv_model(cin=8, cout=6, group=2, stride=2, pads=pads, size=10, batch=1, batchnorm=True)
    opts = ConvertOptions(rank=RankPolicy.full(), layout=layout, min_in_channels=1)
    (site,) = find_convs(model, gs.import_onnx(model), opts.select_rules)
    decision = plan_layer(site.layer, opts.rank, opts.layout)
    x_shape = tensor_shapes(model, {})[site.node.inputs[0].name]
    assert x_shape == (1, 8, 10, 10)
    shape = conv_shape(site.node, decision, x_shape)
    orig = original_model(shape, decision.weight, decision.bias, 17)
    repl = replacement_model(shape, decision, 17)
    assert compare(model, orig)[0] < 1e-5  # the Conv alone, its BatchNormalization folded in
    assert compare(orig, repl)[0] < 1e-5  # full rank: the replacement is exact
    assert shape.strides == (2, 2) and shape.group == 2 and shape.bias
    assert shape.auto_pad == ("SAME_UPPER" if pads == "SAME_UPPER" else "NOTSET")
    assert shape.pads == ((0, 0, 0, 0) if pads == "SAME_UPPER" else (1, 1, 0, 0))
