"""Every output path is checked before any work, and a failed run writes nothing.

Issue 8, items 1, 2 and 9: no output may replace an input or another output (after ``./``
and symlinks), every output folder must exist, a failure after the model was written removes
it again (and restores a file it replaced), ``-`` means stdout, and JSON/Markdown files get
the permissions models get.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import onnx
import pytest
from clirun import invoke
from test_report import converted_model, original_model

import convtool.report
from convtool.cli.outputs import Outputs
from convtool.errors import CalibrationDataError, OptionError

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "sample_models" / "vgg_style.onnx"


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def model(tmp_path) -> Path:
    target = tmp_path / "f.onnx"
    shutil.copy(VGG, target)
    return target


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return original_model(tmp_path / "a.onnx"), converted_model(tmp_path / "b.onnx", rank=1)


# ----------------------------------------------------------------------------- item 1: collisions


@pytest.mark.parametrize("extra", [
    ["--json", "{m}"],                                   # the input model, as given
    ["--json", "./{m}"],                                 # ... through ./
    ["--json", "sub/../{m}"],                            # ... through ..
    ["--json", "link.onnx"],                             # ... through a symlink
    ["-o", "g2.onnx", "--json", "g2.onnx"],              # the converted model
    ["--json", "f.dws.onnx"],                            # the default converted model
    ["-o", "g2.onnx", "--report", "--report-markdown", "g2.onnx"],
    ["--json", "r.json", "--report", "--report-json", "r.json"],
    ["--report", "--report-json", "r.json", "--report-markdown", "./r.json"],
    ["-o", "g2.onnx.data", "--json", "g2.onnx.data"],
])
def test_convert_refuses_outputs_that_collide(model, tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.onnx").symlink_to(model)
    before = model.read_bytes()
    res = invoke("convert", model.name, *[a.format(m=model.name) for a in extra])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1, res.output
    assert "refusing to overwrite the input model" in res.output or "would both write" in res.output
    assert model.read_bytes() == before
    assert names(tmp_path) == {"f.onnx", "sub", "link.onnx"}  # nothing written, nothing converted


def test_convert_refuses_to_overwrite_the_calibration_data(model, tmp_path):
    data = tmp_path / "cal.npz"
    data.write_bytes(b"not read: refused first")
    res = invoke("convert", model, "--calibration", data, "--json", data)
    assert res.exit_code == 2, res.output
    assert "refusing to overwrite the calibration data" in res.output
    assert data.read_bytes() == b"not read: refused first"


def test_convert_refuses_two_outputs_on_stdout(model):
    res = invoke("convert", model, "--json", "-", "--report", "--report-json", "-")
    assert res.exit_code == 2, res.output
    assert "would both write to stdout" in res.output


def test_model_output_cannot_be_stdout(model):
    res = invoke("convert", model, "-o", "-")
    assert res.exit_code == 2, res.output
    assert "cannot write to stdout" in res.output


@pytest.mark.parametrize("extra", [
    ["--json", "{a}"],
    ["--markdown", "{b}"],
    ["--json", "r.json", "--markdown", "r.json"],
    ["--json", "-", "--markdown", "-"],
    ["--inputs", "d.npz", "--json", "d.npz"],
])
def test_report_refuses_outputs_that_collide(pair, tmp_path, monkeypatch, extra):
    a, b = pair
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.npz").write_bytes(b"x")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    res = invoke("report", a.name, b.name, "--no-latency", *[x.format(a=a.name, b=b.name) for x in extra])
    assert res.exit_code == 2, res.output
    assert "refusing to overwrite" in res.output or "would both write" in res.output, res.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ----------------------------------------------------------------------------- item 2: nothing written on error


@pytest.mark.parametrize("extra", [
    ["--json", "nodir/x.json"],
    ["--report", "--report-json", "nodir/r.json"],
    ["--report", "--report-markdown", "nodir/r.md"],
    ["-o", "nodir/m.onnx"],
])
def test_missing_output_folder_fails_before_any_work(model, tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    res = invoke("convert", model.name, *extra)
    assert res.exit_code == 2, res.output
    assert "output folder nodir does not exist" in res.output
    assert names(tmp_path) == {"f.onnx"}  # no f.dws.onnx left behind


def test_output_that_is_a_folder_fails_before_any_work(model, tmp_path):
    (tmp_path / "x.json").mkdir()
    res = invoke("convert", model, "--json", tmp_path / "x.json")
    assert res.exit_code == 2, res.output
    assert "is a folder" in res.output
    assert names(tmp_path) == {"f.onnx", "x.json"}


def test_unwritable_output_folder_fails_before_any_work(model, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.name == "posix" and os.geteuid() == 0:  # root writes anywhere: make access() answer as for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(locked) else real(p, mode, *a, **k))
    try:
        res = invoke("convert", model, "--json", locked / "r.json")
        assert res.exit_code == 2, res.output
        assert "permission denied" in res.output
        assert names(tmp_path) == {"f.onnx", "locked"}
    finally:
        locked.chmod(0o755)


def _failing_report(*args, **kwargs):
    raise CalibrationDataError("--inputs: the report step failed")


def test_failed_report_step_removes_the_model_it_wrote(model, tmp_path, monkeypatch):
    monkeypatch.setattr(convtool.report, "build_report", _failing_report)
    res = invoke("convert", model, "--json", tmp_path / "c.json", "--report", "--report-json", tmp_path / "r.json")
    assert res.exit_code == 2, res.output
    assert "error: --inputs: the report step failed" in res.output
    assert names(tmp_path) == {"f.onnx"}  # neither f.dws.onnx nor any record


def test_failed_report_step_restores_the_files_it_replaced(model, tmp_path, monkeypatch):
    old_model, old_json = tmp_path / "out.onnx", tmp_path / "c.json"
    old_model.write_bytes(b"the previous model")
    old_json.write_text("{}")
    monkeypatch.setattr(convtool.report, "build_report", _failing_report)
    res = invoke("convert", model, "-o", old_model, "--json", old_json, "--report")
    assert res.exit_code == 2, res.output
    assert old_model.read_bytes() == b"the previous model" and old_json.read_text() == "{}"
    assert names(tmp_path) == {"f.onnx", "out.onnx", "c.json"}  # no backups left behind


def test_successful_run_replaces_files_and_leaves_no_backup(model, tmp_path):
    out, rec = tmp_path / "out.onnx", tmp_path / "c.json"
    out.write_bytes(b"old")
    rec.write_text("{}")
    res = invoke("convert", model, "-o", out, "--json", rec, "-q")
    assert res.exit_code == 0, res.output
    onnx.checker.check_model(onnx.load(out))
    assert json.loads(rec.read_text())["output"] == str(out)
    assert names(tmp_path) == {"f.onnx", "out.onnx", "c.json"}


# ----------------------------------------------------------------------------- item 9: stdout, permissions


def test_convert_json_to_stdout(model, tmp_path):
    res = invoke("convert", model, "--json", "-")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)  # stdout is the record and nothing else
    assert record["totals"]["converted"] == 5
    assert "stage1.conv2" in res.stderr and "wrote" in res.stderr  # the tables went to stderr
    assert not (tmp_path / "-").exists() and not Path("-").exists()


def test_convert_report_json_to_stdout(pair, tmp_path):
    a, _ = pair
    res = invoke("convert", a, "--min-in-channels", "1", "--report", "--report-runs", "3", "--report-json", "-")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert [m["path"] for m in record["models"]] == [str(a), str(a.with_name("a.dws.onnx"))]


def test_report_json_and_markdown_to_stdout(pair):
    a, b = pair
    res = invoke("report", a, b, "--no-latency", "--json", "-")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["comparison"]["mac_reduction"] > 0
    assert "Before / after" in res.stderr
    res = invoke("report", a, b, "--no-latency", "--markdown", "-", "-q")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("## convtool report") and res.stderr == ""


@pytest.mark.skipif(os.name != "posix", reason="umask is POSIX")
@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_records_get_the_permissions_models_get(model, tmp_path, mask):
    old = os.umask(mask)
    try:
        res = invoke("convert", model, "-o", tmp_path / "m.onnx", "--json", tmp_path / "m.json", "--report",
                     "--report-runs", "2", "--report-json", tmp_path / "r.json",
                     "--report-markdown", tmp_path / "r.md", "-q")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    mode = stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode)
    assert mode == 0o666 & ~mask
    for name in ("m.json", "r.json", "r.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_outputs_refuse_an_output_that_is_an_input(tmp_path):
    files = Outputs()
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    files.read("the input model", model)
    files.write("-o", tmp_path / "." / "m.onnx")
    with pytest.raises(OptionError):
        files.check()
    with pytest.raises(OptionError, match="--json cannot write to stdout"):
        Outputs().write("--json", Path("-"), stdout=False)
