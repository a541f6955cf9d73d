"""search/calibrate.py: the sequential least-squares refit driver, end to end on tiny inline
models and on the trained digits sample (the issue's acceptance check).

Layers are emitted ``multiplier`` unless a test says otherwise: the refit fits the pointwise
weights of depthwise-first layouts, and ``auto`` would emit a pointwise-first conv3 (16 -> 8).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from builders import SAMPLES, smooth_inputs, three_conv_model
from golden import run
from typer.testing import CliRunner

from convtool.api import convert_model
from convtool.cli.app import app
from convtool.options import CalibrationOptions, ConvertOptions, RankPolicy
from convtool.runtime.inputs import Dataset
from convtool.runtime.run import run_outputs
from convtool.search.calibrate import RefitCache, refit_layers


def calibrated(**kw) -> ConvertOptions:
    return ConvertOptions(**{"layout": "multiplier", "calibration": CalibrationOptions(), **kw})


def _drift(model, converted, feeds):
    a = run(model, feeds)[0]
    b = run(converted, feeds)[0]
    return float(np.linalg.norm(b - a) / np.linalg.norm(a))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_calibration_lowers_layer_and_model_error(dims):
    model = three_conv_model(dims)
    data = smooth_inputs(dims=dims)
    free = convert_model(model, ConvertOptions(layout="multiplier"))
    cal = convert_model(model, calibrated(calibration=CalibrationOptions(holdout=0.25)), calibration_data=data)
    onnx.checker.check_model(cal.model, full_check=True)
    converted = [layer for layer in cal.record.layers if layer.converted]
    assert [layer.name for layer in converted] == ["conv1", "conv2", "conv3"]
    for layer in converted:
        assert layer.output_error_before is not None and layer.output_error_after is not None
        assert layer.output_error_after <= layer.output_error_before
    test = smooth_inputs(n=8, dims=dims, seed=7)
    assert _drift(model, cal.model, test) < _drift(model, free.model, test)
    info = cal.record.to_dict()["calibration"]
    assert info["samples"] == 24 and info["held_out_samples"] == 6 and info["fit_samples"] == 18
    assert set(info) >= {"source", "seconds", "layers", "layers_refitted"}
    assert info["layers"][0]["name"] == "conv1"
    assert not any("data-free" in w for w in cal.record.warnings)


def test_caller_model_untouched_and_unfolded_batchnorm_targets_pre_bn():
    model = three_conv_model()
    before = model.SerializeToString()
    res = convert_model(model, calibrated(fold_batchnorm=False), calibration_data=smooth_inputs())
    assert model.SerializeToString() == before
    assert "BatchNormalization" in [n.op_type for n in res.model.graph.node]
    pw = next(n for n in res.model.graph.node if n.name == "conv1.pw")
    assert pw.output[0] == "conv1.out"  # the pre-BatchNorm tensor is the refit target
    converted = [layer for layer in res.record.layers if layer.converted]
    assert converted and all(layer.output_error_after <= layer.output_error_before for layer in converted)


def test_refit_is_the_same_function_in_every_depthwise_first_layout():
    data, test = smooth_inputs(), smooth_inputs(n=4, seed=9)
    outs = {}
    for layout in ("multiplier", "repeat", "branches"):
        res = convert_model(three_conv_model(), calibrated(rank=RankPolicy.fixed(2), layout=layout),
                            calibration_data=data)
        onnx.checker.check_model(res.model, full_check=True)
        assert all(layer.layout == layout and layer.output_error_after < layer.output_error_before
                   for layer in res.record.layers if layer.converted)
        outs[layout] = run(res.model, test)[0]
    np.testing.assert_allclose(outs["repeat"], outs["multiplier"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outs["branches"], outs["multiplier"], rtol=1e-4, atol=1e-4)


def test_pointwise_first_layers_are_left_as_factorised_by_the_pointwise_refit():
    options = calibrated(layout="pointwise_first", calibration=CalibrationOptions(factors="pointwise"))
    res = convert_model(three_conv_model(), options, calibration_data=smooth_inputs())
    reasons = [layer.reason for layer in res.record.calibration.layers]
    assert reasons and all("pointwise_first layout" in r for r in reasons)
    assert res.record.calibration.layers_refitted == 0


def test_pointwise_first_layers_get_data_aware_factors():
    res = convert_model(three_conv_model(), calibrated(layout="pointwise_first"), calibration_data=smooth_inputs())
    layers = res.record.calibration.layers
    assert layers and all(r.moments == "full" and r.method in ("als", "pointwise", "data-free") for r in layers)
    assert res.record.calibration.layers_refitted >= 1
    assert all(r.output_error_after <= r.output_error_before for r in layers)


def test_default_layout_refits_what_it_can_and_says_why_not_the_rest():
    res = convert_model(three_conv_model(), ConvertOptions(calibration=CalibrationOptions()),
                        calibration_data=smooth_inputs())
    cal = res.record.calibration
    assert {r.name for r in cal.layers} == {layer.name for layer in res.record.layers if layer.converted}
    assert all(r.refitted or r.reason for r in cal.layers)
    assert cal.layers_refitted + cal.layers_kept_data_free == len(cal.layers) >= 1


def test_fixed_batch_model_runs_one_sample_at_a_time():
    res = convert_model(three_conv_model(batch=1), calibrated(), calibration_data=smooth_inputs(n=5))
    cal = res.record.calibration
    assert cal.samples == 5 and cal.layers_refitted >= 1
    assert all(r.held_out_positions > 0 for r in cal.layers)


def test_fixed_batch_held_out_samples_are_samples_that_ran():
    res = convert_model(three_conv_model(batch=4), calibrated(), calibration_data=smooth_inputs(n=10))
    cal = res.record.calibration
    assert cal.held_out_samples == 0 or all(r.held_out_positions > 0 for r in cal.layers)


def test_refits_of_a_shared_prefix_are_reused_without_changing_the_result():
    model = three_conv_model()
    data = Dataset(smooth_inputs(n=16))
    converted = convert_model(model, ConvertOptions(rank=RankPolicy.fixed(1), layout="multiplier"))
    layers = converted.record.layers
    cache = RefitCache()
    fresh = refit_layers(model, converted.model, layers, data, CalibrationOptions())
    first = refit_layers(model, converted.model, layers, data, CalibrationOptions(), cache)
    again = refit_layers(model, converted.model, layers, data, CalibrationOptions(), cache)
    n = sum(layer.converted for layer in layers)
    assert n == 3 and first[1].layers_reused == 0 and again[1].layers_reused == n
    assert again[1].sessions == 0
    for a, b in ((fresh, first), (fresh, again)):
        wa = {t.name: onnx.numpy_helper.to_array(t) for t in a[0].graph.initializer}
        wb = {t.name: onnx.numpy_helper.to_array(t) for t in b[0].graph.initializer}
        assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


# --- the acceptance check on the trained digits CNN (sample_models/) -----------------------------

def _accuracy(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray) -> float:
    logits = run_outputs(model, Dataset({"input": x}), batch_size=128)["logits"]
    return float(np.mean(logits.argmax(1) == labels))


# The digits sample sits at 100%, a ceiling where one image is 0.28 pp: the pointwise refit keeps
# 99.72% there and the data-aware factors (lower drift: 0.25 vs 0.32 on these 360 images) 99.44%.
# Which method is better is judged on the non-ceiling sample below, where the data-aware factors
# recover 3 of the 6.5 points the pointwise refit loses.
@pytest.mark.parametrize("factors, bound", [("data-aware", 0.01), ("pointwise", 0.005)])
def test_digits_rank1_with_calibration_keeps_accuracy_and_removes_60_percent_of_macs(factors, bound):
    model = onnx.load(str(SAMPLES / "digits_cnn.onnx"))
    with np.load(SAMPLES / "digits_eval.npz") as f:
        x, labels = f["input"], f["labels"]
    with np.load(SAMPLES / "digits_calib.npz") as f:
        calib = {"input": f["input"]}
    original = _accuracy(model, x, labels)
    res = convert_model(model, calibrated(rank=RankPolicy.fixed(1), calibration=CalibrationOptions(factors=factors)),
                        calibration_data=calib)
    onnx.checker.check_model(res.model, full_check=True)
    assert res.record.totals.mac_reduction >= 0.60
    converted = [layer for layer in res.record.layers if layer.converted]
    assert converted and all(layer.output_error_after <= layer.output_error_before for layer in converted)
    calibrated_accuracy = _accuracy(res.model, x, labels)
    assert calibrated_accuracy >= original - bound, (original, calibrated_accuracy)
    # and the data-free conversion is much worse: calibration is what makes rank 1 usable
    free = convert_model(model, ConvertOptions(rank=RankPolicy.fixed(1), layout="multiplier"))
    assert _accuracy(free.model, x, labels) < calibrated_accuracy - 0.2


def test_noisy_digits_rank1_data_aware_recovers_at_least_a_point_over_the_pointwise_refit():
    """Issue 9's acceptance check on a trained CNN that is not at the ceiling (92.3% held-out)."""
    model = onnx.load(str(SAMPLES / "noisy_digits.onnx"))
    with np.load(SAMPLES / "noisy_digits_eval.npz") as f:
        x, labels = f["input"], f["labels"]
    with np.load(SAMPLES / "noisy_digits_calib.npz") as f:
        calib = {"input": f["input"]}
    accuracy = {}
    for factors in ("pointwise", "data-aware"):
        res = convert_model(model, calibrated(rank=RankPolicy.fixed(1), calibration=CalibrationOptions(factors=factors)),
                            calibration_data=calib)
        assert res.record.totals.mac_reduction >= 0.80
        accuracy[factors] = _accuracy(res.model, x, labels)
    assert accuracy["data-aware"] >= accuracy["pointwise"] + 0.01, accuracy


# --- through the CLI (cli/convert.py's calibration flags; candidates for tests/test_cli_convert.py) ---

runner = CliRunner()


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(three_conv_model(), path)
    return path


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"wrong": np.zeros((2, 8, 9, 9), np.float32)}, "no array for model input 'x'"),
        ({"x": np.zeros((2, 8, 7, 9), np.float32)}, "needs 9"),
        ({"x": np.zeros((2, 8, 9, 9), np.int32)}, "dtype int32"),
        ({"x": np.zeros((0, 8, 9, 9), np.float32)}, "empty"),
        ({"x": np.zeros((2, 8, 9, 9), np.float32), "y": np.zeros(2)}, "array 'y' is not a model input"),
    ],
)
def test_cli_bad_calibration_data(tmp_path, model_file, arrays, expected):
    npz = tmp_path / "cal.npz"
    np.savez(npz, **arrays)
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, ["convert", str(model_file), "-o", str(out), "--calibration", str(npz)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: calibration data") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_calibration_and_json(tmp_path, model_file):
    npz = tmp_path / "cal.npz"
    np.savez(npz, **smooth_inputs(n=10))
    out, rec = tmp_path / "out.onnx", tmp_path / "r.json"
    result = runner.invoke(app, ["convert", str(model_file), "-o", str(out), "--calibration", str(npz),
                                 "--layout", "multiplier", "--min-in-channels", "1", "--json", str(rec)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "calibration: 10 samples of" in result.stdout and "(8 fitted, 2 held out" in result.stdout
    data = json.loads(rec.read_text())
    assert data["calibration"]["samples"] == 10
    converted = [layer for layer in data["layers"] if layer["status"] == "converted"]
    assert converted and all(layer["output_error_after"] is not None for layer in converted)


@pytest.mark.parametrize("argv, expected", [
    (["--max-drift", "0.1", "--rank", "2"], "--max-drift chooses the ranks itself"),
    (["--max-drift", "-1"], "--max-drift must be >= 0"),
    (["--max-drift", "0.1", "--metric", "top5"], "--metric must be one of"),
    (["--calibration", "nope.npz"], "no such file"),
    (["--max-drift", "0.1", "--search-ranks", "1,x"], "--search-ranks must be comma-separated integers"),
    (["--calibration", "nope.npz", "--holdout", "1.5"], "--holdout must be in [0, 1)"),
])
def test_cli_calibration_option_errors(tmp_path, model_file, argv, expected):
    result = runner.invoke(app, ["convert", str(model_file), "-o", str(tmp_path / "o.onnx"), *argv])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error:") and expected in result.stderr, result.stderr
