"""The CLI's last line of defence: one error line, never a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import convtool.api
from convtool.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_report_pair_with_different_input_shapes():
    res = runner.invoke(app, ["report", str(ROOT / "sample_models/vgg_style.onnx"),
                              str(ROOT / "sample_models/digits_cnn.onnx"), "--no-latency", "-q"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: input 'input' is 1x3x64x64") and "Traceback" not in res.output


def test_unexpected_failure_is_one_line(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(convtool.api, "convert_model", boom)
    res = runner.invoke(app, ["convert", str(ROOT / "sample_models/vgg_style.onnx"), "-o", str(tmp_path / "o.onnx")])
    assert res.exit_code == 3, res.output
    assert res.output.strip() == "error: unexpected failure (RuntimeError: something inside broke); please report it"
    assert not (tmp_path / "o.onnx").exists()
