"""graph/weights.py: finding a converted layer's 1x1 Convs and writing factors back, per layout.

The write-back must put every factor where :mod:`convtool.graph.emit` put it: writing the
factors of a converted ``2 W`` into the model converted from ``W`` gives exactly the model
converted from ``2 W``, in every layout.
"""

from __future__ import annotations

import numpy as np
import pytest
from builders import conv_model
from golden import random_feeds, run
from onnx import numpy_helper

from convtool.convert import convert
from convtool.core.skip import Skip
from convtool.graph import weights
from convtool.options import ConvertOptions, RankPolicy


def _scaled(factor: float):
    """The one-Conv model of :func:`conv_model` with its weight times ``factor``."""
    out = conv_model(cin=16, cout=16)
    for t in out.graph.initializer:
        if t.name == "W":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), "W"))
    return out


def _converted(model, layout: str, rank: int):
    return convert(model, ConvertOptions(rank=RankPolicy.fixed(rank), layout=layout, min_in_channels=1))


@pytest.mark.parametrize("layout,rank", [("multiplier", 2), ("repeat", 2), ("branches", 3), ("repeat", 1),
                                         ("pointwise_first", 2)])
def test_write_factors_puts_every_factor_where_the_emitter_did(layout, rank):
    base, scaled = conv_model(cin=16, cout=16), _scaled(2.0)
    a, b = _converted(base, layout, rank), _converted(scaled, layout, rank)
    layer = a.record.layers[0]
    assert layer.converted and layer.layout == b.record.layers[0].layout
    decision = b.decisions[layer.name]
    model = a.model
    weights.write_factors(model, list(layer.new_nodes), layer.layout, decision.factors, decision.bias,
                          decision.layer.geometry.group)
    feeds = random_feeds(base)
    for got, want in zip(run(model, feeds), run(b.model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pointwise_convs_per_layout():
    multiplier = _converted(conv_model(cin=16, cout=16), "multiplier", 2)
    final = weights.node_named(multiplier.model, multiplier.record.layers[0].new_nodes[-1])
    assert [n.name for n in weights.pointwise_convs(multiplier.model, final)] == [final.name]
    branches = _converted(conv_model(cin=16, cout=16), "branches", 2)
    final = weights.node_named(branches.model, branches.record.layers[0].new_nodes[-1])
    convs = weights.pointwise_convs(branches.model, final)
    assert final.op_type in ("Sum", "Add") and len(convs) == 2
    first = _converted(conv_model(cin=16, cout=16), "pointwise_first", 1)
    final = weights.node_named(first.model, first.record.layers[0].new_nodes[-1])
    skip = weights.pointwise_convs(first.model, final)
    assert isinstance(skip, Skip) and str(skip) == "refit needs the layer to end with 1x1 Convs; it ends with Conv"


def test_write_pointwise_adds_a_bias_with_a_unique_name():
    conv = _converted(conv_model(cin=16, cout=16, bias=False), "multiplier", 1)
    model = conv.model
    pw = weights.node_named(model, conv.record.layers[0].new_nodes[-1])
    w = weights.read(model, pw.input[1])
    weights.write_pointwise(model, pw, w * 2, np.ones(w.shape[0], w.dtype))
    assert len(pw.input) == 3 and pw.input[2] == f"{pw.input[1]}.bias"
    np.testing.assert_array_equal(weights.read(model, pw.input[2]), 1.0)
    np.testing.assert_array_equal(weights.read(model, pw.input[1]), w * 2)
    weights.write_pointwise(model, pw, w, None)  # None zeroes the existing bias
    np.testing.assert_array_equal(weights.read(model, pw.input[2]), 0.0)
    assert weights.unique_name(model, pw.input[2]) == f"{pw.input[2]}_1"


def test_spatial_conv_and_its_attributes():
    conv = _converted(conv_model(cin=16, cout=16, stride=2), "multiplier", 1)
    spatial = weights.spatial_conv(conv.model, list(conv.record.layers[0].new_nodes))
    attrs = weights.conv_attrs(spatial)
    assert attrs["strides"] == (2, 2) and attrs["auto_pad"] == "NOTSET" and attrs["pads"] == (1, 1, 0, 0)
    assert weights.group_of(spatial) == 16
