"""``--latency-aware`` results -> rich tables and lines (pure functions, no terminal needed).

Times are onnxruntime medians in milliseconds, speedups the median of paired ratios
``original / replacement`` with their 95 % interval (:func:`convtool.core.decide.speedup`); numbers
use :mod:`convtool.render.fmt` and the table fits the console like every other
(:mod:`convtool.render.table`).
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from convtool.records import ConversionRecord
from convtool.render import fmt
from convtool.render.table import Column, build, fit

__all__ = ["latency_table", "latency_line"]


def _label(candidate: dict) -> str:
    """``branches`` or, when candidates differ in rank too, ``branches r2``."""
    rank = candidate.get("rank")
    return f"{candidate.get('layout', '-')}" + (f" r{rank}" if rank is not None else "")


def _ci(low: float | None, high: float | None) -> str:
    return f" ({low:.2f}-{high:.2f})" if low is not None and high is not None else ""


def _columns(record: ConversionRecord, decision_below: bool) -> list[Column]:
    rows = [layer for layer in record.layers if layer.latency_decision is not None]
    layouts, times, speedups, decisions = [], [], [], []
    for layer in rows:
        candidates = list(layer.latency_candidates or [])
        best = next((c for c in candidates if layer.converted and c.get("layout") == layer.layout
                     and c.get("rank") in (None, layer.rank)), None)  # the chosen (rank, layout), not its layout
        best = best or max(candidates, key=lambda c: c.get("speedup") or 0.0, default=None)
        others = [f"{_label(c)} {fmt.times(c.get('speedup'))}{_ci(c.get('ci_low'), c.get('ci_high'))}"
                  for c in candidates if c is not best]
        kept = ("kept" if layer.latency_resolved is not False
                else f"kept: not resolved at {best.get('runs') if best else '?'} runs")
        decision = ("converted" if layer.converted else kept) + (f"; also timed: {', '.join(others)}" if others else "")
        layouts.append(_label(best) if best else "-")
        times.append(fmt.ms_pair(layer.latency_original_ms, layer.latency_replacement_ms))
        speedups.append(fmt.times(layer.latency_speedup) + _ci(layer.latency_ci_low, layer.latency_ci_high))
        decisions.append(Text(decision, style="green" if layer.converted else "yellow"))
    names = Column("layer / decision" if decision_below else "layer", [layer.name for layer in rows],
                   justify="left", names=True)
    cols = [names, Column("layout", layouts, justify="left"), Column("ms", times), Column("speedup", speedups)]
    if decision_below:
        names.below = list(decisions)
    else:
        cols.append(Column("decision", list(decisions), justify="left", wrap=True))
    return cols


def latency_table(record: ConversionRecord, title: str | None = "measured per layer (onnxruntime)",
                  width: int = 120) -> Table | None:
    """One row per measured layer: original→replacement medians, speedup, decision."""
    if not any(layer.latency_decision is not None for layer in record.layers):
        return None
    cols = fit([lambda: _columns(record, decision_below=False), lambda: _columns(record, decision_below=True)],
               width)
    return build(cols, width, title=title)


def _unresolved(e2e) -> str:
    return f", not resolved at {e2e.runs} runs" if e2e.ci_low <= 1.0 <= e2e.ci_high else ""


def latency_line(record: ConversionRecord) -> Text | None:
    """The end-to-end A/B result and the session options it was measured with."""
    lat = record.latency
    if not lat:
        return None
    text = Text()
    e2e = lat.end_to_end
    if e2e:
        style = "red" if lat.reverted else ("green" if e2e.speedup > 1 else "yellow")
        text.append(f"end to end: {fmt.ms_pair(e2e.original_ms, e2e.converted_ms)} ms, ", style="bold")
        text.append(f"{fmt.faster_ci(e2e.speedup, e2e.ci_low, e2e.ci_high)}, {e2e.runs} interleaved runs"
                    f"{_unresolved(e2e)}", style=style)
        if lat.reverted:
            text.append("; slower, so the original model was kept", style="red")
        text.append("; ")
    text.append(f"onnxruntime {lat.onnxruntime}, {lat.threads} thread{'s' if lat.threads != 1 else ''}, "
                f"opt level {lat.opt_level}, spinning {'on' if lat.allow_spinning else 'off'}; "
                f"{lat.layers_measured} pair{'s' if lat.layers_measured != 1 else ''} timed, "
                f"{lat.cache_hits} from cache")
    return text
