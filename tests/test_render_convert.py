"""The convert renderers on hand-made records: true times, unknowns, latency tables that fit."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from convtool.records import (
    CalibrationSummary,
    ConversionRecord,
    LatencySummary,
    LayerChange,
    SearchSummary,
    Totals,
)
from convtool.render import convert as render
from convtool.render import fmt
from convtool.render import latency as render_latency


def text_of(*items, width: int = 120) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, legacy_windows=False)
    for item in items:
        console.print(item)
    return buf.getvalue()


def layer(name: str, converted: bool = True, **kw) -> LayerChange:
    base = dict(name=name, status="converted" if converted else "skipped", reason=None if converted else "kernel is 1x1",
                kernel=[3, 3], in_channels=64, out_channels=128, group=1, params_before=73728, macs_before=75_497_472)
    if converted:
        base.update(rank=1, params_after=8768, macs_after=8_978_432, weight_error=0.911, layout="multiplier")
    else:
        base.update(params_after=73728, macs_after=75_497_472)
    base.update(kw)
    return LayerChange(**base)


def record(layers, **kw) -> ConversionRecord:
    totals = Totals(conv_nodes=len(layers), converted=sum(x.converted for x in layers),
                    skipped=sum(not x.converted for x in layers), params_before=1_150_000, params_after=138_000,
                    macs_before=611_000_000, macs_after=79_200_000)
    return ConversionRecord(input="m.onnx", output="m.dws.onnx", layers=list(layers), totals=totals,
                            rank_policy="rank 1", **kw)


def calibration(reused: int, seconds: float) -> CalibrationSummary:
    return CalibrationSummary(source="cal.npz", samples=240, fit_samples=192, held_out_samples=48, method="pointwise",
                              layers_refitted=5, layers_kept_data_free=0, sessions=0 if reused else 10,
                              layers_reused=reused, seconds=seconds)


def test_a_refit_reused_from_the_search_does_not_claim_it_took_no_time():
    line = render.summary_lines(record([layer("c")], calibration=calibration(reused=5, seconds=0.0)))[0]
    assert "5 of 5 layers refitted" in line and "reused from the search" in line
    assert "0.0 s" not in line
    line = render.summary_lines(record([layer("c")], calibration=calibration(reused=0, seconds=1.84)))[0]
    assert line.startswith("calibration: 240 samples of cal.npz (192 fitted, 48 held out to choose each layer's fit)")
    assert line.endswith("in 1.8 s")
    line = render.summary_lines(record([layer("c")], calibration=calibration(reused=2, seconds=3.0)))[0]
    assert "2 reused from the search, the others solved in 3.0 s" in line


def _search(refit: bool, data: str, top1: float | None) -> SearchSummary:
    return SearchSummary(metric="rel_l2", max_drift=0.05, drift=0.0473, rel_l2=0.0473, plain_rel_l2=0.0311,
                         top1_agreement=top1, data=data, samples=300 if refit else 16, refit=refit, evaluations=20, seconds=15.2,
                         ranks={"c": 1}, held_out_samples=60 if refit else 0, fitted_drift=0.0418 if refit else None)


def test_search_line_names_both_drifts_and_qualifies_random_inputs():
    line = render.summary_lines(record([layer("c")], search=_search(True, "cal.npz", 0.998)))[0]
    assert "drift 0.0473 (per-channel rel. L2) (too few held-out samples for a 95% bound) on 60 of the 300 " \
           "samples of cal.npz (held out from every fit)" in line
    assert "whole-tensor rel. L2 0.0311" in line and "top-1 agreement 99.8%" in line
    assert line.endswith("20 whole-model evaluations in 15.2 s")
    line = render.summary_lines(record([layer("c")], search=_search(False, "16 seeded random inputs", 0.0)))[0]
    assert "16 seeded random inputs, which say little about accuracy" in line
    assert "top-1 agreement" not in line  # meaningless on random inputs


def test_search_line_gives_the_bound_whether_it_certifies_and_the_phases():
    from dataclasses import replace

    base = _search(True, "cal.npz", 0.998)
    ok = replace(base, bound=0.049, certified=True, phases={"candidates": 12.0, "capture": 3.0, "fits": 4.0,
                                                           "sensitivity": 5.0, "sequential refit": 30.0})
    line = render.summary_lines(record([layer("c")], search=ok))[0]
    assert "(95% upper bound 0.0490: certifies the budget)" in line
    assert "timing layers 12.0 s, capture 3.0 s, local fits 4.0 s, suffix runs 5.0 s, sequential refit 30.0 s" in line
    line = render.summary_lines(record([layer("c")], search=replace(base, bound=0.06, certified=False)))[0]
    assert "does NOT certify the budget" in line


def test_the_search_and_the_refit_count_samples_the_same_way():
    """Issue 14 item 12: "240 samples (48 held out)" next to "60 held-out samples" - of what?"""
    search = SearchSummary(metric="rel_l2", max_drift=0.05, drift=0.0473, rel_l2=0.0473, plain_rel_l2=0.0311,
                           top1_agreement=None, data="cal.npz", samples=300, refit=True, evaluations=20, seconds=15.2,
                           ranks={"c": 1}, held_out_samples=60, fitted_drift=0.0418)
    cal = CalibrationSummary(source="cal.npz", samples=240, fit_samples=192, held_out_samples=48, method="pointwise",
                             layers_refitted=1, layers_kept_data_free=0, sessions=1, layers_reused=0, seconds=1.0)
    lines = render.summary_lines(record([layer("c")], search=search, calibration=cal))
    assert "on 60 of the 300 samples of cal.npz (held out from every fit)" in lines[0]
    assert lines[1].startswith("calibration: the 240 of the 300 samples of cal.npz the search fits on (192 fitted, "
                               "48 held out to choose each layer's fit); 1 of 1 layer refitted"), lines[1]


def test_unknown_macs_are_unknown_never_zero():
    rec = record([layer("c", macs_before=None, macs_after=None), layer("d", converted=False, macs_before=None)])
    rec.totals.macs_before = rec.totals.macs_after = None
    rec.totals.macs_unknown_reason = "input 'x' has symbolic dims; pass --input-shape"
    text = " ".join(text_of(render.layer_table(rec, width=120), render.totals_line(rec)).split())
    assert "MACs unknown (input 'x' has symbolic dims; pass --input-shape)" in text
    assert text.count("unknown") >= 3 and "0→" not in text


def test_note_is_shown_with_the_result():
    text = text_of(render.layer_table(record([layer("c", note="rank capped at 9 (kernel taps)")]), width=80),
                   width=80)
    assert "rank capped at 9 (kernel taps)" in " ".join(text.split())


def _timed(name: str, converted: bool) -> LayerChange:
    return layer(name, converted=converted, latency_original_ms=0.412, latency_replacement_ms=0.198 if converted else 0.5,
                 latency_speedup=2.08 if converted else 0.82, latency_decision="converted" if converted else "kept",
                 latency_candidates=[{"layout": "multiplier", "rank": 1, "speedup": 2.08 if converted else 0.82},
                                     {"layout": "branches", "rank": 2, "speedup": 1.31}])


@pytest.mark.parametrize("width", [80, 120])
def test_latency_table_fits_and_keeps_numbers_whole(width):
    rec = record([_timed(f"/model.{i}/cv2.{i}/cv2.{i}.0/conv/Conv", converted=i % 2 == 0) for i in range(4)],
                 latency=LatencySummary(threads=1, opt_level="all", allow_spinning=False, onnxruntime="1.x", cpu="cpu",
                                        margin=0.05, layers_measured=1, cache_hits=3, cache_dir=None))
    text = text_of(render_latency.latency_table(rec, width=width), render_latency.latency_line(rec), width=width)
    assert all(len(line) <= width for line in text.splitlines()), text
    for token in ("0.412→0.198", "2.08x", "0.82x", "branches r2 1.31x", fmt.ms(0.5)):
        assert token in text, token
    assert "1 pair timed, 3 from cache" in " ".join(text.split())
