"""``convtool report --int8-baseline --calibration DATA``: the INT8-quantized original as a third
column (issue 16, item 5).

The pairs are the hand-built ones of ``test_report.py`` (a Conv and its depthwise + pointwise
rewrite); the calibration and evaluation samples are seeded random arrays.  3 timed runs; no
test asserts a speed-up.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_report import CIN, COUT, converted_model, original_model
from typer.testing import CliRunner

from convtool.cli.app import app
from convtool.errors import OptionError
from convtool.render import fmt
from convtool.render.report import int8_verdict, render_markdown
from convtool.report import ReportOptions, build_report


def invoke(*args, width: int = 80):
    return CliRunner(env={"COLUMNS": str(width), "NO_COLOR": "1"}).invoke(app, ["report", *map(str, args)])


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    calib, evals = tmp_path / "calib.npz", tmp_path / "eval.npz"
    np.savez(calib, input=rng.standard_normal((16, CIN, 8, 8)).astype(np.float32))
    np.savez(evals, input=rng.standard_normal((24, CIN, 8, 8)).astype(np.float32),
             labels=rng.integers(0, COUT, 24))
    return {"original": original_model(tmp_path / "model.onnx"),
            "converted": converted_model(tmp_path / "model.r1.onnx", rank=1), "calib": calib, "eval": evals}


FAST = ("--runs", "3", "--warmup", "1")


@pytest.mark.parametrize("width", [80, 120])
def test_int8_column_json_and_verdict(files, tmp_path, width):
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    res = invoke(files["original"], files["converted"], "--int8-baseline", "--calibration", files["calib"],
                 "--inputs", files["eval"], *FAST, "--json", js, "--markdown", md, width=width)
    assert res.exit_code == 0, res.output
    record = json.loads(js.read_text())
    int8 = record["int8_baseline"]
    assert set(int8) == {"model", "size_bytes", "comparison", "converted_vs_int8", "quantization"}
    for comp in (int8["comparison"], int8["converted_vs_int8"]):  # the keys of the pair's comparison
        assert set(comp) == set(record["comparison"])
        assert comp["ci_low"] <= comp["speedup"] <= comp["ci_high"] and comp["runs"] >= 3
        assert comp["resolved"] in (True, False)
    assert int8["converted_vs_int8"]["drift"] is None  # both drifts are against the original
    drift = int8["comparison"]["drift"]
    assert drift["samples"] == 24 and 0 <= drift["drift"] < 0.5
    assert 0 <= int8["model"]["accuracy"] <= 1 and int8["model"]["latency_ms"]["runs"] >= 3
    sizes = int8["size_bytes"]
    assert sizes["original"] == files["original"].stat().st_size and sizes["int8"] > 0
    assert sizes["converted"] == files["converted"].stat().st_size
    assert int8["quantization"]["samples"] == 16 and int8["quantization"]["calibration"] == str(files["calib"])
    # the table: every line fits, the INT8 column's numbers are there, whole
    lines = res.stdout.splitlines()
    assert not [line for line in lines if len(line) > width], res.stdout
    header = next(line for line in lines if line.lstrip().startswith("metric"))
    assert header.split() == ["metric", "original", "INT8", "orig.", "converted", "change"]
    text = res.stdout
    for token in (fmt.times(int8["comparison"]["speedup"]), fmt.times(int8["converted_vs_int8"]["speedup"]),
                  fmt.num(drift["drift"]), fmt.pct(int8["model"]["accuracy"]), fmt.count(sizes["int8"]),
                  fmt.ms(int8["model"]["latency_ms"]["median"])):
        assert token in text, (token, text)
    assert "the INT8 original" in " ".join(text.split())  # the verdict says which is faster
    assert "quantized by onnxruntime" in " ".join(text.split())  # and a note how it was made
    assert "| metric | original | INT8 orig. | converted | change |" in md.read_text()


def test_without_the_flag_nothing_changes(files, tmp_path):
    js = tmp_path / "r.json"
    res = invoke(files["original"], files["converted"], "--no-latency", "--json", js)
    assert res.exit_code == 0, res.output
    assert json.loads(js.read_text())["int8_baseline"] is None
    assert "INT8" not in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--int8-baseline"], "--int8-baseline needs --calibration DATA"),
    (["--calibration", "CALIB"], "--calibration has no effect without --int8-baseline"),
    (["--int8-baseline", "--calibration", "missing.npz"], "missing.npz: no such file or folder"),
])
def test_bad_combinations_are_one_line_errors(files, args, message):
    args = [str(files["calib"]) if a == "CALIB" else a for a in args]
    res = invoke(files["original"], files["converted"], *args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_needs_a_converted_model(files):
    res = invoke(files["original"], "--int8-baseline", "--calibration", files["calib"])
    assert res.exit_code == 2, res.output
    assert "give MODEL and CONVERTED" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    with pytest.raises(OptionError, match="give MODEL and CONVERTED"):
        build_report([files["original"]], ReportOptions(int8_calibration=str(files["calib"])))


def test_the_verdict_says_which_is_faster(files):
    report = build_report([files["original"], files["converted"]],
                          ReportOptions(runs=3, warmup=1, inputs=str(files["eval"]),
                                        int8_calibration=str(files["calib"])))
    assert report.int8 is not None

    def said(speedup: float, low: float, high: float, resolved: bool) -> str:
        converted = replace(report.int8.converted, speedup=speedup, ci_low=low, ci_high=high, resolved=resolved)
        text = int8_verdict(replace(report, int8=replace(report.int8, converted=converted)))
        assert text is not None
        return text

    drifts = (f"at drift {fmt.num(report.comparison.drift.drift)} "
              f"(INT8 original: {fmt.num(report.int8.comparison.drift.drift)})")
    assert said(1.4, 1.3, 1.5, True) == f"1.40x faster than the INT8 original (95% CI 1.30x-1.50x) {drifts}"
    assert said(0.8, 0.7, 0.9, True).startswith("the INT8 original is faster: converted 0.80x of its speed")
    assert said(1.01, 0.9, 1.1, False).startswith("against the INT8 original: speed not resolved at")
    assert int8_verdict(replace(report, int8=None)) is None
    assert "INT8 orig." in render_markdown(report)


def test_no_latency_still_gives_drift_and_size(files, tmp_path):
    js = tmp_path / "r.json"
    res = invoke(files["original"], files["converted"], "--int8-baseline", "--calibration", files["calib"],
                 "--no-latency", "--json", js)
    assert res.exit_code == 0, res.output
    int8 = json.loads(js.read_text())["int8_baseline"]
    assert int8["comparison"]["speedup"] is None and int8["comparison"]["drift"] is not None
    assert "INT8 original not timed (--no-latency)" in " ".join(res.stdout.split())
