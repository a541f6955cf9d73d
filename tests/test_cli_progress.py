"""Progress bars on long work, and true times (issue 8, item 6).

A progress bar (with elapsed time and ETA) goes to stderr when it is a terminal, never with
``--quiet`` and never into logs or pipes.  ``TTY_COMPATIBLE=1`` is how rich is told that a
captured stream is a terminal.  The closing line reports the command's real wall time.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from clirun import invoke as cli_invoke
from test_report import converted_model, original_model

import convtool.api
import convtool.report
from convtool.cli.common import Clock, closing_line

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args, terminal: bool):
    return cli_invoke(*args, width=100, terminal=terminal)


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return original_model(tmp_path / "a.onnx"), converted_model(tmp_path / "b.onnx", rank=1)


def test_progress_bar_on_a_terminal(pair):
    a, b = pair
    res = invoke("report", a, b, "--runs", "40", "--warmup", "1", terminal=True)
    assert res.exit_code == 0, res.output
    assert "timing the models" in res.stderr and "elapsed" in res.stderr and "left" in res.stderr


def test_no_progress_bar_when_quiet_or_not_a_terminal(pair):
    a, b = pair
    for args, terminal in ((["-q"], True), ([], False)):
        res = invoke("report", a, b, "--runs", "40", "--warmup", "1", *args, terminal=terminal)
        assert res.exit_code == 0, res.output
        assert "timing the models" not in res.stderr and "elapsed" not in res.stderr, res.stderr


def test_convert_passes_progress_to_the_library_only_on_a_terminal(tmp_path, monkeypatch):
    seen = []
    real = convtool.api.convert_file

    def spy(*args, progress=None, **kwargs):
        seen.append(progress)
        if progress is not None:
            progress("refitting layers", 1, 2)
            progress("fine-tuning | loss 0.5", 1, 3)
            progress("fine-tuning | loss 0.25", 2, 3)
        return real(*args, progress=progress, **kwargs)

    monkeypatch.setattr(convtool.api, "convert_file", spy)
    res = invoke("convert", ROOT / "sample_models" / "vgg_style.onnx", "-o", tmp_path / "o.onnx", terminal=True)
    assert res.exit_code == 0, res.output
    assert callable(seen[-1]) and "calibration refit" in res.stderr
    assert "fine-tuning (loss 0.25)" in res.stderr  # the detail after " | " is shown
    res = invoke("convert", ROOT / "sample_models" / "vgg_style.onnx", "-o", tmp_path / "o.onnx", terminal=False)
    assert res.exit_code == 0, res.output
    assert seen[-1] is None and "calibration refit" not in res.stderr


def _seconds(line: str) -> float:
    match = re.search(r" in (\d+(?:\.\d+)?) s$", line.strip())
    assert match, line
    return float(match.group(1))


def test_closing_line_reports_the_real_wall_time(pair, tmp_path, monkeypatch):
    real = convtool.report.build_report

    def slow(*args, **kwargs):
        time.sleep(1.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(convtool.report, "build_report", slow)
    a, b = pair
    res = invoke("report", a, b, "--no-latency", "--json", tmp_path / "r.json", terminal=False)
    assert res.exit_code == 0, res.output
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith(f"wrote {tmp_path / 'r.json'} in ") and _seconds(last) >= 1.2, last


def test_closing_line_names_what_was_written():
    clock = Clock()
    assert re.fullmatch(r"wrote a\.onnx, a\.json in \S+ s", closing_line(["a.onnx", "a.json"], clock))
    assert closing_line([], clock).startswith("done in ")
    assert closing_line([], clock, dry_run=True).startswith("dry run: nothing written (")
