"""Conversion records -> rich tables and Markdown (pure functions, no terminal needed)."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from convtool.records import ConversionRecord, LayerChange


def human(n: int | None) -> str:
    """``1234567 -> '1.23M'``; ``None -> '?'``."""
    if n is None:
        return "?"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return str(n)


def ratio(before: int | None, after: int | None) -> str:
    if not before or after is None:
        return ""
    return f"{after / before:.2f}x"


def _kernel(layer: LayerChange) -> str:
    return "x".join(str(k) for k in layer.kernel) or "?"


def _channels(layer: LayerChange) -> str:
    text = f"{layer.in_channels}->{layer.out_channels}"
    return text + (f" /g{layer.group}" if layer.group > 1 else "")


def _arrow(before: int | None, after: int | None) -> str:
    return f"{human(before)}\u2192{human(after)}"


def console_width(is_terminal: bool, width: int) -> int:
    """Logs and pipes are not terminals: give tables room (120 columns) instead of rich's 80."""
    return width if is_terminal else max(width, 120)


def layer_table(record: ConversionRecord, title: str | None = None) -> Table:
    """One row per Conv: what it became, or why it was skipped."""
    show_cal = any(layer.output_error_after is not None for layer in record.layers)
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("layer", overflow="fold")
    for col in ("k", "channels", "rank", "params", "MACs", "MACs x", "w.err"):
        table.add_column(col, justify="right", overflow="fold")
    if show_cal:
        table.add_column("out err (refit)", justify="right", no_wrap=True)
    table.add_column("result", overflow="fold", min_width=12)
    for layer in record.layers:
        if layer.converted:
            cells = [
                layer.name, _kernel(layer), _channels(layer), str(layer.rank),
                _arrow(layer.params_before, layer.params_after), _arrow(layer.macs_before, layer.macs_after),
                ratio(layer.macs_before, layer.macs_after).rstrip("x"),
                f"{layer.weight_error:.3f}" if layer.weight_error is not None else "",
            ]
            if show_cal:
                cells.append(_refit_cell(layer))
            status = layer.layout or "converted"
            if layer.folded_batchnorm:
                status += " +BN"
            table.add_row(*cells, Text(status, style="green"))
        else:
            cells = [layer.name, _kernel(layer), _channels(layer), "-", human(layer.params_before),
                     human(layer.macs_before), "", ""]
            if show_cal:
                cells.append("")
            table.add_row(*cells, Text(f"skip: {layer.reason}", style="yellow"))
    return table


def _refit_cell(layer: LayerChange) -> str:
    if layer.output_error_after is None:
        return ""
    before = f"{layer.output_error_before:.3f}" if layer.output_error_before is not None else "?"
    return f"{before} -> {layer.output_error_after:.3f}"


def totals_line(record: ConversionRecord) -> Text:
    t = record.totals
    text = Text()
    text.append(f"{t.converted} of {t.conv_nodes} Conv nodes converted ({record.rank_policy}); ", style="bold")
    text.append(f"params {human(t.params_before)} -> {human(t.params_after)} ({ratio(t.params_before, t.params_after)}), ")
    text.append(f"MACs {human(t.macs_before)} -> {human(t.macs_after)} ({ratio(t.macs_before, t.macs_after)})")
    return text


def summary_lines(record: ConversionRecord) -> list[str]:
    """Human-readable lines about the refit and the ``--max-drift`` search, if any ran."""
    lines = []
    cal = record.calibration
    if cal is not None:
        total = cal.layers_refitted + cal.layers_kept_data_free
        lines.append(
            f"calibration: {cal.samples} samples ({cal.held_out_samples} held out) from {cal.source}; "
            f"{cal.layers_refitted} of {total} layers refitted, in {cal.seconds:.1f} s"
        )
    search = record.search
    if search is not None:
        agree = search.top1_agreement
        fitted = f"; fitted {search.fitted_drift:.4g}" if search.fitted_drift is not None else ""
        lines.append(
            f"max-drift search ({search.metric}): held-out drift {search.drift:.4g} (budget {search.max_drift:g}"
            f"{fitted}; rel L2 {search.rel_l2:.4g}" + (f", top-1 agreement {agree:.1%}" if agree is not None else "")
            + f") on {search.held_out_samples or search.samples} samples ({search.data}), "
            f"{search.evaluations} evaluations, {search.seconds:.1f} s"
        )
    return lines
