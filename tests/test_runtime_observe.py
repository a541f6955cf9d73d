"""MACs from shapes observed with onnxruntime where ONNX shape inference gives up (issue 8, item 15).

The model (``padded_nhwc_model``, built in test_analysis_shapes.py) pads at run time with amounts
computed by ``Shape -> ConstantOfShape -> Concat``: shape inference leaves every conv shape
``unk__N``.  Its MACs are computed by hand there (350,368 at input_0 = 1x32x32x3); the same
network with constant pads is inferred statically and must give the same counts.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from clirun import invoke
from onnx import TensorProto, helper, numpy_helper

import convtool.runtime.observe as observe
from convtool.analysis.costs import static_costs
from convtool.convert import convert
from convtool.options import ConvertOptions
from convtool.report import ReportOptions, build_report
from convtool.runtime.observe import OBSERVED_NOTE, known_shapes, model_costs, observe_shapes
from test_analysis_shapes import CONV1_MACS, CONV2_MACS, FC_MACS, SHAPE, TOTAL_MACS, padded_nhwc_model


def _macs(costs) -> dict[str, int | None]:
    return {c.name: c.macs for c in costs.nodes if c.op_type in ("Conv", "MatMul")}


def test_observed_shapes_give_the_hand_computed_macs():
    costs = model_costs(padded_nhwc_model(), SHAPE)
    assert _macs(costs) == {"conv1": CONV1_MACS, "conv2": CONV2_MACS, "fc": FC_MACS}
    assert costs.macs == TOTAL_MACS
    assert costs.shapes == "observed" and costs.reason is None and costs.unknown == ()
    static = model_costs(padded_nhwc_model(static_pads=True), SHAPE)  # same network, inferred
    assert static.shapes == "inferred" and static.nodes[-7:] == costs.nodes[-7:]  # conv1 ... fc


def test_batch_and_size_follow_the_input_shape():
    costs = model_costs(padded_nhwc_model(), {"input_0": (2, 64, 48, 3)})
    # 64x48 padded to 66x50, stride 2 -> 32x24; conv2 keeps 32x24
    assert _macs(costs) == {"conv1": 2 * 32 * 24 * 8 * 27, "conv2": 2 * 32 * 24 * 16 * 72, "fc": 2 * 160}


def test_without_the_fallback_unknown_is_none_with_a_reason_never_zero():
    costs = model_costs(padded_nhwc_model(), SHAPE, observe=False)
    assert costs.macs is None and costs.shapes == "inferred"
    assert _macs(costs) == {"conv1": None, "conv2": None, "fc": None}
    assert costs.reason == "ONNX shape inference could not resolve the shapes of 3 counted node(s) (e.g. conv1)"


def _unrunnable() -> onnx.ModelProto:
    """The padded model with a custom-domain op (no kernel anywhere) after the first conv."""
    model = padded_nhwc_model()
    nodes = list(model.graph.node)
    i = next(k for k, n in enumerate(nodes) if n.name == "relu1")
    nodes[i] = helper.make_node("Swish", ["c1"], ["r1"], name="relu1", domain="com.example")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return model


def test_a_model_onnxruntime_cannot_run_stays_unknown_with_the_reason():
    costs = model_costs(_unrunnable(), SHAPE)
    assert costs.macs is None and costs.shapes == "inferred"
    assert _macs(costs) == {"conv1": None, "conv2": None, "fc": None}
    assert costs.reason.startswith("ONNX shape inference could not resolve the shapes of 3 counted node(s)")
    assert "; onnxruntime cannot run the model (" in costs.reason and "Swish" in costs.reason


def test_refused_probes_are_bisected_and_the_rest_observed(monkeypatch):
    real = observe._run
    calls = []

    def refuse_c2(model, tensors, feeds):
        calls.append(list(tensors))
        if "c2" in tensors:
            raise observe._Failed("cannot expose c2")
        return real(model, tensors, feeds)

    monkeypatch.setattr(observe, "_run", refuse_c2)
    costs = model_costs(padded_nhwc_model(), SHAPE)
    assert _macs(costs) == {"conv1": CONV1_MACS, "conv2": None, "fc": FC_MACS}
    assert costs.macs is None and costs.shapes == "observed"
    assert costs.reason.endswith("; onnxruntime could not observe 1 tensor(s) (e.g. c2: cannot expose c2)")
    assert calls[0] == ["c1", "c2", "f", "logits"] and ["c2"] in calls and len(calls) <= 1 + 2 + 2


def test_bisection_budget_is_bounded(monkeypatch):
    runs = []

    def refuse_all(model, tensors, feeds):
        runs.append(len(tensors))
        raise observe._Failed("no")

    monkeypatch.setattr(observe, "_run", refuse_all)
    monkeypatch.setattr(observe, "_run_plain", lambda model, feeds: None)  # the plain model runs
    seen = observe_shapes(padded_nhwc_model(), [f"t{i}" for i in range(100)], SHAPE)
    assert seen.shapes == {} and len(runs) == 1 + observe.MAX_EXTRA_SESSIONS
    assert seen.reason == "onnxruntime could not observe 100 tensor(s) (e.g. t0: no)"


def test_non_float_inputs_get_sensible_feeds():
    # a uint8 NHWC image input cast to float: random feeds are integers, the model runs
    model = padded_nhwc_model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    cast = helper.make_node("Cast", ["input_0"], ["input_f"], name="to_float", to=TensorProto.FLOAT)
    nodes = [cast, *model.graph.node]
    nodes[1].input[0] = "input_f"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    costs = model_costs(model, SHAPE)
    assert costs.macs == TOTAL_MACS and costs.shapes == "observed"


def test_string_inputs_cannot_be_fed_reason_not_zero():
    model = padded_nhwc_model()
    model.graph.input.append(helper.make_tensor_value_info("label", TensorProto.STRING, [1]))
    costs = model_costs(model, SHAPE)
    assert costs.macs is None
    assert "no inputs to run the model with onnxruntime (input 'label': cannot make random data" in costs.reason


def test_empty_observed_tensors_are_not_counted_as_zero():
    # NonZero of (x > 1e9) is empty on random inputs: the MatMul after it would count 0 MACs
    nodes = [
        helper.make_node("Greater", ["X", "big"], ["mask"], name="gt"),
        helper.make_node("NonZero", ["mask"], ["idx"], name="nz"),
        helper.make_node("Cast", ["idx"], ["f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["ft"], name="tr"),
        helper.make_node("MatMul", ["ft", "W"], ["Y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(1e9, np.float32), "big"),
         numpy_helper.from_array(np.ones((1, 3), np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    costs = model_costs(model)
    assert costs.macs is None
    assert "were empty on random inputs (e.g. ft), a data-dependent shape" in costs.reason


def test_static_models_never_start_onnxruntime(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("onnxruntime run for a statically inferable model")

    monkeypatch.setattr(observe, "observe_shapes", boom)
    assert model_costs(padded_nhwc_model(static_pads=True), SHAPE).macs == TOTAL_MACS
    assert known_shapes(padded_nhwc_model(static_pads=True), SHAPE, ["xp"])["xp"] == (1, 3, 34, 34)


def test_known_shapes_observes_only_what_is_needed():
    shapes = known_shapes(padded_nhwc_model(), SHAPE, ["xp"])
    assert shapes["xp"] == (1, 3, 34, 34) and shapes["x"] == (1, 3, 32, 32)
    assert "c1" not in shapes  # not needed: not observed
    assert "c1" not in known_shapes(padded_nhwc_model(), SHAPE)


def test_the_callers_model_is_not_modified():
    model = padded_nhwc_model()
    before = model.SerializeToString()
    observe_shapes(model, ["c1", "c2"], SHAPE)
    assert model.SerializeToString() == before


def test_convert_counts_both_models_from_observed_shapes():
    opts = ConvertOptions(input_shapes=tuple(SHAPE.items()))
    conv = convert(padded_nhwc_model(), opts)
    ref = convert(padded_nhwc_model(static_pads=True), opts)  # same weights, inferred shapes
    t, r = conv.record.totals, ref.record.totals
    assert t.macs_before == TOTAL_MACS and t.converted >= 1
    assert t.macs_after == r.macs_after is not None and t.macs_after < t.macs_before
    assert (t.macs_shapes, r.macs_shapes) == ("observed", "inferred")
    assert t.macs_unknown_reason is None and OBSERVED_NOTE in conv.record.warnings
    assert [(x.macs_before, x.macs_after) for x in conv.record.layers] == \
        [(x.macs_before, x.macs_after) for x in ref.record.layers]


def test_convert_json_has_the_true_macs(tmp_path):
    src = tmp_path / "padded.onnx"
    onnx.save(padded_nhwc_model(), src)
    rec = tmp_path / "rec.json"
    res = invoke("convert", src, "-o", tmp_path / "out.onnx", "--input-shape", "input_0=1,32,32,3", "--json", rec)
    assert res.exit_code == 0, res.output
    totals = json.loads(rec.read_text())["totals"]
    assert totals["macs_before"] == TOTAL_MACS
    assert isinstance(totals["macs_after"], int) and 0 < totals["macs_after"] < TOTAL_MACS
    assert totals["macs_shapes"] == "observed" and totals["macs_unknown_reason"] is None


def test_convert_json_of_a_model_that_cannot_run_says_null_with_the_reason(tmp_path):
    src = tmp_path / "custom.onnx"
    onnx.save(_unrunnable(), src)
    rec = tmp_path / "rec.json"
    res = invoke("convert", src, "-o", tmp_path / "out.onnx", "--input-shape", "input_0=1,32,32,3", "--json", rec)
    assert res.exit_code == 0, res.output
    totals = json.loads(rec.read_text())["totals"]
    assert totals["macs_before"] is None and totals["macs_after"] is None
    assert "onnxruntime cannot run the model" in totals["macs_unknown_reason"]


def test_report_counts_from_observed_shapes(tmp_path):
    src = tmp_path / "padded.onnx"
    onnx.save(padded_nhwc_model(), src)
    report = build_report([src], ReportOptions(input_shapes=tuple(SHAPE.items()), latency=False))
    (record,) = report.models
    assert record.macs == TOTAL_MACS and record.macs_shapes == "observed"
    assert record.to_dict()["macs"] == TOTAL_MACS and record.to_dict()["macs_shapes"] == "observed"
    assert any(OBSERVED_NOTE in n for n in report.notes)


def test_static_costs_alone_never_run_anything():
    # the analysis layer does not fall back; it says what is missing
    costs = static_costs(padded_nhwc_model(), SHAPE)
    assert costs.macs is None and costs.unknown == ("c1", "c2", "f", "logits")


@pytest.mark.parametrize("name", ["c1.observed_shape", "c1"])
def test_probe_names_do_not_clash(name):
    model = padded_nhwc_model()
    # a tensor already named like a probe output
    model.graph.node.append(helper.make_node("Identity", ["c1"], [f"{name}.observed_shape"]))
    model.graph.output.append(helper.make_tensor_value_info(f"{name}.observed_shape", TensorProto.FLOAT, None))
    seen = observe_shapes(model, ["c1", "c2"], SHAPE)
    assert seen.shapes == {"c1": (1, 8, 16, 16), "c2": (1, 16, 16, 16)} and seen.reason is None


def test_latency_tuner_shapes_observe_the_conv_inputs():
    from convtool.search.latency import tensor_shapes

    assert "r1" not in tensor_shapes(padded_nhwc_model(), SHAPE)  # static only
    shapes = tensor_shapes(padded_nhwc_model(), SHAPE, ["xp", "r1"])  # conv1's and conv2's inputs
    assert shapes["xp"] == (1, 3, 34, 34) and shapes["r1"] == (1, 8, 16, 16)
