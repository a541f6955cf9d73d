"""The CLI's last line of defence: one error line, never a traceback."""

from __future__ import annotations

from pathlib import Path

from clirun import invoke

import convtool.api

ROOT = Path(__file__).resolve().parent.parent


def test_report_pair_with_different_input_shapes():
    res = invoke("report", ROOT / "sample_models/vgg_style.onnx", ROOT / "sample_models/digits_cnn.onnx",
                 "--no-latency", "-q")
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: input 'input' is 1x3x64x64") and "Traceback" not in res.output


def test_unexpected_failure_is_one_line(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(convtool.api, "convert_model", boom)
    res = invoke("convert", ROOT / "sample_models/vgg_style.onnx", "-o", tmp_path / "o.onnx")
    assert res.exit_code == 3, res.output
    assert res.output.strip() == "error: unexpected failure (RuntimeError: something inside broke); please report it"
    assert not (tmp_path / "o.onnx").exists()
