"""Calibration end to end on tiny inline models: data checks, sequential refit, records, CLI."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from golden import run
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from convtool.api import convert_model
from convtool.options import CalibrationOptions
from convtool.runtime.inputs import load as load_calibration, validate
from convtool.cli.app import app
from convtool.errors import CalibrationDataError
from convtool.options import ConvertOptions


def _model(dims: int = 2, batchnorm: bool = True, batch: int | str = "N") -> onnx.ModelProto:
    """conv1 (8->16, k3, +BN) -> Relu -> conv2 (16->16, k3, group 2, bias) -> Relu -> conv3 (16->8)."""
    rng = np.random.default_rng(0)
    k = [3] * dims
    sp = [9] * dims
    pads = [1] * (2 * dims)
    inits, nodes = [], []

    def conv(name, x, cin, cout, group=1, bias=False):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin // group, *k)) / np.sqrt(cin * 3 ** dims)).astype(np.float32), f"{name}.w")
        inits.append(w)
        ins = [x, w.name]
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}.b"))
            ins.append(f"{name}.b")
        nodes.append(helper.make_node("Conv", ins, [f"{name}.out"], name=name, kernel_shape=k, pads=pads, group=group))
        return f"{name}.out"

    h = conv("conv1", "x", 8, 16)
    if batchnorm:
        for nm, v in (("s", rng.uniform(0.5, 2, 16)), ("b", rng.standard_normal(16)), ("m", rng.standard_normal(16) * 0.1),
                      ("v", rng.uniform(0.5, 2, 16))):
            inits.append(numpy_helper.from_array(v.astype(np.float32), f"bn1.{nm}"))
        nodes.append(helper.make_node("BatchNormalization", [h, "bn1.s", "bn1.b", "bn1.m", "bn1.v"], ["bn1.out"], name="bn1"))
        h = "bn1.out"
    nodes.append(helper.make_node("Relu", [h], ["r1"], name="relu1"))
    h = conv("conv2", "r1", 16, 16, group=2, bias=True)
    nodes.append(helper.make_node("Relu", [h], ["r2"], name="relu2"))
    h = conv("conv3", "r2", 16, 8)
    nodes.append(helper.make_node("Identity", [h], ["y"], name="out"))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, *sp])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, *sp])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _data(n=24, dims=2, seed=1):
    """Smooth, correlated inputs (like images), so low-rank layers have something to learn."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 8, *([3] * dims)))
    x = base
    for axis in range(2, 2 + dims):
        x = np.repeat(x, 3, axis=axis)
    return {"x": (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)}


def _drift(model, converted, feeds):
    a = run(model, feeds)[0]
    b = run(converted, feeds)[0]
    return float(np.linalg.norm(b - a) / np.linalg.norm(a))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_calibration_lowers_layer_and_model_error(dims):
    model = _model(dims)
    data = _data(dims=dims)
    free = convert_model(model, ConvertOptions())
    cal = convert_model(model, ConvertOptions(calibration=CalibrationOptions(holdout=0.25)), calibration_data=data)
    onnx.checker.check_model(cal.model, full_check=True)
    converted = [layer for layer in cal.record.layers if layer.converted]
    assert [layer.name for layer in converted] == ["conv1", "conv2", "conv3"]
    for layer in converted:
        assert layer.output_error_before is not None and layer.output_error_after is not None
        assert layer.output_error_after <= layer.output_error_before
    test = _data(n=8, dims=dims, seed=7)
    assert _drift(model, cal.model, test) < _drift(model, free.model, test)
    info = cal.record.to_dict()["calibration"]
    assert info["samples"] == 24 and info["held_out_samples"] == 6 and info["fit_samples"] == 18
    assert set(info) >= {"source", "seconds", "layers", "layers_refitted"}
    assert not any("data-free" in w for w in cal.record.warnings)
    assert cal.record.to_dict()["calibration"]["layers"][0]["name"] == "conv1"


def test_caller_model_untouched_and_unfolded_batchnorm_targets_pre_bn():
    model = _model()
    before = model.SerializeToString()
    res = convert_model(model, ConvertOptions(fold_batchnorm=False, calibration=CalibrationOptions()),
                        calibration_data=_data())
    assert model.SerializeToString() == before
    assert "BatchNormalization" in [n.op_type for n in res.model.graph.node]
    pw = next(n for n in res.model.graph.node if n.name == "conv1.pw")
    assert pw.output[0] == "conv1.out"  # the pre-BatchNorm tensor is the refit target
    assert all(layer.output_error_after <= layer.output_error_before for layer in res.record.layers if layer.converted)


def test_fixed_batch_model_runs_one_sample_at_a_time():
    res = convert_model(_model(batch=1), ConvertOptions(calibration=CalibrationOptions()), calibration_data=_data(n=5))
    assert res.record.calibration.samples == 5


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((4, 8, 9, 9), np.float32)}, "no array for model input 'x' (arrays found: 'images')"),
        ({"x": np.zeros((4, 8, 9), np.float32)}, "has shape (4, 8, 9) (3-D) but input 'x' is 4-D"),
        ({"x": np.zeros((4, 3, 9, 9), np.float32)}, "has 3 on axis 1, input 'x' needs 8"),
        ({"x": np.zeros((4, 8, 9, 9), np.int64)}, "has dtype int64, input 'x' is float32"),
        ({"x": np.zeros((0, 8, 9, 9), np.float32)}, "is empty"),
        ({"x": np.full((2, 8, 9, 9), np.nan, np.float32)}, "NaN"),
    ],
)
def test_bad_arrays_are_refused(arrays, message):
    with pytest.raises(CalibrationDataError) as exc:
        validate(arrays, _model())
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_float64_is_cast_and_extra_arrays_ignored():
    data = validate({"x": np.zeros((3, 8, 9, 9)), "labels": np.arange(3)}, _model())
    assert data.arrays["x"].dtype == np.float32 and set(data.arrays) == {"x"}


def test_mismatched_sample_counts():
    two = _model()
    two.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 2]))
    with pytest.raises(CalibrationDataError, match="different numbers of samples"):
        validate({"x": np.zeros((3, 8, 9, 9), np.float32), "x2": np.zeros((4, 2), np.float32)}, two)


def test_npy_folder(tmp_path):
    for i in range(3):
        np.save(tmp_path / f"s{i}.npy", np.zeros((8, 9, 9), np.float32))
    assert load_calibration(tmp_path, _model()).count == 3


def test_image_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    model = _model()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3  # an RGB input
    for i in range(2):
        pil.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    from convtool.options import ImagePreprocess

    data = load_calibration(tmp_path, model, ImagePreprocess(mean=(0.5,), std=(0.25,)))
    assert data.arrays["x"].shape == (2, 3, 9, 9)
    np.testing.assert_allclose(data.arrays["x"][0], -2.0)


runner = CliRunner()


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(_model(), path)
    return path


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"wrong": np.zeros((2, 8, 9, 9), np.float32)}, "no array for model input 'x'"),
        ({"x": np.zeros((2, 8, 7, 9), np.float32)}, "needs 9"),
        ({"x": np.zeros((2, 8, 9, 9), np.int32)}, "dtype int32"),
        ({"x": np.zeros((0, 8, 9, 9), np.float32)}, "empty"),
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
    import json

    npz = tmp_path / "cal.npz"
    np.savez(npz, **_data(n=10))
    out, rec = tmp_path / "out.onnx", tmp_path / "r.json"
    result = runner.invoke(app, ["convert", str(model_file), "-o", str(out), "--calibration", str(npz),
                                 "--min-in-channels", "1", "--json", str(rec)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "calibration: 10 samples (2 held out)" in result.stdout
    data = json.loads(rec.read_text())
    assert data["calibration"]["samples"] == 10
    assert all(layer["output_error_after"] is not None for layer in data["layers"] if layer["status"] == "converted")


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


def test_refit_is_the_same_function_in_every_depthwise_first_layout():
    from convtool.options import RankPolicy

    data, test = _data(), _data(n=4, seed=9)
    outs = {}
    for layout in ("multiplier", "repeat", "branches"):
        res = convert_model(_model(), ConvertOptions(rank=RankPolicy("fixed", 2), layout=layout,
                                                     calibration=CalibrationOptions()), calibration_data=data)
        onnx.checker.check_model(res.model, full_check=True)
        assert all(layer.layout == layout and layer.output_error_after < layer.output_error_before
                   for layer in res.record.layers if layer.converted)
        outs[layout] = run(res.model, test)[0]
    np.testing.assert_allclose(outs["repeat"], outs["multiplier"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outs["branches"], outs["multiplier"], rtol=1e-4, atol=1e-4)


def test_pointwise_first_layers_are_left_as_factorised_with_a_reason():
    res = convert_model(_model(), ConvertOptions(layout="pointwise_first", calibration=CalibrationOptions()),
                        calibration_data=_data())
    reasons = [layer.reason for layer in res.record.calibration.layers]
    assert reasons and all("pointwise_first layout" in r for r in reasons)
    assert res.record.calibration.layers_refitted == 0
