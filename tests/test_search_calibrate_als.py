"""search/calibrate.py with data-aware factors (the default): both factors fitted per layer on
input-patch moments, the best of {data-free, pointwise refit, ALS} on held-out data kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import SAMPLES, smooth_inputs, three_conv_model
from golden import run

from convtool.api import convert_model
from convtool.options import CalibrationOptions, ConvertOptions, RankPolicy
from convtool.runtime.inputs import Dataset, load
from convtool.runtime.run import run_outputs


def _convert(factors: str, layout: str = "multiplier", rank=RankPolicy.fixed(1), data=None, model=None):
    options = ConvertOptions(rank=rank, layout=layout, calibration=CalibrationOptions(factors=factors))
    return convert_model(model or three_conv_model(), options, calibration_data=data or smooth_inputs(n=32))


def test_data_aware_layers_never_worse_on_held_out_than_pointwise_or_data_free():
    res = _convert("data-aware")
    cal = res.record.calibration
    assert "alternating least squares" in cal.method
    for r in cal.layers:
        assert r.method in ("als", "pointwise", "data-free") and r.moments == "full"
        assert r.output_error_after <= r.output_error_before + 1e-12
        assert r.output_error_after <= r.pointwise_error + 1e-12
        assert r.held_out_positions > 0 and r.fit_positions > 0
    layer_errors = {layer.name: layer.output_error_after for layer in res.record.layers if layer.converted}
    assert layer_errors == {r.name: r.output_error_after for r in cal.layers}


def test_data_aware_beats_pointwise_only_on_correlated_inputs():
    """Smooth (correlated) images: whitening and fitting the depthwise kernels must help at rank 1."""
    pointwise = _convert("pointwise")
    aware = _convert("data-aware")
    test = smooth_inputs(n=16, seed=9)
    ref = run(three_conv_model(), test)[0]

    def drift(model):
        return float(np.linalg.norm(run(model, test)[0] - ref) / np.linalg.norm(ref))

    assert any(r.method == "als" for r in aware.record.calibration.layers)
    assert drift(aware.model) < drift(pointwise.model)


@pytest.mark.parametrize("layout", ["repeat", "branches"])
def test_every_depthwise_first_layout_gets_the_same_fitted_factors(layout):
    """The layouts are permutations of the same factors: written back, they compute the same."""
    base = _convert("data-aware", "multiplier", RankPolicy.fixed(2))
    other = _convert("data-aware", layout, RankPolicy.fixed(2))
    onnx.checker.check_model(other.model, full_check=True)
    test = smooth_inputs(n=4, seed=5)
    np.testing.assert_allclose(run(other.model, test)[0], run(base.model, test)[0], rtol=1e-3, atol=1e-4)
    assert [r.method for r in other.record.calibration.layers] == [r.method for r in base.record.calibration.layers]


def test_full_rank_stays_exact():
    res = _convert("data-aware", rank=RankPolicy.full())
    test = smooth_inputs(n=4, seed=3)
    ref = run(three_conv_model(), test)[0]
    out = run(res.model, test)[0]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-4


def test_digits_rank1_data_aware_lowers_held_out_drift():
    """The trained digits sample at rank 1: drift on the 360 held-out images (no fit saw them)."""
    model = onnx.load(SAMPLES / "digits_cnn.onnx")
    calib = load(SAMPLES / "digits_calib.npz", model)
    calib = Dataset({"input": calib.arrays["input"][:128]}, None, "digits_calib[:128]")
    evaluation = load(SAMPLES / "digits_eval.npz", model, what="--inputs")
    ref = run_outputs(model, evaluation)["logits"]
    drifts = {}
    for factors in ("pointwise", "data-aware"):
        res = _convert(factors, data=calib, model=model)
        out = run_outputs(res.model, evaluation)["logits"]
        drifts[factors] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    assert drifts["data-aware"] < drifts["pointwise"]


def test_cli_refit_flag_chooses_the_method(tmp_path):
    import json

    from typer.testing import CliRunner

    from convtool.cli.app import app

    model, data = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(three_conv_model(), model)
    np.savez(data, **smooth_inputs(n=24))
    methods = {}
    for refit in ("pointwise", "data-aware"):
        out, js = tmp_path / f"{refit}.onnx", tmp_path / f"{refit}.json"
        res = CliRunner().invoke(app, ["convert", str(model), "-o", str(out), "--layout", "multiplier", "--calibration",
                                       str(data), "--refit", refit, "--json", str(js)])
        assert res.exit_code == 0, res.output
        record = json.loads(js.read_text())
        methods[refit] = {layer["method"] for layer in record["calibration"]["layers"]}
        assert ("alternating least squares" in record["calibration"]["method"]) == (refit == "data-aware")
    assert methods["pointwise"] == {"pointwise"}
    assert methods["data-aware"] <= {"als", "pointwise", "data-free"} and "als" in methods["data-aware"]
    bad = CliRunner().invoke(app, ["convert", str(model), "--calibration", str(data), "--refit", "both"])
    assert bad.exit_code == 2 and "--refit" in bad.output


@pytest.mark.parametrize("factors", ["data-aware", "pointwise"])
def test_budget_search_final_model_is_the_measured_one(factors):
    """Trials refit the pointwise weights; the final model gets data-aware factors only when their
    held-out drift is measured within the budget - the reported drift is the returned model's."""
    from convtool.analysis.drift import compare_outputs

    model, data = three_conv_model(), smooth_inputs(n=32)
    cal = CalibrationOptions(factors=factors)
    res = convert_model(model, ConvertOptions(max_drift=0.45, search_ranks=(1, 2), objective="macs", layout="multiplier",
                                              calibration=cal), calibration_data=data)
    search = res.record.search
    assert search.factors == factors or (factors == "data-aware" and search.factors == "pointwise"
                                         and any("kept the pointwise refit" in w for w in res.record.warnings))
    _, held = Dataset(data).split(cal.holdout, cal.seed + 1)
    measured = compare_outputs(run_outputs(model, held), run_outputs(res.model, held)).value("rel_l2")
    assert measured == pytest.approx(search.drift, rel=1e-6) and measured <= 0.45
    if res.record.totals.converted:
        methods = {r.method for r in res.record.calibration.layers}
        assert methods <= ({"pointwise", "data-free"} if search.factors == "pointwise" else {"als", "pointwise", "data-free"})
