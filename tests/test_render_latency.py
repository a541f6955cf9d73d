"""render/latency.py: the --latency-aware table and line."""

from __future__ import annotations

from builders import conv_model

from convtool.api import convert_model
from convtool.options import ConvertOptions
from convtool.render import latency as render_latency


def test_nothing_to_render_without_measurements():
    result = convert_model(conv_model(), ConvertOptions(min_in_channels=1))
    assert result.record.layers[0].converted
    assert render_latency.latency_table(result.record) is None
    assert render_latency.latency_line(result.record) is None
    assert result.record.to_dict()["latency"] is None
