"""render/latency.py: the --latency-aware table and line."""

from __future__ import annotations

from builders import conv_model

from convtool.api import convert_model
from convtool.options import ConvertOptions
from convtool.render import latency as render_latency


def test_nothing_to_render_without_measurements():
    result = convert_model(conv_model(), ConvertOptions(min_in_channels=1))
    assert result.record.layers[0].converted
    assert render_latency.latency_table(result.record) is None
    assert render_latency.latency_line(result.record) is None
    assert result.record.to_dict()["latency"] is None


def test_the_chosen_candidate_is_matched_by_rank_and_layout():
    """Issue 14 item 6: candidates of ranks 2 and 4 in one layout; the record chose rank 4, the
    table said "repeat r2" (it matched the layout only)."""
    from rich.console import Console

    from convtool.records import ConversionRecord, LayerChange, Totals

    candidates = [{"layout": "repeat", "rank": 2, "speedup": 1.31}, {"layout": "repeat", "rank": 4, "speedup": 1.12},
                  {"layout": "branches", "rank": 4, "speedup": 1.05}]
    layer = LayerChange(name="conv2", status="converted", reason=None, kernel=[3, 3], in_channels=16,
                        out_channels=32, group=1, rank=4, layout="repeat", params_before=4640, params_after=1000,
                        latency_decision="converted", latency_candidates=candidates, latency_original_ms=0.2,
                        latency_replacement_ms=0.18, latency_speedup=1.12)
    record = ConversionRecord(input="m.onnx", output=None, layers=[layer],
                              totals=Totals(1, 1, 0, 4640, 1000, 100, 50))
    console = Console(width=120, record=True)
    console.print(render_latency.latency_table(record, width=120))
    text = console.export_text()
    row = next(line for line in text.splitlines() if line.startswith("conv2"))
    assert "repeat r4" in row and "1.12x" in row, text
    assert "also timed: repeat r2 1.31x, branches r4 1.05x" in " ".join(text.split()), text


def test_every_speedup_has_its_interval_and_an_undecided_layer_says_so():
    from rich.console import Console

    from convtool.records import ConversionRecord, LayerChange, Totals

    candidates = [{"layout": "repeat", "rank": 2, "speedup": 1.03, "ci_low": 0.97, "ci_high": 1.08, "runs": 320},
                  {"layout": "branches", "rank": 2, "speedup": 0.9, "ci_low": 0.85, "ci_high": 0.95, "runs": 40}]
    layer = LayerChange(name="conv2", status="skipped", reason="not resolved", kernel=[3, 3], in_channels=16,
                        out_channels=32, group=1, rank=2, layout=None, params_before=4640, params_after=4640,
                        latency_decision="not resolved at 320 runs: replacement 1.03x faster, ...",
                        latency_candidates=candidates, latency_original_ms=0.2, latency_replacement_ms=0.194,
                        latency_speedup=1.03, latency_ci_low=0.97, latency_ci_high=1.08, latency_resolved=False)
    record = ConversionRecord(input="m.onnx", output=None, layers=[layer], totals=Totals(1, 0, 1, 4640, 4640, 100, 100))
    console = Console(width=80, record=True)
    console.print(render_latency.latency_table(record, width=80))
    text = " ".join(console.export_text().split())
    assert "1.03x (0.97-1.08)" in text and "kept: not resolved at 320 runs" in text, text
    assert "branches r2 0.90x (0.85-0.95)" in text, text
