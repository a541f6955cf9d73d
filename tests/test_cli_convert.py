"""The convert command as a pipeline sees it: exit codes, JSON record, files, messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import conv_model
from clirun import invoke
from golden import compare

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "sample_models" / "vgg_style.onnx"

LAYER_KEYS = {"name", "status", "reason", "kernel", "in_channels", "out_channels", "group", "rank",
              "params_before", "params_after", "macs_before", "macs_after", "weight_error"}
TOTAL_KEYS = {"conv_nodes", "converted", "skipped", "params_before", "params_after", "macs_before", "macs_after"}


@pytest.fixture
def vgg(tmp_path) -> Path:
    target = tmp_path / "vgg.onnx"
    shutil.copy(VGG, target)
    return target


def test_convert_writes_model_and_json_record(vgg, tmp_path):
    out, rec = tmp_path / "out.onnx", tmp_path / "rec.json"
    res = invoke("convert", vgg, "-o", out, "--rank", "2", "--json", rec)
    assert res.exit_code == 0, res.output
    data = json.loads(rec.read_text())
    assert data["input"] == str(vgg) and data["output"] == str(out)
    assert {"input", "output", "layers", "totals"} <= data.keys()
    assert TOTAL_KEYS <= data["totals"].keys()
    for layer in data["layers"]:
        assert LAYER_KEYS <= layer.keys()
        assert layer["status"] in ("converted", "skipped")
        assert (layer["reason"] is None) == (layer["status"] == "converted")
    converted = [layer for layer in data["layers"] if layer["status"] == "converted"]
    assert converted and all(layer["rank"] == 2 for layer in converted)
    assert all(layer["macs_after"] < layer["macs_before"] for layer in converted)
    t = data["totals"]
    assert t["converted"] + t["skipped"] == t["conv_nodes"] == 6
    assert t["macs_after"] < t["macs_before"] and t["params_after"] < t["params_before"]
    # whole-model params: the converted file's initializers, counted independently
    model = onnx.load(out)
    assert t["params_after"] == sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    assert "stage1.conv1" in res.output and "skip: stem conv" in res.output
    assert "warning: data-free factorisation" in res.output


def test_default_output_name_and_full_rank_exact(vgg):
    res = invoke("convert", vgg, "--rank", "full", "-q")
    assert res.exit_code == 0, res.output
    out = vgg.with_name("vgg.dws.onnx")
    assert out.exists()
    assert max(compare(onnx.load(vgg), onnx.load(out))) < 1e-5


def test_dry_run_writes_nothing(vgg, tmp_path):
    res = invoke("convert", vgg, "--dry-run")
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg.onnx"]


def test_refuses_to_overwrite_input(vgg):
    before = vgg.read_bytes()
    res = invoke("convert", vgg, "-o", vgg)
    assert res.exit_code == 2, res.output
    assert "error: refusing to overwrite the input model" in res.output
    assert vgg.read_bytes() == before


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"", "file is empty"),
    (b"this is not onnx at all", "not a readable ONNX model"),
    ("truncated", "not a readable ONNX model"),
])
def test_bad_input_files(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        path.write_bytes(VGG.read_bytes()[:5000])
    elif content is not None:
        path.write_bytes(content)
    res = invoke("convert", path, "--json", tmp_path / "r.json")
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output
    assert "Traceback" not in res.output
    leftovers = {p.name for p in tmp_path.iterdir()} - {"bad.onnx"}
    assert not leftovers


def test_invalid_graph(tmp_path):
    model = conv_model(2)
    model.graph.node[0].input[1] = "does_not_exist"
    path = tmp_path / "invalid.onnx"
    onnx.save(model, path)
    res = invoke("convert", path)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and "is not a valid ONNX graph" in res.output
    assert not path.with_name("invalid.dws.onnx").exists()


@pytest.mark.parametrize("args,message", [
    (["--rank", "0"], "--rank must be >= 1"),
    (["--rank", "abc"], "--rank must be a positive integer or 'full'"),
    (["--energy", "1.5"], "--energy must be in (0, 1]"),
    (["--rank", "2", "--energy", "0.9"], "mutually exclusive"),
    (["--min-in-channels", "0"], "--min-in-channels must be >= 1"),
    (["--include", "("], "invalid regular expression"),
    (["--input-shape", "nonsense"], "--input-shape"),
    (["--layout", "diagonal"], "--layout must be one of"),
    (["--bogus"], "No such option"),
])
def test_bad_options(vgg, args, message):
    res = invoke("convert", vgg, *args)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and message in res.output, res.output
    assert not vgg.with_name("vgg.dws.onnx").exists()


def test_no_qualifying_conv_still_writes(tmp_path):
    path = tmp_path / "stem.onnx"
    onnx.save(conv_model(2, cin=3), path)
    res = invoke("convert", path)
    assert res.exit_code == 0, res.output
    assert "no Conv qualified" in res.output
    assert onnx.load(path.with_name("stem.dws.onnx")).graph == onnx.load(path).graph


def test_energy_policy_and_filters(vgg, tmp_path):
    rec = tmp_path / "r.json"
    res = invoke("convert", vgg, "--energy", "0.5", "--exclude", "stage3", "--json", rec, "-q")
    assert res.exit_code == 0, res.output
    layers = {layer["name"]: layer for layer in json.loads(rec.read_text())["layers"]}
    assert layers["stage3.conv1"]["reason"] == "excluded by --exclude 'stage3'"
    assert layers["stage2.conv1"]["status"] == "converted" and layers["stage2.conv1"]["rank"] >= 1


def test_help_and_version():
    res = invoke("--version")
    assert res.exit_code == 0, res.output
    assert res.output.startswith("convtool ")
    res = invoke("convert", "-h")
    assert res.exit_code == 0, res.output
    assert "--rank" in res.output and "--min-in-channels" in res.output


def test_convert_with_report(vgg, tmp_path):
    rep = tmp_path / "report.json"
    res = invoke("convert", vgg, "-o", tmp_path / "o.onnx", "--report", "--report-runs", "3",
                 "--report-json", rep, "-q")
    assert res.exit_code == 0, res.output
    data = json.loads(rep.read_text())
    assert [m["path"] for m in data["models"]] == [str(vgg), str(tmp_path / "o.onnx")]
    assert data["comparison"]["mac_reduction"] > 0.5
    assert data["models"][1]["latency_ms"]["runs"] >= 3  # --report-runs is the first look


def test_convert_report_with_calibration_measures_drift_on_the_held_out_samples(tmp_path):
    """Issue 14 item 10: it measured on 4 random inputs and said "pass --inputs", which convert
    does not take; now the drift is on the calibration samples no fit used, and it says so."""
    samples = ROOT / "sample_models"
    rep = tmp_path / "report.json"
    res = invoke("convert", samples / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--calibration",
                 samples / "digits_calib.npz", "--calibration-samples", "60", "--holdout", "0.2", "--rank", "2",
                 "--report", "--report-runs", "3", "--report-json", rep)
    assert res.exit_code == 0, res.output
    data = json.loads(rep.read_text())
    assert data["inputs_random"] is False, data["inputs"]
    assert "digits_calib.npz (held out by the refit" in data["inputs"]
    assert data["comparison"]["drift"]["samples"] == 12  # 20 % of 60: the refit's held-out split
    assert "on 12 samples of" in res.output and "held out by the refit" in res.output
    assert "pass --inputs" not in res.output and "random" not in res.output.split("\n")[0]


def test_convert_report_without_data_names_commands_that_exist(vgg, tmp_path):
    res = invoke("convert", vgg, "-o", tmp_path / "o.onnx", "--report", "--report-runs", "3")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "seeded random inputs" in text and "pass --inputs" not in text
    assert "convtool report MODEL CONVERTED --inputs DATA" in text


def test_report_needs_a_written_model(vgg):
    res = invoke("convert", vgg, "--dry-run", "--report")
    assert res.exit_code == 2 and "error: --report needs a written model" in res.output, res.output


def test_a_layers_parameters_are_counted_alike_by_convert_and_report(tmp_path):
    """Issue 14 item 12: conv2 of the digits sample had 4.74k params in convert (its folded
    BatchNormalization counted) and 4.61k in report.  One definition: the Conv's constants plus
    the BatchNormalization folded into it."""
    record, rep = tmp_path / "c.json", tmp_path / "r.json"
    res = invoke("convert", ROOT / "sample_models" / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--json", record,
                 "--report", "--report-runs", "3", "--report-json", rep)
    assert res.exit_code == 0, res.output
    convert_layers = {layer["name"]: layer for layer in json.loads(record.read_text())["layers"]
                      if layer["status"] == "converted"}
    report_layers = {layer["name"]: layer for layer in json.loads(rep.read_text())["layers"]}
    assert convert_layers and set(convert_layers) == set(report_layers)
    for name, layer in convert_layers.items():
        assert report_layers[name]["params_before"] == layer["params_before"], name
        assert report_layers[name]["params"] == layer["params_after"], name
    assert any(layer.get("folded_batchnorm") for layer in convert_layers.values())  # the case that differed


def test_float64_calibration_data_is_cast_with_a_warning(tmp_path):
    """Issue 14 item 11: float64 data is accepted (cast within its kind) and the command says so."""
    samples = np.load(ROOT / "sample_models" / "digits_calib.npz")
    cal = tmp_path / "cal64.npz"
    np.savez(cal, **{k: samples[k][:16].astype(np.float64) if samples[k].dtype.kind == "f" else samples[k][:16]
                     for k in samples.files})
    res = invoke("convert", ROOT / "sample_models" / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--calibration", cal,
                 "--rank", "2", "--refit", "pointwise")
    assert res.exit_code == 0, res.output
    assert "is float64, cast to the model's float32" in " ".join(res.output.split()), res.output
