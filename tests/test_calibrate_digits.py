"""The issue's acceptance check on the trained digits CNN in sample_models/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from convtool.api import convert_model
from convtool.runtime.run import run_outputs
from convtool.options import CalibrationOptions
from convtool.runtime.inputs import Dataset
from convtool.options import ConvertOptions, RankPolicy

MODELS = Path(__file__).resolve().parent.parent / "sample_models"
pytestmark = pytest.mark.skipif(not (MODELS / "digits_cnn.onnx").exists(), reason="digits sample model not built yet")


def _accuracy(model: onnx.ModelProto, x: np.ndarray, labels: np.ndarray) -> float:
    logits = run_outputs(model, Dataset({"input": x}), batch_size=128)["logits"]
    return float(np.mean(logits.argmax(1) == labels))


def test_rank1_with_calibration_keeps_accuracy_and_removes_60_percent_of_macs():
    model = onnx.load(str(MODELS / "digits_cnn.onnx"))
    with np.load(MODELS / "digits_eval.npz") as f:
        x, labels = f["input"], f["labels"]
    with np.load(MODELS / "digits_calib.npz") as f:
        calib = {"input": f["input"]}
    original = _accuracy(model, x, labels)
    res = convert_model(model, ConvertOptions(rank=RankPolicy("fixed", 1), calibration=CalibrationOptions()),
                        calibration_data=calib)
    onnx.checker.check_model(res.model, full_check=True)
    assert res.record.totals.mac_reduction >= 0.60
    converted = [layer for layer in res.record.layers if layer.converted]
    assert converted and all(layer.output_error_after <= layer.output_error_before for layer in converted)
    calibrated = _accuracy(res.model, x, labels)
    assert calibrated >= original - 0.005, (original, calibrated)
    # and the data-free conversion is much worse: calibration is what makes rank 1 usable
    free = convert_model(model, ConvertOptions(rank=RankPolicy("fixed", 1)))
    assert _accuracy(free.model, x, labels) < calibrated - 0.2
