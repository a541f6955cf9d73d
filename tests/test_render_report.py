"""render/report.py: the report's verdict line, rich tables and Markdown, from a real report of a
tiny pair (no timing: numbers that do not move between runs)."""

from __future__ import annotations

import pytest
from rich.console import Console
from test_report import converted_model, original_model

from convtool.render import report as render
from convtool.report import ReportOptions, build_report


def _text(renderable, width: int = 120) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture()
def pair_report(tmp_path):
    original = original_model(tmp_path / "model.onnx")
    rank1 = converted_model(tmp_path / "model.r1.onnx", rank=1)
    return build_report([original, rank1], ReportOptions(latency=False, max_drift=1e-5))


def test_single_model_verdict(tmp_path):
    report = build_report([original_model(tmp_path / "model.onnx")], ReportOptions(latency=False))
    line = render.verdict(report)
    assert line == "112 params, 6.91k MACs"  # no latency asked, none shown
    assert render.gate_failure_lines(report) == [] and render.gates_table(report) is None


def test_pair_verdict_tables_and_failed_gate(pair_report):
    line = render.verdict(pair_report)
    assert "seeded random inputs (says little about accuracy)" in line and line.endswith("1 of 1 gate failed")
    assert render.random_inputs(pair_report)
    [failure] = render.gate_failure_lines(pair_report)
    assert failure.startswith("gate failed: --max-drift ") and "(needs <= " in failure
    assert render.RANDOM_NOTE in render.notes(pair_report)
    text = " ".join(_text(render.report_renderable(pair_report), width=200).split())
    assert line in text and "note: " + render.RANDOM_NOTE in text


def test_markdown_has_the_verdict_the_tables_and_the_gates(pair_report):
    md = render.render_markdown(pair_report)
    assert md.startswith("## convtool report\n") and md.endswith("\n")
    assert f"**{render.verdict(pair_report)}**" in md
    assert "### Gates (1 failed)" in md and "❌" in md
    assert "> note: " + render.RANDOM_NOTE in md
    tables = [line for line in md.splitlines() if line.startswith("| ")]
    assert tables and all(line.endswith("|") for line in tables)
