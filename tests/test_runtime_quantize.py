"""runtime/quantize.py: onnxruntime's static INT8 quantization - the output validates and runs,
stays close to the float model, and every failure is one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import conv_model, smooth_inputs, three_conv_model

from convtool.analysis.drift import compare_outputs
from convtool.errors import CalibrationDataError, OptionError, QuantizationError
from convtool.options import QuantizeOptions
from convtool.runtime.inputs import validate
from convtool.runtime.quantize import DatasetReader, calibration_subset, quantize_model
from convtool.runtime.run import run_outputs


def _data(model, n=24):
    return validate(smooth_inputs(n), model, "smooth")


def test_quantized_model_validates_runs_and_stays_close():
    model = three_conv_model()
    before = onnx.ModelProto()
    before.CopyFrom(model)
    data = _data(model)
    result = quantize_model(model, data, QuantizeOptions(samples=16, batch_size=4))
    assert model == before  # the caller's model is not modified
    ops = {n.op_type for n in result.model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    onnx.checker.check_model(result.model, full_check=True)
    s = result.summary
    assert s.samples == 16 and s.preprocess == "done" and s.quantized_nodes >= 3
    assert s.per_channel and s.activations == "uint8" and "QDQ" in s.options
    assert 0 < s.size_after < s.size_before + 10_000
    drift = compare_outputs(run_outputs(model, data), run_outputs(result.model, data)).drift
    assert 0 < drift < 0.1  # quantized (not a copy), and close


def test_per_tensor_weights_have_one_scale_per_weight():
    model = three_conv_model()
    per_tensor = quantize_model(model, _data(model), QuantizeOptions(per_channel=False, samples=8)).model
    per_channel = quantize_model(model, _data(model), QuantizeOptions(samples=8)).model
    scales = lambda m: [t for t in m.graph.initializer if t.name.endswith(".w_scale")]  # noqa: E731
    assert scales(per_tensor) and all(len(t.dims) == 0 for t in scales(per_tensor))
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in scales(per_channel))


def test_reader_yields_every_batch_then_none():
    model = three_conv_model()
    reader = DatasetReader(_data(model, 10), model, batch_size=4)
    sizes = []
    while (feed := reader.get_next()) is not None:
        sizes.append(feed["x"].shape[0])
    assert sizes == [4, 4, 2]
    assert calibration_subset(_data(model, 10), QuantizeOptions(samples=3)).count == 3


def test_fixed_batch_model_with_too_few_samples_is_a_one_line_error():
    model = conv_model(batch=4)
    data = validate({"x": np.ones((3, 8, 9, 9), np.float32)}, model, "three")
    with pytest.raises(CalibrationDataError, match="fixed batch of 4"):
        quantize_model(model, data)


def test_onnxruntime_failure_is_a_quantization_error(monkeypatch):
    import onnxruntime.quantization as q

    def broken(*args, **kwargs):
        raise RuntimeError("something deep inside\nwith a second line")

    monkeypatch.setattr(q, "quantize_static", broken)
    model = three_conv_model()
    with pytest.raises(QuantizationError, match="could not quantize the model: something deep inside$"):
        quantize_model(model, _data(model))


@pytest.mark.parametrize("kwargs,match", [
    ({"activations": "int4"}, "activation type"), ({"method": "kl"}, "calibration method"), ({"samples": 0}, "samples"),
])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(OptionError, match=match):
        QuantizeOptions(**kwargs)


def test_float_tail_is_what_follows_the_last_compute_op():
    from onnx import TensorProto, helper, numpy_helper

    from builders import make_model
    from convtool.runtime.quantize import float_tail

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 8, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"], name="scores"),
             helper.make_node("Concat", ["c", "s"], ["y"], name="pack", axis=1)]  # boxes and scores in one tensor
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 9, 9])], [w])
    model = make_model(graph)
    assert float_tail(model) == ["scores", "pack"]
    data = _data(model)
    kept = quantize_model(model, data, QuantizeOptions(samples=8))
    assert kept.summary.float_nodes == 2
    quantized_inputs = {n.input[0] for n in kept.model.graph.node if n.op_type == "QuantizeLinear"}
    assert "s" not in quantized_inputs and "y" not in quantized_inputs
    everything = quantize_model(model, data, QuantizeOptions(samples=8, float_tail=False))
    assert everything.summary.float_nodes == 0
    assert {n.input[0] for n in everything.model.graph.node if n.op_type == "QuantizeLinear"} > quantized_inputs


def test_an_old_opset_is_converted_so_per_channel_weights_validate():
    model = three_conv_model()
    model.opset_import[0].version = 11
    result = quantize_model(model, _data(model), QuantizeOptions(samples=8))
    assert result.model.opset_import[0].version >= 13
    assert any(a.name == "axis" for n in result.model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute)
