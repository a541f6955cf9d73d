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


def _text(renderable, width=200):
    console = Console(width=width, record=True)
    console.print(renderable)
    return console.export_text()


def test_table_has_a_row_per_budget_and_marks_the_front():
    text = _text(render.table(_record()))
    assert text.count("1.40x") == 1 and "1.90x (1.80-" in text
    rows = [line for line in text.splitlines() if re.match(r"^\s*0\.\d+ ", line)]
    assert len(rows) == 3
    assert [line.rstrip().endswith("*") for line in rows] == [False, True, True]
    assert "original: 1.00M MACs" in text


@pytest.mark.parametrize("width", [80, 100])
def test_table_fits_80_columns_with_whole_speedups_and_the_pareto_column(width):
    """Issue 14 item 5: below ~106 columns the speedup read "1.0" and the Pareto column vanished."""
    record = _record()
    text = _text(render.table(record, width=width), width=width)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines if not line.startswith(("original", "layers", "converted"))) <= width
    rows = [line for line in lines if re.match(r"^\s*0\.\d+ ", line)]
    assert len(rows) == 3 and all(len(line.rstrip()) <= width for line in rows), text
    for p, line in zip(record.points, rows):
        assert f"{p.speedup:.2f}x ({p.ci_low:.2f}-{p.ci_high:.2f})" in line, text
        assert line.rstrip().endswith("*") == p.pareto, text
    assert "Pareto" in text


def test_table_speaks_the_one_vocabulary():
    """Issue 14 item 12: a MAC change is signed, like convert's totals line; speedups are ratios."""
    record = _record(points=[_point(0.05, 0.82, 0.04, 0.99, 0.99, False), _point(0.1, 1.9, 0.09, 0.97, 0.97, True)])
    text = _text(render.table(record), width=120)
    assert "-5.0%" in text and "-10.0%" in text and "removed" not in text
    md = render.markdown(record)
    assert "| budget | converted | MACs | params |" in md and "| 0.05 | 3/5 | -5.0% |" in md
    svg = render.svg(record)
    assert "0.82x" in svg and "slower" not in svg  # the table says 0.82x; so does the picture
    assert "1 thread" not in md or "1 thread(s)" not in md
    one = _record()
    one.environment["threads"] = 1
    assert "1 thread," in render.markdown(one) and "(s)" not in render.markdown(one) + render.svg(one)
    assert "1 layer converted" in render.svg(_record(points=[_point(0.1, 1.2, 0.05, 0.99, 0.99, True, converted=1)]))


def test_markdown_has_table_mermaid_charts_and_picture():
    md = render.markdown(_record())
    assert "| budget | converted | MACs |" in md and "| 0.05 | 3/5 |" in md
    blocks = re.findall(r"```mermaid\n(.*?)```", md, re.S)
    assert len(blocks) == 2 and all(b.startswith("xychart-beta") for b in blocks)
    assert 'x-axis "max drift" ["0.01", "0.05", "0.1"]' in blocks[0]
    assert re.search(r"bar \[1\.050, 1\.400, 1\.900\]", blocks[0])
    assert "line [99, 99, 97]" in blocks[1] and "accuracy (%)" in blocks[1]
    assert "![speedup against accuracy" in md and "(sweep.svg)" in md
    assert ("Pareto front: budget 0.1: speedup 1.90x (95% CI 1.80-1.99), accuracy 97.0%; budget 0.05: speedup 1.40x "
            "(95% CI 1.33-1.47)") in md
    assert "- budget 0.01: something" in md
    assert "2 threads" in md and "not seen by the search" in md


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


def _x_ticks(root):
    return [t.text for t in root.findall(f"{SVG}text") if t.text and t.text.endswith("%")]


def test_svg_accuracy_axis_spans_the_data():
    """Issue 14 item 13: the axis was fixed at 98-100 % (or 90-100 %), most of the plot empty."""
    points = [_point(0.01, 1.1, 0.004, 0.999, 1.0, True), _point(0.05, 1.4, 0.03, 0.998, 0.999, True),
              _point(0.1, 1.9, 0.09, 0.997, 0.997, True)]
    record = _record(points=points)
    record.original = SweepBaseline(macs=1_000_000, params=1000, latency_ms=1.0, accuracy=1.0, convs=5)
    root = _svg(record)
    ticks = [float(t.rstrip("%")) for t in _x_ticks(root)]
    assert ticks[0] >= 99.5 and ticks[-1] == 100.0, ticks
    xs = [float(c.get("cx")) for c in root.findall(f"{SVG}circle")]
    xs += [float(r.get("x")) + 5 for r in root.findall(f"{SVG}rect") if r.get("fill") == "#666"]  # the original
    frame = next(r for r in root.findall(f"{SVG}rect") if r.get("fill") == "none")
    width = float(frame.get("width"))
    assert max(xs) - min(xs) > 0.6 * width  # the data uses the plot, not a sliver of it (was 15 %)


def test_svg_original_marker_is_drawn_above_unchanged_points():
    """Issue 14 item 13: a budget that converts nothing sits on the original; the square stays on top."""
    points = [_point(0.005, 1.0, 0.0, 0.99, 1.0, False, converted=0), _point(0.1, 1.9, 0.09, 0.97, 0.97, True)]
    points[0] = SweepPoint(**{**points[0].__dict__, "drift": 0.0, "accuracy": 0.99})
    root = _svg(_record(points=points))
    shapes = [el for el in root if el.tag in (f"{SVG}circle", f"{SVG}rect")]
    square = next(i for i, el in enumerate(shapes) if el.tag == f"{SVG}rect" and el.get("fill") == "#666")
    unchanged = next(i for i, el in enumerate(shapes) if el.tag == f"{SVG}circle" and "0 layers" in
                     el.find(f"{SVG}title").text)
    assert square > unchanged
    sq = shapes[square]
    cx, cy = float(sq.get("x")) + 5, float(sq.get("y")) + 5
    circle = shapes[unchanged]
    assert abs(float(circle.get("cx")) - cx) < 1 and abs(float(circle.get("cy")) - cy) < 1


@pytest.mark.parametrize("finetuned", [None, True, False])
def test_finetune_is_shown_in_the_picture_and_the_table(finetuned):
    """Issue 14 item 13: whether --finetune ran was only in the JSON."""
    points = [SweepPoint(**{**p.__dict__, "finetuned": finetuned}) for p in _record().points]
    record = _record(points=points)
    svg = render.svg(record)
    table = _text(render.table(record), width=120)
    if finetuned is None:
        assert "no --finetune" in svg and "fine-tuned" not in table
    elif finetuned:
        assert "--finetune kept at budgets 0.01, 0.05, 0.1" in svg and "fine-tuned" in table and " yes" in table
    else:
        assert "--finetune ran, kept nowhere" in svg and " no" in table
