"""render/sweep.py: the sweep's table, Markdown (Mermaid xychart) and hand-written SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from convtool.records import SweepBaseline, SweepPoint, SweepRecord
from convtool.render import sweep as render

SVG = "{http://www.w3.org/2000/svg}"


def _point(budget, speedup, drift, accuracy=None, agreement=None, pareto=False, converted=3):
    return SweepPoint(budget=budget, search_drift=drift * 0.9, drift=drift, rel_l2=drift, top1_agreement=agreement,
                      accuracy=accuracy, macs=int(1e6 * (1 - budget)), params=900, converted=converted,
                      ranks={"a": 1}, layouts={"a": "multiplier"}, latency_ms=1.0 / speedup, speedup=speedup,
                      ci_low=speedup * 0.95, ci_high=speedup * 1.05, pareto=pareto)


def _record(axis="accuracy", points=None):
    points = points or [_point(0.01, 1.05, 0.008, 0.99, 1.0, False), _point(0.05, 1.4, 0.04, 0.99, 0.99, True),
                        _point(0.1, 1.9, 0.09, 0.97, 0.97, True)]
    return SweepRecord(
        input="m.onnx", calibration="calib.npz", evaluation="eval.npz", eval_samples=100, objective="latency",
        metric="rel_l2", x_axis=axis,
        original=SweepBaseline(macs=1_000_000, params=1000, latency_ms=1.0, accuracy=0.99 if axis == "accuracy" else None,
                               convs=5),
        points=points, environment={"threads": 2, "opt_level": "all", "providers": ["CPUExecutionProvider"],
                                    "onnxruntime": "1.32.0", "cpu": "Some CPU", "runs": 50},
        warnings=["budget 0.01: something"])


def test_table_has_a_row_per_budget_and_marks_the_front():
    console = Console(width=200, record=True)
    console.print(render.table(_record()))
    text = console.export_text()
    assert text.count("1.40x") == 1 and "1.90x (1.80-" in text
    rows = [line for line in text.splitlines() if re.match(r"^│\s+0\.\d+ ", line)]
    assert len(rows) == 3
    assert [line.rstrip("│ ").endswith("*") for line in rows] == [False, True, True]
    assert "original: 1.00M MACs" in text


def test_markdown_has_table_mermaid_charts_and_picture():
    md = render.markdown(_record())
    assert "| budget | converted | MACs removed |" in md and "| 0.05 | 3/5 |" in md
    blocks = re.findall(r"```mermaid\n(.*?)```", md, re.S)
    assert len(blocks) == 2 and all(b.startswith("xychart-beta") for b in blocks)
    assert 'x-axis "max drift" ["0.01", "0.05", "0.1"]' in blocks[0]
    assert re.search(r"bar \[1\.050, 1\.400, 1\.900\]", blocks[0])
    assert "line [99, 99, 97]" in blocks[1] and "accuracy (%)" in blocks[1]
    assert "![speedup against accuracy" in md and "(sweep.svg)" in md
    assert ("Pareto front: budget 0.1: 1.90x faster (95% CI 1.80-1.99), accuracy 97.0%; budget 0.05: 1.40x "
            "faster (95% CI 1.33-1.47)") in md
    assert "- budget 0.01: something" in md
    assert "2 thread(s)" in md and "not seen by the search" in md


def _svg(record):
    root = ET.fromstring(render.svg(record))
    assert root.tag == f"{SVG}svg"
    return root


@pytest.mark.parametrize("axis", ["accuracy", "top1_agreement", "drift"])
def test_svg_one_point_per_budget_front_filled_and_joined(axis):
    record = _record(axis)
    root = _svg(record)
    circles = root.findall(f"{SVG}circle")
    assert len(circles) == 3
    filled = [c for c in circles if c.get("fill") != "white"]
    assert len(filled) == 2
    (line,) = root.findall(f"{SVG}polyline")
    assert len(line.get("points").split()) == 2
    labels = {t.text for t in root.findall(f"{SVG}text")}
    assert {"0.01", "0.05", "0.1", "original"} <= labels
    assert all(c.find(f"{SVG}title") is not None for c in circles)
    # better quality is always to the right: the 0.01 point (best quality) right of the 0.1 point
    xs = [float(c.get("cx")) for c in circles]
    assert xs[0] >= xs[2]


def test_svg_higher_speedup_is_higher_on_the_page():
    root = _svg(_record())
    ys = [float(c.get("cy")) for c in root.findall(f"{SVG}circle")]
    assert ys[0] > ys[1] > ys[2]  # SVG y grows downwards


def test_svg_and_markdown_without_points_or_speedups():
    record = _record(points=[_point(0.01, 1.0, 0.0, 0.99, converted=0)])
    _svg(record)
    assert "keep the original" in render.markdown(record)


def test_nice_ticks():
    assert render.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = render.nice_ticks(0.93, 1.87)
    assert ticks[0] <= 0.93 and ticks[-1] >= 1.87 and len(ticks) <= 8
    assert len(render.nice_ticks(1.0, 1.0)) >= 2


def test_an_unresolved_point_says_so():
    p = _point(0.05, 1.02, 0.04, 0.99, 0.99, False)
    p = type(p)(**{**p.__dict__, "ci_low": 0.97, "ci_high": 1.06, "runs": 400, "resolved": False})
    lines = render.summary_lines(_record(points=[p]))
    assert "budget 0.05: speed not resolved at 400 runs: 1.02x (95% CI 0.97-1.06) includes 1.00x" in lines
