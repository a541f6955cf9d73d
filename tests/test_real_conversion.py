"""convtool on real third-party CNNs (the optional [models] extra; slow)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks import realmodels as rm
from convtool.api import convert_model
from convtool.options import ConvertOptions, RankPolicy

pytestmark = pytest.mark.slow
CONVERTIBLE = ("ppocr_det", "ppocr_rec", "yolov8n")


@pytest.fixture(scope="module")
def models():
    for module in ("rapidocr_onnxruntime", "nudenet"):
        pytest.importorskip(module, reason='needs the [models] extra: pip install -e ".[models]"')
    return rm.find_models()


def _outputs(model: onnx.ModelProto, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_full_rank_is_exact_on_real_models(models, name):
    info = models[name]
    model = onnx.load(info.path)
    shapes = ((info.input_name, tuple(info.input_shape)),)
    result = convert_model(model, ConvertOptions(rank=RankPolicy("full", 0), min_in_channels=1, input_shapes=shapes))
    assert result.record.totals.converted >= 1
    assert {p.key: p.value for p in result.model.metadata_props} == {p.key: p.value for p in model.metadata_props}
    x = np.random.default_rng(0).uniform(0, 1, info.input_shape).astype(np.float32)
    for a, b in zip(_outputs(model, {info.input_name: x}), _outputs(result.model, {info.input_name: x})):
        scale = max(float(np.abs(a).max()), 1e-3)
        assert float(np.abs(a - b).max()) <= max(1e-4 * scale, 1e-6)  # det maps are ~0 on noise


def test_yolov8n_rank1_counts_and_runs(models):
    info = models["yolov8n"]
    model = onnx.load(info.path)
    result = convert_model(model, ConvertOptions(input_shapes=((info.input_name, tuple(info.input_shape)),)))
    totals = result.record.totals
    assert totals.conv_nodes == 64 and totals.converted == 38
    assert totals.macs_after < 0.4 * totals.macs_before
    skipped = {layer.reason for layer in result.record.layers if not layer.converted}
    assert "kernel is 1x1" in skipped and any(r.startswith("stem conv") for r in skipped)
    x = np.random.default_rng(1).uniform(0, 1, info.input_shape).astype(np.float32)
    (y,) = _outputs(result.model, {info.input_name: x})
    assert np.isfinite(y).all()
