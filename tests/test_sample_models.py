"""The bundled sample models are valid, runnable, reproducible and fit for the converter.

These tests read only the committed files in sample_models/ (no torch, no scikit-learn): the
synthetic models are rebuilt by sample_models/build.py and compared byte for byte; the trained
digits model is checked against its committed held-out set.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import SAMPLES
from onnx import numpy_helper
BUILT = ["vgg_style.onnx", "resnet_style.onnx"]
MODELS = [*BUILT, "digits_cnn.onnx"]
MIN_IN_CHANNELS = 8  # the converter's default: stems with fewer input channels are skipped


def _load(name: str) -> onnx.ModelProto:
    return onnx.load(str(SAMPLES / name))


def _conv_in_channels(model: onnx.ModelProto) -> dict[str, int]:
    """Conv node name -> input channels (weight dim 1 times group)."""
    weights = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out[node.name] = int(weights[node.input[1]].dims[1]) * group
    return out


def _session(name: str):
    import onnxruntime as ort

    return ort.InferenceSession(str(SAMPLES / name), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", MODELS)
def test_model_passes_full_check(name: str) -> None:
    model = _load(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]


@pytest.mark.parametrize("name", MODELS)
def test_model_runs_in_onnxruntime(name: str) -> None:
    sess = _session(name)
    (inp,) = sess.get_inputs()
    shape = [d if isinstance(d, int) else 2 for d in inp.shape]  # symbolic batch -> 2
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (logits,) = sess.run(["logits"], {"input": x})
    assert logits.shape == (shape[0], 10)
    assert np.isfinite(logits).all()
    # random weights still give non-degenerate outputs (activations neither vanish nor explode)
    assert 1e-2 < float(np.abs(logits).mean()) < 1e2


@pytest.mark.parametrize("name", MODELS)
def test_model_is_a_converter_target(name: str) -> None:
    model = _load(name)
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" in ops
    in_channels = _conv_in_channels(model)
    assert any(c >= MIN_IN_CHANNELS for c in in_channels.values()), in_channels
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names), "node names must be unique and non-empty"


def test_synthetic_models_have_the_documented_shapes() -> None:
    vgg = _conv_in_channels(_load("vgg_style.onnx"))
    assert sorted(vgg.values()) == [3, 64, 64, 128, 128, 256]
    resnet = _load("resnet_style.onnx")
    assert sum(n.op_type == "Conv" for n in resnet.graph.node) == 15
    assert sum(n.op_type == "Add" for n in resnet.graph.node) == 6
    dims = resnet.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 64, 64]


def test_build_script_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SAMPLES / "build.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in BUILT:
        rebuilt = (tmp_path / name).read_bytes()
        assert rebuilt == (SAMPLES / name).read_bytes(), f"{name} differs from build.py's output"


def test_committed_samples_are_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLES.iterdir() if p.suffix in {".onnx", ".npz"})
    assert total < 15e6


def test_digits_model_is_accurate_on_held_out_set() -> None:
    with np.load(SAMPLES / "digits_eval.npz") as data:
        x, labels = data["input"], data["labels"]
    (logits,) = _session("digits_cnn.onnx").run(["logits"], {"input": x})
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy > 0.95, f"held-out top-1 {accuracy:.4f}"


def test_digits_eval_and_calibration_sets() -> None:
    with np.load(SAMPLES / "digits_eval.npz") as data:
        assert sorted(data.files) == ["input", "labels"]
        x_eval, labels = data["input"], data["labels"]
    with np.load(SAMPLES / "digits_calib.npz") as data:
        assert data.files == ["input"]
        x_calib = data["input"]
    assert x_eval.dtype == np.float32 and x_calib.dtype == np.float32
    assert labels.dtype == np.int64
    assert x_eval.shape[1:] == x_calib.shape[1:] == (1, 32, 32)
    assert labels.shape == (x_eval.shape[0],)
    assert x_eval.shape[0] >= 300 and x_calib.shape[0] >= 100
    assert set(np.unique(labels).tolist()) == set(range(10))
    eval_rows = {row.tobytes() for row in x_eval}
    calib_rows = {row.tobytes() for row in x_calib}
    assert len(calib_rows) == len(x_calib)
    assert not eval_rows & calib_rows, "calibration samples overlap the held-out set"


def test_digits_weights_are_float32_constants() -> None:
    model = _load("digits_cnn.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv":
            assert inits[node.input[1]].dtype == np.float32
    assert not {i.name for i in model.graph.input} & inits.keys()
