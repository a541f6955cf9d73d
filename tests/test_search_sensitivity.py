"""search/sensitivity.py: one captured pass, local fits, suffix runs - equal to whole-model runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import SAMPLES, smooth_inputs, three_conv_model

from convtool.analysis.drift import compare_outputs
from convtool.api import convert_model, sweep_model
from convtool.graph.export import copy_model
from convtool.options import CalibrationOptions, ConvertOptions, SweepOptions
from convtool.search.sensitivity import layer_io
from convtool.runtime.inputs import Dataset
from convtool.runtime.run import run_outputs
from convtool.search.budget import BudgetSearch


def _images(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    up = np.kron(base, np.ones((1, 1, 8, 8), dtype=np.float32))  # smooth 64x64 images
    return {"input": up + 0.1 * rng.standard_normal(up.shape).astype(np.float32)}


@pytest.mark.parametrize("sample,data", [("resnet_style.onnx", None), ("three_conv", None)])
def test_every_candidates_suffix_drift_equals_the_whole_model_with_the_same_fit(sample, data):
    """A residual model (skip connections: boundary tensors) and a chain with BN folding."""
    if sample == "three_conv":
        model, arrays = three_conv_model(), {"x": smooth_inputs(n=24)["x"]}
    else:
        model, arrays = onnx.load(str(SAMPLES / sample)), _images(20)
    before = model.SerializeToString()
    options = ConvertOptions(max_drift=0.5, objective="macs", search_ranks=(1, 2), min_in_channels=1,
                             calibration=CalibrationOptions(factors="data-aware"))
    s = BudgetSearch(model, options, Dataset(arrays)).analyse()
    assert model.SerializeToString() == before  # nothing of the caller's model changed
    assert s.alone and s.capture_bytes > 0
    for key, (value, drift) in s.alone.items():
        c = next(c for c in s.candidates[key[0]] if c.key == key)
        whole = compare_outputs(s.reference, run_outputs(s.local_model({c.name: c}), s.held, s.batch))
        assert drift.drift == pytest.approx(whole.drift, rel=1e-3, abs=1e-6), key
        assert value == pytest.approx(whole.drift, rel=1e-3, abs=1e-6)


def test_local_fits_are_never_worse_than_data_free_on_the_layer():
    model, arrays = three_conv_model(), {"x": smooth_inputs(n=24)["x"]}
    s = BudgetSearch(model, ConvertOptions(max_drift=0.5, objective="macs", search_ranks=(1,)),
                     Dataset(arrays)).analyse()
    for f in s.fitted.values():
        if f.method != "data-free":
            assert f.error is not None and f.error_before is not None and f.error <= f.error_before + 1e-9


def test_the_search_reports_its_phases_memory_and_verifications():
    model = onnx.load(str(SAMPLES / "digits_cnn.onnx"))
    with np.load(SAMPLES / "digits_calib.npz") as f:
        calib = {"input": f["input"][:64]}
    res = convert_model(model, ConvertOptions(max_drift=0.05, objective="macs", search_ranks=(1, 2),
                                              calibration=CalibrationOptions(factors="pointwise")),
                        calibration_data=calib)
    search = res.record.search
    assert {"candidates", "capture", "sensitivity"} <= set(search.phases)
    assert search.capture_bytes > 0
    assert 1 <= len(search.attempts) <= 8 and search.evaluations <= 8 + 2
    kept = [a for a in search.attempts if a["kept"]]
    assert all(a["drift"] <= 0.05 for a in kept)
    assert search.drift <= 0.05 and (search.bound is None or search.bound <= 0.05)
    # the written model is the one measured: its held-out drift is the record's
    _, held = Dataset(calib).split(CalibrationOptions().holdout, CalibrationOptions().seed + 1)
    d = compare_outputs(run_outputs(model, held), run_outputs(res.model, held))
    assert d.drift == pytest.approx(search.drift, rel=1e-4, abs=1e-7)


def test_a_sweep_point_is_the_convert_model_for_the_same_budget():
    """One pipeline: same plan, same weights, same MACs."""
    model = onnx.load(str(SAMPLES / "digits_cnn.onnx"))
    with np.load(SAMPLES / "digits_calib.npz") as f:
        calib = {"input": f["input"][:64]}
    with np.load(SAMPLES / "digits_eval.npz") as f:
        evals = {"input": f["input"][:32]}
    options = ConvertOptions(objective="macs", search_ranks=(1, 2), calibration=CalibrationOptions(factors="pointwise"))
    from dataclasses import replace

    budget = 0.05
    conv = convert_model(copy_model(model), replace(options, max_drift=budget), calibration_data=calib)
    swept = sweep_model(copy_model(model), options, SweepOptions(budgets=(budget,), runs=3, warmup=0),
                        calibration_data=calib, eval_data=evals)
    (point_model,) = swept.models
    a = {t.name: onnx.numpy_helper.to_array(t) for t in conv.model.graph.initializer}
    b = {t.name: onnx.numpy_helper.to_array(t) for t in point_model.graph.initializer}
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    (point,) = swept.record.points
    assert point.macs == conv.record.totals.macs_after


def test_quantize_int8_inside_the_search_measures_and_times_the_deployed_model(tmp_path):
    """--quantize int8 --max-drift: the budget holds for the quantized model, which is never
    slower than the INT8-quantized original (else the original layers are kept, with a warning)."""
    from convtool.options import LatencyOptions, QuantizeOptions

    model = onnx.load(str(SAMPLES / "digits_cnn.onnx"))
    with np.load(SAMPLES / "digits_calib.npz") as f:
        calib = {"input": f["input"][:120]}
    options = ConvertOptions(max_drift=0.05, objective="macs", search_ranks=(1, 2), quantize=QuantizeOptions(),
                             calibration=CalibrationOptions(factors="pointwise"),
                             timing=LatencyOptions(cache_dir=str(tmp_path)))
    res = convert_model(model, options, calibration_data=calib)
    search, quant = res.record.search, res.record.quantization
    assert quant is not None and search.quantization_attempts
    assert any(n.op_type == "QuantizeLinear" for n in res.model.graph.node)
    _, held = Dataset(calib).split(CalibrationOptions().holdout, CalibrationOptions().seed + 1)
    d = compare_outputs(run_outputs(model, held), run_outputs(res.model, held))
    assert d.drift == pytest.approx(search.drift, rel=1e-4, abs=1e-7)  # the written model is the measured one
    assert search.drift <= 0.05
    last = search.quantization_attempts[-1]
    if res.record.totals.converted:
        assert last["kept"] and last["ci_low"] > 1.0
    else:
        assert any("--quantize int8" in w and "kept the original layers" in w for w in res.record.warnings)
        assert not any(".dw" in n.name for n in res.model.graph.node)


def test_layer_io_reads_where_the_layer_reads_and_writes_where_the_folded_bn_writes():
    from convtool.convert import plan

    planned = plan(three_conv_model(), ConvertOptions(min_in_channels=1))
    site, _ = planned.candidates()[0]
    io = layer_io(site)
    assert io.name == site.name and io.x == site.node.inputs[0].name
    end = site.batchnorm_node if site.batchnorm_node is not None else site.node
    assert io.y == end.outputs[0].name and len(io.pads) == 2 * len(io.strides)


def test_without_suffix_models_each_candidate_runs_the_whole_model_with_the_same_result(monkeypatch):
    """Graphs with control-flow subgraphs have no suffix models: the fallback gives the same drifts."""
    from convtool.search import sensitivity as sens

    model, arrays = three_conv_model(), {"x": smooth_inputs(n=24)["x"]}
    options = ConvertOptions(max_drift=0.5, objective="macs", search_ranks=(1,), min_in_channels=1)
    with_suffix = BudgetSearch(model, options, Dataset(arrays)).analyse()
    monkeypatch.setattr(sens, "has_subgraphs", lambda m: True)
    whole = BudgetSearch(model, options, Dataset(arrays)).analyse()
    assert with_suffix.alone.keys() == whole.alone.keys()
    for key in whole.alone:
        assert whole.alone[key][0] == pytest.approx(with_suffix.alone[key][0], rel=1e-3, abs=1e-6)
