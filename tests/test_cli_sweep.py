"""``convtool sweep`` on the command line: issue 14, items 5, 7, 8, 9 and 11.

Every timing is faked (the layer pairs, the end-to-end checks and the final loop, as in
``test_search_sweep.py``): these tests check what is printed, written and refused.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from builders import smooth_inputs, three_conv_model
from clirun import invoke
from test_search_sweep import Fake



@pytest.fixture(autouse=True)
def fake(monkeypatch):
    return Fake.install(monkeypatch)


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(three_conv_model(), model)
    np.savez(tmp_path / "calib.npz", **smooth_inputs(n=16))
    np.savez(tmp_path / "eval.npz", **smooth_inputs(n=12, seed=7))
    return tmp_path


def sweep(tmp_path, *args, width=200, calibration="calib.npz", inputs="eval.npz", out="out"):
    base = ["sweep", str(tmp_path / "m.onnx"), "--search-ranks", "1,2", "--no-cache", "--runs", "3"]
    if calibration:
        base += ["--calibration", str(tmp_path / calibration)]
    if inputs:
        base += ["--inputs", str(tmp_path / inputs)]
    if out:
        base += ["--out", str(tmp_path / out)]
    return invoke(*base, *args, width=width)


def one_error_line(res, code=2) -> str:
    assert res.exit_code == code, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: "), res.output
    return lines[-1]


# ---------------------------------------------------------------- item 5: 80 columns


@pytest.mark.parametrize("width", [80, 120])
def test_sweep_table_fits_the_console_with_whole_speedups_and_the_pareto_column(files, width):
    res = sweep(files, "--budgets", "0.2,10", "--objective", "macs", width=width)
    assert res.exit_code == 0, res.output
    record = json.loads((files / "out" / "sweep.json").read_text())
    lines = res.stdout.splitlines()
    table = [line for line in lines if re.match(r"^\s*(0\.2|10) .*x \(", line)]  # not a wrapped "in 0.2 s"
    assert len(table) == 2, res.stdout
    assert all(len(line) <= width for line in table + [line for line in lines if "Pareto" in line]), res.stdout
    for point, line in zip(record["points"], table):
        assert f"{point['speedup']:.2f}x ({point['ci_low']:.2f}-{point['ci_high']:.2f})" in line, res.stdout
        assert line.rstrip().endswith("*") == point["pareto"], res.stdout
    header = next(line for line in lines if "budget" in line and "speedup" in line)
    assert "Pareto" in header, res.stdout


def test_sweep_warnings_speak_of_budgets_not_max_drift(files):
    """Issue 14 item 12: sweep has --budgets; its warnings named --max-drift, and said "(s)"."""
    res = sweep(files, "--budgets", "0.2,10", "--objective", "macs")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert any("held-out samples" in w for w in warnings), res.output  # 16 samples: a small held-out split
    assert not any("--max-drift" in w or "(s)" in w for w in warnings), res.output
    assert "--max-drift" not in (files / "out" / "sweep.md").read_text()


# ---------------------------------------------------------------- item 7: evaluation data = calibration data


def test_the_same_file_as_calibration_and_evaluation_data_is_refused(files):
    res = sweep(files, "--budgets", "10", inputs="calib.npz")
    line = one_error_line(res)
    assert "--inputs and --calibration both name" in line and "never sees" in line
    assert not (files / "out").exists()


def test_the_same_arrays_in_another_file_are_refused(files):
    (files / "copy.npz").write_bytes((files / "calib.npz").read_bytes())
    res = sweep(files, "--budgets", "10", inputs="copy.npz")
    line = one_error_line(res)
    assert "is the calibration data" in line and "16" in line
    assert not (files / "out").exists()


def test_overlapping_samples_are_a_warning(files):
    calib, ev = smooth_inputs(n=16), smooth_inputs(n=12, seed=7)
    np.savez(files / "mixed.npz", **{k: np.concatenate([v[:3], ev[k][3:]]) for k, v in calib.items()})
    res = sweep(files, "--budgets", "10", "--objective", "macs", inputs="mixed.npz")
    assert res.exit_code == 0, res.output
    assert "warning: 3 of the 12 evaluation samples are also calibration samples" in res.output
    assert "3 of the 12 evaluation samples" in (files / "out" / "sweep.md").read_text()


# ---------------------------------------------------------------- item 8: --out under a file


def test_out_below_a_file_is_a_one_line_error(files):
    (files / "notes.txt").write_text("mine\n")
    res = sweep(files, "--budgets", "10", out="notes.txt/sub")
    line = one_error_line(res)
    assert "notes.txt is a file, not a folder" in line and "unexpected" not in line
    assert (files / "notes.txt").read_text() == "mine\n"


def test_out_that_is_a_file_is_a_one_line_error(files):
    (files / "notes.txt").write_text("mine\n")
    line = one_error_line(sweep(files, "--budgets", "10", out="notes.txt"))
    assert "--out" in line and "is a file, not a folder" in line


# ---------------------------------------------------------------- item 9: nothing written on error


def _bad_name(tmp):
    np.savez(tmp / "bad.npz", wrong=smooth_inputs(n=12)["x"])
    return {"inputs": "bad.npz"}


def _bad_shape(tmp):
    np.savez(tmp / "bad.npz", x=np.zeros((4, 3, 5, 5), np.float32))
    return {"inputs": "bad.npz"}


def _label_count(tmp):
    np.savez(tmp / "bad.npz", **smooth_inputs(n=12, seed=7), labels=np.zeros(5, np.int64))
    return {"inputs": "bad.npz"}


def _empty(tmp):
    np.savez(tmp / "bad.npz", x=np.zeros((0, *smooth_inputs(n=1)["x"].shape[1:]), np.float32))
    return {"inputs": "bad.npz"}


def _finetune_without_calibration(tmp):
    return {"calibration": None, "args": ["--finetune"]}


def _provider(tmp):
    return {"args": ["--provider", "NoSuchExecutionProvider"]}


def _no_torch(tmp):
    return {"args": ["--finetune"], "no_torch": True}


@pytest.mark.parametrize("case", [_bad_name, _bad_shape, _label_count, _empty, _finetune_without_calibration,
                                  _provider, _no_torch])
@pytest.mark.parametrize("out", ["new", "new/deeper"])
def test_a_failed_sweep_leaves_no_out_folder(files, monkeypatch, case, out):
    spec = case(files)
    if spec.get("no_torch"):
        from convtool.errors import OptionError
        from convtool.search import finetune

        def no_torch(data):
            raise OptionError("--finetune needs torch: pip install \"onnx-dwsconv[finetune]\"")

        monkeypatch.setattr(finetune, "check_ready", no_torch)
    res = sweep(files, "--budgets", "10", *spec.get("args", []), out=out, inputs=spec.get("inputs", "eval.npz"),
                calibration=spec.get("calibration", "calib.npz"))
    one_error_line(res)
    assert not (files / "new").exists(), sorted(p.name for p in (files / "new").rglob("*"))


def test_a_failure_after_the_work_removes_what_it_wrote(files, monkeypatch):
    from convtool.render import sweep as render

    def broken(record, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(render, "svg", broken)
    res = sweep(files, "--budgets", "10", "--objective", "macs", "--save-models", out="new")
    assert res.exit_code != 0, res.output
    assert not (files / "new").exists()


# ---------------------------------------------------------------- item 11: budgets


@pytest.mark.parametrize("budgets, message", [
    ("0.05,0.1,0.05", "--budgets lists 0.05 twice"),
    ("0.05,,0.1", "--budgets has an empty item"),
    ("0.05,0.1,", "--budgets has an empty item"),
    ("nan", "--budgets must be finite numbers, got 'nan'"),
    ("0.1,inf", "--budgets must be finite numbers, got 'inf'"),
    ("0,0.1", "--budgets must be > 0, got 0 (a budget of 0 allows no drift"),
    ("-0.1", "--budgets must be > 0"),
    ("abc", "--budgets must be comma-separated numbers"),
])
def test_bad_budgets_are_one_line_errors(files, budgets, message):
    line = one_error_line(sweep(files, "--budgets", budgets))
    assert message in line, line
    assert not (files / "out").exists()


def test_labels_outside_the_models_classes_are_a_warning(tmp_path):
    from convtool.api import sweep_model
    from convtool.options import CalibrationOptions, ConvertOptions, LatencyOptions, SweepOptions

    model = _classifier()
    x = np.random.default_rng(0).standard_normal((20, 8, 6, 6)).astype(np.float32)
    ev = {"input": x[:10], "labels": np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])}  # the model has 4 classes
    options = ConvertOptions(calibration=CalibrationOptions(), search_ranks=(1,), objective="macs",
                             timing=LatencyOptions(use_cache=False), min_in_channels=1)
    result = sweep_model(model, options, SweepOptions(budgets=(10.0,), runs=3), {"input": x[10:]}, ev)
    warning = next(w for w in result.record.warnings if "labels" in w)
    assert "6 of 10 labels are outside the model's 4 classes (0-3; found 4..9)" in warning


def _classifier() -> onnx.ModelProto:
    """Conv 8->8 3x3, global average pool, flatten: 8 channels -> Gemm to 4 class scores."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "g")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "g"], ["scores"])]
    graph = helper.make_graph(nodes, "clf", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8, 6, 6])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])], [w, g])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_float64_data_is_cast_with_a_note(files):
    np.savez(files / "eval64.npz", **{k: v.astype(np.float64) for k, v in smooth_inputs(n=12, seed=7).items()})
    res = sweep(files, "--budgets", "10", "--objective", "macs", inputs="eval64.npz")
    assert res.exit_code == 0, res.output
    assert "array 'x' is float64, cast to the model's float32" in res.output
