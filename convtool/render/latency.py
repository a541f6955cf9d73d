"""``--latency-aware`` results -> rich tables and lines (pure functions, no terminal needed)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from convtool.records import ConversionRecord


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v:.3g}"


def latency_table(record: ConversionRecord, title: str | None = "measured per layer (--latency-aware)") -> Table | None:
    """One row per measured layer: original and replacement medians, speedup, decision."""
    rows = [layer for layer in record.layers if layer.latency_decision is not None]
    if not rows:
        return None
    table = Table(title=title, header_style="bold")
    for col, just in (("layer", "left"), ("layout", "left"), ("original ms", "right"), ("replacement ms", "right"),
                      ("speedup", "right"), ("decision", "left")):
        table.add_column(col, justify=just)
    for layer in rows:
        best = next((c for c in layer.latency_candidates if layer.converted and c["layout"] == layer.layout), None)
        best = best or max(layer.latency_candidates, key=lambda c: c["speedup"], default=None)
        speed = f"{layer.latency_speedup:.2f}x" if layer.latency_speedup is not None else ""
        style = "green" if layer.converted else "yellow"
        others = [f"{c['layout']} {c['speedup']:.2f}x" for c in layer.latency_candidates if c is not best]
        decision = ("converted" if layer.converted else "kept") + (f"; also timed: {', '.join(others)}" if others else "")
        table.add_row(layer.name, best["layout"] if best else "-", _ms(layer.latency_original_ms),
                      _ms(layer.latency_replacement_ms), speed, Text(decision, style=style))
    return table


def latency_line(record: ConversionRecord) -> Text | None:
    """The end-to-end A/B result and the session options it was measured with."""
    lat = record.latency
    if not lat:
        return None
    text = Text()
    e2e = lat.end_to_end
    if e2e:
        style = "red" if lat.reverted else ("green" if e2e.speedup > 1 else "yellow")
        text.append(f"end to end: {e2e.original_ms:.3g} -> {e2e.converted_ms:.3g} ms, ", style="bold")
        text.append(f"speedup {e2e.speedup:.2f}x (95% CI {e2e.ci_low:.2f}-{e2e.ci_high:.2f}x, "
                    f"{e2e.runs} interleaved runs)", style=style)
        if lat.reverted:
            text.append("; slower, so the original model was kept", style="red")
        text.append("; ")
    text.append(f"onnxruntime {lat.onnxruntime}, {lat.threads} thread(s), opt level {lat.opt_level}, "
                f"spinning off; {lat.layers_measured} pairs timed, {lat.cache_hits} from cache")
    return text
