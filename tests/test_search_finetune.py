"""``--finetune``: the torch interpreter, the write-back, the keep-only-if-better rule.

Tests that need torch carry the ``finetune`` marker (deselected by default, like ``slow``):
``pip install torch==2.13.0 && pytest -m finetune`` (``.ci/run`` does it).  The tests without
the marker check what must hold without torch: one clear error line, and no module but the
optional-extra ones imports torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import SAMPLES, make_model, smooth_inputs, three_conv_model, with_output_shapes
from onnx import TensorProto, helper, numpy_helper

from convtool.errors import OptionError
from convtool.options import CalibrationOptions, ConvertOptions, FinetuneOptions, RankPolicy

ROOT = Path(__file__).resolve().parent.parent
TORCH_MODULES = {"convtool/runtime/torch_graph.py", "convtool/search/finetune.py"}

finetune_mark = pytest.mark.finetune


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _options(**finetune) -> ConvertOptions:
    return ConvertOptions(rank=RankPolicy.fixed(1), calibration=CalibrationOptions(holdout=0.25),
                          finetune=FinetuneOptions(**{"steps": 40, "seconds": None, "batch_size": 8, **finetune}))


# --- without torch ------------------------------------------------------------------------------

def test_only_the_optional_extra_modules_import_torch():
    offenders = []
    for path in sorted((ROOT / "convtool").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if rel not in TORCH_MODULES and ("import torch" in text or "from torch" in text):
            offenders.append(rel)
    assert not offenders, offenders


def test_convert_runs_with_torch_unimportable(tmp_path):
    """With torch blocked, the CLI converts (and calibrates) as before, and --finetune is one
    error line naming the extra."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from convtool.cli import main\n"
        "sys.argv = ['convtool'] + sys.argv[1:]\n"
        "main()\n"
    )
    model = str(SAMPLES / "digits_cnn.onnx")
    ok = subprocess.run([sys.executable, "-c", code, "convert", model, "-o", str(tmp_path / "a.onnx"), "-q"],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-c", code, "convert", model, "-o", str(tmp_path / "b.onnx"),
                          "--calibration", str(SAMPLES / "digits_calib.npz"), "--finetune", "-q"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert lines == ['error: --finetune needs torch: pip install "onnx-dwsconv[finetune]" '
                     "(or pip install torch==2.13.0 for the CPU build)"]
    assert not (tmp_path / "b.onnx").exists()


def test_finetune_needs_calibration_data():
    from convtool.api import convert_model

    with pytest.raises(OptionError, match="--finetune needs calibration data"):
        convert_model(three_conv_model(), ConvertOptions(finetune=FinetuneOptions()))


@pytest.mark.parametrize("bad", [{"steps": 0}, {"seconds": 0}, {"lr": 0}, {"shift": 0.5}, {"threads": 0}])
def test_options_are_validated(bad):
    with pytest.raises(OptionError):
        FinetuneOptions(**bad)


# --- the interpreter ----------------------------------------------------------------------------

@finetune_mark
@pytest.mark.parametrize("layout", ["multiplier", "repeat", "branches", "pointwise_first"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_interpreter_matches_onnxruntime_on_converted_models(layout, dims):
    import torch

    from convtool.convert import convert
    from convtool.runtime.torch_graph import TorchGraph, unsupported

    model = convert(three_conv_model(dims), ConvertOptions(rank=RankPolicy.fixed(2), layout=layout,
                                                           min_in_channels=1), count_macs=False).model
    assert not unsupported(model)
    x = smooth_inputs(4, dims)
    with torch.no_grad():
        got = TorchGraph(model).run(x)["y"].numpy()
    np.testing.assert_allclose(got, _ort(model, x)[0], rtol=1e-4, atol=1e-4)


def _many_ops_model() -> onnx.ModelProto:
    """Ops the sample models and typical CNN heads use, with shape arithmetic in between."""
    rng = np.random.default_rng(0)

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr), name)

    inits = [
        init("w", rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3),
        init("wt", rng.standard_normal((4, 8, 2, 2)).astype(np.float32) * 0.3),
        init("scale", np.full(4, 2.0, np.float32)), init("bnb", np.zeros(4, np.float32)),
        init("mean", np.zeros(4, np.float32)), init("var", np.ones(4, np.float32)),
        init("lo", np.array(0.0, np.float32)), init("hi", np.array(6.0, np.float32)),
        init("split", np.array([4, 4], np.int64)), init("pads", np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64)),
        init("roi", np.array([], np.float32)), init("scales", np.array([1, 1, 2, 2], np.float32)),
        init("starts", np.array([1], np.int64)), init("ends", np.array([-1], np.int64)),
        init("axes", np.array([3], np.int64)), init("idx", np.array(0, np.int64)),
        init("minus1", np.array([-1], np.int64)), init("fcw", rng.standard_normal((16 * 6 * 5, 5)).astype(np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("BatchNormalization", ["x", "scale", "bnb", "mean", "var"], ["bn"]),
        n("Conv", ["bn", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Clip", ["c", "lo", "hi"], ["clip"]),
        n("Split", ["clip", "split"], ["s1", "s2"], axis=1),
        n("HardSigmoid", ["s1"], ["hs"], alpha=0.2, beta=0.5),
        n("Mul", ["hs", "s2"], ["mul"]),
        n("HardSwish", ["s2"], ["hsw"]),
        n("Sigmoid", ["hsw"], ["sig"]),
        n("Sum", ["mul", "sig", "s1"], ["sum"]),
        n("Pad", ["sum", "pads"], ["pad"], mode="reflect"),
        n("MaxPool", ["pad"], ["mp"], kernel_shape=[2, 2], strides=[1, 1]),
        n("Resize", ["mp", "roi", "scales"], ["up"], mode="nearest", coordinate_transformation_mode="asymmetric",
          nearest_mode="floor"),
        n("AveragePool", ["up"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
          count_include_pad=0),
        n("Constant", [], ["k"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
        n("Add", ["ap", "k"], ["add"]),
        n("ConvTranspose", ["add", "wt"], ["ct"], strides=[2, 2]),
        n("Concat", ["ct", "ct"], ["cat"], axis=1),
        n("Slice", ["cat", "starts", "ends", "axes"], ["sl"]),
        n("GlobalAveragePool", ["sl"], ["gap"]),
        n("Shape", ["sl"], ["shape"]),
        n("Gather", ["shape", "idx"], ["batch"], axis=0),
        n("Unsqueeze", ["batch", "idx"], ["batch1"]),
        n("Concat", ["batch1", "minus1"], ["newshape"], axis=0),
        n("AveragePool", ["sl"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Transpose", ["pooled"], ["tr"], perm=[0, 2, 3, 1]),
        n("Reshape", ["tr", "newshape"], ["flat"]),
        n("Slice", ["flat", "starts", "ends"], ["flat2"]),
        n("MatMul", ["flat", "fcw"], ["mm"]),
        n("Softmax", ["mm"], ["probs"], axis=-1),
        n("Flatten", ["gap"], ["gapf"]),
        n("Identity", ["gapf"], ["pooled_out"]),
    ]
    graph = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 12, 12])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("pooled_out", TensorProto.FLOAT, None)], inits)
    return with_output_shapes(make_model(graph, opset=17))


@finetune_mark
def test_interpreter_matches_onnxruntime_on_many_ops():
    import torch

    from convtool.runtime.torch_graph import TorchGraph, unsupported

    model = _many_ops_model()
    onnx.checker.check_model(model, full_check=True)
    assert not unsupported(model)
    x = {"x": np.random.default_rng(1).standard_normal((3, 4, 12, 12)).astype(np.float32)}
    with torch.no_grad():
        got = TorchGraph(model).run(x)
    for name, want in zip(("probs", "pooled_out"), _ort(model, x)):
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-4, atol=1e-5)


@finetune_mark
def test_unsupported_ops_are_named_and_not_trained():
    from convtool.records import LayerChange
    from convtool.runtime.inputs import validate
    from convtool.runtime.torch_graph import unsupported
    from convtool.search.finetune import finetune

    model = three_conv_model()
    model.graph.node[-1].op_type = "Celu"  # the Identity at the end: valid ONNX, not interpreted
    assert unsupported(model) == ["Celu (out)"]
    layer = LayerChange("conv2", "converted", None, [3, 3], 16, 16, 2, rank=1, new_nodes=["conv2"])
    data = validate(smooth_inputs(8), model)
    result = finetune(model, model, [layer], data, None, FinetuneOptions(steps=2))
    assert result.model is model and not result.summary.kept
    assert result.summary.decision.startswith("not run: the torch interpreter does not run Celu (out)")


# --- training, write-back, decision -------------------------------------------------------------

def _calibrated(options: ConvertOptions, n: int = 32):
    from convtool.api import convert_model

    data = smooth_inputs(n)
    model = three_conv_model()
    return model, data, convert_model(model, options, calibration_data=data)


@finetune_mark
def test_finetune_writes_back_only_the_factor_weights():
    from convtool.api import convert_model

    model, data, result = _calibrated(_options())
    plain = convert_model(model, ConvertOptions(rank=RankPolicy.fixed(1),
                                                calibration=CalibrationOptions(holdout=0.25)), calibration_data=data)
    summary = result.record.finetune
    assert summary is not None and summary.kept, summary
    assert summary.held_out_drift_after < summary.held_out_drift_before
    assert summary.steps == 40 and summary.stopped_by == "steps" and summary.ort_error < 1e-4

    tuned, calibrated = result.model, plain.model
    onnx.checker.check_model(tuned, full_check=True)
    assert tuned.opset_import == calibrated.opset_import and tuned.ir_version == calibrated.ir_version
    assert tuned.metadata_props == calibrated.metadata_props and tuned.producer_name == calibrated.producer_name
    assert tuned.graph.input == calibrated.graph.input and tuned.graph.output == calibrated.graph.output
    assert list(tuned.graph.node) == list(calibrated.graph.node)  # same nodes, names, attributes, order
    trained = {name for layer in result.record.layers if layer.converted for node in tuned.graph.node
               if node.name in layer.new_nodes and node.op_type == "Conv" for name in node.input[1:]}
    before = {t.name: numpy_helper.to_array(t) for t in calibrated.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in tuned.graph.initializer}
    assert list(before) == list(after)
    changed = {name for name in after if not np.array_equal(after[name], before[name])}
    assert changed and changed <= trained
    assert all(after[name].dtype == before[name].dtype for name in after)

    record = result.record.to_dict()["finetune"]
    assert record["kept"] is True and record["steps"] == 40 and record["decision"].startswith("kept")


@finetune_mark
def test_onnxruntime_reproduces_the_trained_student():
    import torch

    from convtool.runtime.torch_graph import TorchGraph

    _, data, result = _calibrated(_options(steps=10))
    x = {"x": data["x"][:4]}
    with torch.no_grad():
        student = TorchGraph(result.model).run(x)["y"].numpy()
    np.testing.assert_allclose(_ort(result.model, x)[0], student, rtol=1e-4, atol=1e-5)


@finetune_mark
def test_a_worse_result_is_discarded_and_the_calibrated_model_kept():
    """At full rank the calibrated model is exact, so training can only add drift: discarded."""
    from convtool.api import convert_model

    options = ConvertOptions(rank=RankPolicy.full(), calibration=CalibrationOptions(holdout=0.25),
                             finetune=FinetuneOptions(steps=5, seconds=None, batch_size=8, lr=0.05))
    data = smooth_inputs(32)
    model = three_conv_model()
    result = convert_model(model, options, calibration_data=data)
    plain = convert_model(model, ConvertOptions(rank=RankPolicy.full(), calibration=CalibrationOptions(holdout=0.25)),
                          calibration_data=data)
    summary = result.record.finetune
    assert summary is not None and not summary.kept
    assert summary.decision.startswith("discarded: held-out drift did not drop")
    assert summary.held_out_drift_after >= summary.held_out_drift_before
    assert result.model.SerializeToString() == plain.model.SerializeToString()
    assert any(w.startswith("--finetune: discarded") for w in result.record.warnings)


@finetune_mark
def test_time_budget_stops_training():
    _, _, result = _calibrated(_options(steps=100000, seconds=1.0))
    summary = result.record.finetune
    assert summary is not None and summary.stopped_by == "time" and 0 < summary.steps < 100000


@finetune_mark
def test_finetune_composes_with_max_drift():
    from convtool.api import convert_model

    options = ConvertOptions(max_drift=0.5, metric="rel_l2", objective="macs", search_ranks=(1, 2),
                             calibration=CalibrationOptions(holdout=0.25),
                             finetune=FinetuneOptions(steps=10, seconds=None, batch_size=8))
    result = convert_model(three_conv_model(), options, calibration_data=smooth_inputs(32))
    summary = result.record.finetune
    if result.record.totals.converted:
        assert summary is not None and "inside the --max-drift search" in (summary.search or "")
        assert summary.held_out_samples == result.record.search.held_out_samples
        attempts = result.record.search.finetune_attempts
        assert 1 <= len(attempts) <= 3
        kept = [a for a in attempts if a["kept"]]
        assert all(a["drift"] <= 0.5 for a in kept)
        # the written model is the fine-tuned plan the search measured
        assert result.record.search.drift == pytest.approx(max(kept, key=lambda a: a["gain"])["drift"])


@finetune_mark
def test_finetune_composes_with_sweep(tmp_path):
    """Each point of a sweep is fine-tuned like convert would, before it is measured."""
    from convtool.api import sweep_model
    from convtool.options import LatencyOptions, SweepOptions

    options = ConvertOptions(metric="rel_l2", objective="macs", search_ranks=(1,), layout="multiplier",
                             calibration=CalibrationOptions(holdout=0.25),
                             finetune=FinetuneOptions(steps=10, seconds=None, batch_size=8),
                             timing=LatencyOptions(cache_dir=str(tmp_path), confirm_runs=3, min_runs=3, max_runs=3))
    result = sweep_model(three_conv_model(), options, SweepOptions(budgets=(0.0, 10.0), runs=3),
                         smooth_inputs(32), smooth_inputs(8, seed=7))
    first, last = result.record.points
    assert first.converted == 0 and not first.finetuned
    assert last.converted == 3
    assert last.finetuned or any("--finetune" in w for w in result.record.warnings)


@finetune_mark
def test_cli_finetune_on_the_digits_sample(tmp_path):
    import json

    from typer.testing import CliRunner

    from convtool.cli import app

    out, rec = tmp_path / "d.onnx", tmp_path / "d.json"
    res = CliRunner().invoke(app, ["convert", str(SAMPLES / "digits_cnn.onnx"), "-o", str(out), "--json", str(rec),
                                   "--calibration", str(SAMPLES / "digits_calib.npz"), "--calibration-samples", "64",
                                   "--finetune", "--finetune-steps", "3"],
                             env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "fine-tune:" in res.output
    data = json.loads(rec.read_text())["finetune"]
    assert data["steps"] == 3 and data["held_out_samples"] > 0 and data["decision"]


@finetune_mark
def test_accuracy_benchmark_finetune_smoke():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--finetune", "--smoke"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| digits | 1 | 5/6 |" in proc.stdout and "held-out drift (refit -> fine-tuned)" in proc.stdout
