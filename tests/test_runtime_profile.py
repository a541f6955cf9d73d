"""runtime/profile.py: the onnxruntime profiler path and mapping converted layers to their nodes."""

from __future__ import annotations

import onnx
import pytest
from builders import conv_relu
from onnx import helper

from convtool.options import SessionOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.profile import map_converted_layers, named_nodes, parse_profile, profile_nodes


def test_parse_profile_drops_warmup_and_averages():
    trace = [{"cat": "Session", "name": "model_run", "dur": 999}]
    for dur in (1000, 3000, 5000):  # 1 warm-up run then 2 timed runs
        trace.append({"cat": "Node", "name": "conv_kernel_time", "dur": dur})
        trace.append({"cat": "Node", "name": "conv_fence_before", "dur": 7})
    assert parse_profile(trace, warmup=1, runs=2) == {"conv": pytest.approx(4.0)}


def test_profile_nodes_maps_to_graph_names():
    model = conv_relu()
    feeds = random_feeds(model)
    prof = profile_nodes(model, feeds, SessionOptions(opt_level="all"), runs=3, warmup=1)
    assert prof.opt_level == "extended"  # 'all' renames nodes (NCHWc); capped
    assert "conv" in prof.times_ms and prof.times_ms["conv"] > 0
    assert prof.time_of(["conv", "absent"]) == prof.times_ms["conv"]
    assert prof.time_of(["absent"]) is None


def test_unnamed_nodes_get_stable_names():
    model = conv_relu(names=("", ""))
    named = named_nodes(model)
    assert [n.name for n in named.graph.node] == ["Conv_0", "Relu_1"]
    assert [n.name for n in model.graph.node] == ["", ""]  # caller's model untouched
    prof = profile_nodes(model, random_feeds(model), SessionOptions(opt_level="disable"), runs=2, warmup=0)
    assert {"Conv_0", "Relu_1"} <= set(prof.times_ms)


def _graph_with_nodes(names_ops) -> onnx.ModelProto:
    nodes = [helper.make_node(op, [], [f"t{i}"], name=name) for i, (name, op) in enumerate(names_ops)]
    graph = helper.make_graph(nodes, "g", [], [])
    return helper.make_model(graph)


def test_map_converted_layers_uses_longest_replaced_prefix():
    original = _graph_with_nodes(
        [("stem", "Conv"), ("block.conv", "Conv"), ("block.conv.1", "Conv"), ("block.bn", "BatchNormalization"), ("head", "Gemm")]
    )
    converted = _graph_with_nodes(
        [
            ("stem", "Conv"),  # untouched
            ("block.conv.dw", "Conv"),
            ("block.conv.pw", "Conv"),
            ("block.conv.1.dw", "Conv"),
            ("block.conv.1.pw", "Conv"),
            ("block.conv.1.pad", "Pad"),
            ("head", "Gemm"),
        ]
    )
    mapping = {m.original: m.replacements for m in map_converted_layers(original, converted)}
    assert mapping == {
        "block.conv": ("block.conv.dw", "block.conv.pw"),
        "block.conv.1": ("block.conv.1.dw", "block.conv.1.pw", "block.conv.1.pad"),
    }  # block.bn was removed (folded) without replacements: not a layer
