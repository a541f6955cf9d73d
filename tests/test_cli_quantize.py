"""``convtool convert --quantize int8``: the written model is quantized, validated and recorded;
``--quantize`` without calibration data, or with another type, is a one-line error (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from clirun import invoke

from convtool.runtime.inputs import load
from convtool.runtime.run import run_outputs

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"


@pytest.fixture
def digits(tmp_path) -> tuple[Path, Path]:
    model = tmp_path / "digits.onnx"
    shutil.copy(SAMPLES / "digits_cnn.onnx", model)
    calib = tmp_path / "calib.npz"
    with np.load(SAMPLES / "digits_calib.npz") as z:
        np.savez(calib, input=z["input"][:40])
    return model, calib


def test_quantize_writes_a_validated_int8_model_and_records_it(digits, tmp_path):
    model, calib = digits
    out, rec = tmp_path / "out.onnx", tmp_path / "rec.json"
    res = invoke("convert", model, "-o", out, "--rank", "2", "--calibration", calib, "--refit", "pointwise",
                 "--quantize", "int8", "--json", rec)
    assert res.exit_code == 0, res.output
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    assert any(n.op_type == "DequantizeLinear" for n in written.graph.node)
    q = json.loads(rec.read_text())["quantization"]
    assert q["activations"] == "uint8" and q["weights"] == "int8" and q["per_channel"] and q["method"] == "minmax"
    assert q["equalized"] and all(p["imbalance_after"] == pytest.approx(1.0) for p in q["equalized"])
    assert q["drift_samples"] == 8 and 0 < q["drift"] < 0.5 and q["size_after"] < q["size_before"]
    assert "INT8: written quantized" in res.output
    data = load(SAMPLES / "digits_eval.npz", written, max_samples=64)
    scores = run_outputs(written, data)["logits"]
    assert np.mean(np.argmax(scores, 1) == data.labels) > 0.9


def test_quantize_without_calibration_data_is_a_one_line_error(digits, tmp_path):
    model, _ = digits
    res = invoke("convert", model, "-o", tmp_path / "out.onnx", "--quantize", "int8")
    assert res.exit_code == 2, res.output
    assert "--quantize int8 needs --calibration" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out.onnx").exists()


def test_quantize_takes_only_int8(digits, tmp_path):
    model, calib = digits
    res = invoke("convert", model, "-o", tmp_path / "out.onnx", "--calibration", calib, "--quantize", "int4")
    assert res.exit_code == 2, res.output
    assert "--quantize must be int8" in res.output and not (tmp_path / "out.onnx").exists()


def test_library_refuses_quantize_without_data():
    from convtool.api import convert_model
    from convtool.errors import OptionError
    from convtool.options import ConvertOptions, QuantizeOptions

    with pytest.raises(OptionError, match="needs calibration data"):
        convert_model(onnx.load(str(SAMPLES / "digits_cnn.onnx")), ConvertOptions(quantize=QuantizeOptions()))
