"""Latency statistics, feeds, the profiler path and layer mapping (no test asserts a speed-up)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convtool.options import SessionOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.session import cpu_model, environment, make_session
from convtool.runtime.timing import latency_stats, time_models
from convtool.runtime.profile import map_converted_layers, named_nodes, parse_profile, profile_nodes
from convtool.errors import ModelLoadError, OptionError


def _tiny(names=("conv", "relu")) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    nodes = [
        helper.make_node("Conv", ["X", "W"], ["C"], name=names[0], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["C"], ["Y"], name=names[1]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_latency_stats_percentiles():
    s = latency_stats([float(x) for x in range(1, 12)])  # 1..11
    assert (s.median, s.p10, s.p90, s.runs) == (6.0, 2.0, 10.0, 11)
    assert s.to_dict() == {"median": 6.0, "p10": 2.0, "p90": 10.0, "runs": 11}
    with pytest.raises(ValueError):
        latency_stats([])


def test_random_feeds_are_seeded_and_static():
    model = _tiny()
    a = random_feeds(model, seed=3)
    b = random_feeds(model, seed=3)
    assert list(a) == ["X"] and a["X"].shape == (1, 3, 8, 8) and a["X"].dtype == np.float32
    np.testing.assert_array_equal(a["X"], b["X"])
    assert not np.array_equal(a["X"], random_feeds(model, seed=4)["X"])
    assert random_feeds(model, {"X": (2, 3, 8, 8)})["X"].shape == (2, 3, 8, 8)


def test_session_config_validation_and_environment():
    with pytest.raises(OptionError, match="--threads"):
        SessionOptions(threads=0)
    with pytest.raises(OptionError, match="--opt-level"):
        SessionOptions(opt_level="max")  # type: ignore[arg-type]
    env = environment(SessionOptions(threads=2, opt_level="basic"))
    assert env.threads == 2 and env.opt_level == "basic" and env.allow_spinning is False
    assert env.onnxruntime and env.cpu == cpu_model() and env.cpu
    assert set(env.to_dict()) >= {"onnxruntime", "threads", "cpu"}


def test_time_models_interleaves_and_reports_every_run():
    model = _tiny()
    cfg = SessionOptions()
    sessions = [make_session(model, cfg), make_session(model, cfg)]
    feeds = random_feeds(model)
    calls = []
    stats = time_models(sessions, [feeds, feeds], runs=4, warmup=1, progress=lambda d, t: calls.append((d, t)))
    assert [s.runs for s in stats] == [4, 4]
    assert all(s.p10 <= s.median <= s.p90 for s in stats)
    assert calls[-1] == (8, 8) and len(calls) == 8
    with pytest.raises(OptionError, match="--runs"):
        time_models(sessions, [feeds, feeds], runs=0, warmup=0)


def test_make_session_rejects_unrunnable_model():
    model = _tiny()
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelLoadError, match="onnxruntime cannot run it"):
        make_session(model, SessionOptions())


def test_parse_profile_drops_warmup_and_averages():
    trace = [{"cat": "Session", "name": "model_run", "dur": 999}]
    for dur in (1000, 3000, 5000):  # 1 warm-up run then 2 timed runs
        trace.append({"cat": "Node", "name": "conv_kernel_time", "dur": dur})
        trace.append({"cat": "Node", "name": "conv_fence_before", "dur": 7})
    assert parse_profile(trace, warmup=1, runs=2) == {"conv": pytest.approx(4.0)}


def test_profile_nodes_maps_to_graph_names():
    model = _tiny()
    feeds = random_feeds(model)
    prof = profile_nodes(model, feeds, SessionOptions(opt_level="all"), runs=3, warmup=1)
    assert prof.opt_level == "extended"  # 'all' renames nodes (NCHWc); capped
    assert "conv" in prof.times_ms and prof.times_ms["conv"] > 0
    assert prof.time_of(["conv", "absent"]) == prof.times_ms["conv"]
    assert prof.time_of(["absent"]) is None


def test_unnamed_nodes_get_stable_names():
    model = _tiny(names=("", ""))
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
