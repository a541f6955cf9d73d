"""``convtool sweep --int8-baseline`` / ``--quantize int8``: the INT8-quantized original as a
reference point, every point timed against it too, and every point quantized (issue 16, items 1
and 5).

Every timing is faked (:class:`test_search_sweep.Fake`); the quantizations are real
(onnxruntime's static INT8 on the tiny three-conv model).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np
import onnx
import pytest
from builders import smooth_inputs, three_conv_model
from test_render_sweep import _record
from test_search_sweep import Fake, _eval, _options
from typer.testing import CliRunner

from convtool.api import sweep_model
from convtool.cli.app import app
from convtool.errors import OptionError
from convtool.options import QuantizeOptions, SweepOptions
from convtool.records import PairSpeed, SweepInt8
from convtool.render import sweep as render
from convtool.search.sweep import pareto


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    return Fake.install(monkeypatch)


def test_the_int8_original_is_a_reference_point_and_every_point_is_timed_against_it(tmp_path, fake):
    result = sweep_model(three_conv_model(), _options(tmp_path, objective="macs"),
                         SweepOptions(budgets=(0.05, 10.0), runs=3, int8_baseline=True),
                         calibration_data=smooth_inputs(n=16), eval_data=_eval())
    record = result.record
    q = record.int8
    assert q is not None and q.samples > 0 and q.latency_ms is not None
    assert q.ci_low <= q.speedup <= q.ci_high and q.resolved is not None and q.runs == 3
    assert 0 < q.drift < 0.2 and q.top1_agreement is None and q.accuracy is None
    assert q.size_bytes > 0 and q.macs == record.original.macs
    converted = [p for p in record.points if p.converted]
    assert converted, record.points
    for p in converted:
        assert isinstance(p.vs_int8, PairSpeed) and p.vs_int8.runs == 3
        assert p.vs_int8.ci_low <= p.vs_int8.speedup <= p.vs_int8.ci_high
    # one pair for the reference, two per distinct converted model
    assert fake.loops == [2] * (1 + 2 * len({tuple(sorted(p.ranks.items())) for p in converted}))
    data = record.to_dict()
    assert set(data["int8"]) >= {"speedup", "ci_low", "ci_high", "runs", "resolved", "drift", "latency_ms"}
    assert set(data["points"][-1]["vs_int8"]) == {"speedup", "ci_low", "ci_high", "runs", "resolved"}
    assert data["quantize"] is None
    json.dumps(data)


def test_without_calibration_data_there_is_no_int8_original(tmp_path):
    with pytest.raises(OptionError, match="give --calibration DATA"):
        sweep_model(three_conv_model(), _options(tmp_path, objective="macs"),
                    SweepOptions(budgets=(0.05,), runs=3, int8_baseline=True), eval_data=_eval())


def test_quantize_builds_every_point_quantized_and_measures_it_against_both(tmp_path, fake):
    result = sweep_model(three_conv_model(), _options(tmp_path, objective="macs", quantize=QuantizeOptions()),
                         SweepOptions(budgets=(0.05, 10.0), runs=3),
                         calibration_data=smooth_inputs(n=16), eval_data=_eval())
    record = result.record
    assert record.quantize == "int8" and record.int8 is not None  # --quantize int8 implies the reference
    for point, model in zip(record.points, result.models):
        assert any(n.op_type == "DequantizeLinear" for n in model.graph.node), point.budget  # deployed precision
        assert point.drift > 0  # measured on the quantized model, against the float original
        assert point.vs_int8 is not None
        if not point.converted:  # the plan was dropped: the point is the INT8 original itself
            assert point.speedup == record.int8.speedup and point.vs_int8.speedup == 1.0
            assert point.drift == record.int8.drift


def _files(tmp_path):
    onnx.save(three_conv_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **smooth_inputs(n=16))
    np.savez(tmp_path / "eval.npz", **smooth_inputs(n=12, seed=7))


def _sweep(tmp_path, *args, width=200):
    runner = CliRunner(env={"COLUMNS": str(width), "NO_COLOR": "1"})
    return runner.invoke(app, ["sweep", str(tmp_path / "m.onnx"), "--search-ranks", "1,2", "--no-cache", "--runs",
                               "3", "--inputs", str(tmp_path / "eval.npz"), "--out", str(tmp_path / "out"),
                               *map(str, args)])


@pytest.mark.parametrize("flag", [["--int8-baseline"], ["--quantize", "int8"]])
def test_int8_flags_need_calibration_data(tmp_path, flag):
    _files(tmp_path)
    res = _sweep(tmp_path, *flag)
    assert res.exit_code == 2, res.output
    assert "needs --calibration DATA" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("width", [80, 120])
def test_cli_draws_the_int8_original_in_table_markdown_and_picture(tmp_path, width):
    _files(tmp_path)
    res = _sweep(tmp_path, "--calibration", tmp_path / "calib.npz", "--int8-baseline", "--budgets", "0.05,10",
                 "--objective", "macs", width=width)
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "out" / "sweep.json").read_text())
    q = record["int8"]
    table = res.stdout.split("original:")[0]
    assert not [line for line in table.splitlines() if len(line) > width], res.stdout
    row = next(line for line in table.splitlines() if line.lstrip().startswith("INT8"))
    assert f"{q['speedup']:.2f}x" in row and render.fmt.num(q["drift"]) in row
    assert "vs INT8" in table
    assert "INT8 original: speedup" in " ".join(res.stdout.split())
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert re.search(r"^\| INT8 \| - \|", md, re.MULTILINE) and "vs INT8 (95% CI)" in md
    svg = ET.fromstring((tmp_path / "out" / "sweep.svg").read_text())
    assert any(e.tag.endswith("polygon") for e in svg.iter()) and "INT8 original" in "".join(svg.itertext())


def _with_int8(speedup=1.6, drift=0.012, accuracy=0.99):
    record = _record()
    record.int8 = SweepInt8(calibration="calib.npz", samples=64, macs=1_000_000, params=1000, size_bytes=300_000,
                            latency_ms=1 / speedup, speedup=speedup, ci_low=speedup * 0.95, ci_high=speedup * 1.05,
                            runs=50, resolved=True, drift=drift, rel_l2=drift, top1_agreement=1.0, accuracy=accuracy)
    record.points = [replace(p, vs_int8=PairSpeed(v, v * 0.95, v * 1.05, 50, True))
                     for p, v in zip(record.points, (0.7, 0.9, 1.2))]
    return record


@pytest.mark.parametrize("width", [80, 100, 120])
def test_render_fits_the_console_with_the_int8_row_and_column(width):
    from rich.console import Console

    record = _with_int8()
    console = Console(width=width, record=True)
    console.print(render.table(record, width=width))
    text = console.export_text()
    table = text.split("original:")[0]
    assert not [line for line in table.splitlines() if len(line.rstrip()) > width], text
    assert "1.60x" in table and "1.20x" in table and "(1.14-1.26)" in table  # whole, maybe stacked
    lines = render.summary_lines(record)
    assert lines[-1].startswith("INT8 original: speedup 1.60x (95% CI 1.52-1.68), accuracy 99.0%; faster than it")
    assert "budget 0.1: 1.20x (1.14-1.26)" in lines[-1] and "budget 0.05" not in lines[-1]


def test_no_budget_faster_than_the_int8_original_is_said():
    record = _with_int8()
    record.points = [replace(p, vs_int8=PairSpeed(0.8, 0.7, 0.9, 50, True)) for p in record.points]
    assert render.summary_lines(record)[-1].endswith("no budget is faster than it (95% CI above 1.00x)")


def test_the_int8_original_takes_part_in_the_pareto_front():
    points = [dict(speedup=1.4, accuracy=0.98), dict(speedup=2.0, accuracy=0.95)]
    original = dict(speedup=1.0, accuracy=0.99)
    assert pareto(points, "accuracy", original) == [True, True]
    assert pareto(points, "accuracy", original, [dict(speedup=1.6, accuracy=0.99)]) == [False, True]
