"""Conversion records -> rich tables and Markdown (pure functions, no terminal needed)."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from convtool.report import ConversionRecord, LayerChange


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


def markdown(record: ConversionRecord) -> str:
    """The same layer table as GitHub-flavoured Markdown."""
    lines = [
        "| layer | kernel | channels | rank | params | MACs | weight err | status |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for layer in record.layers:
        if layer.converted:
            lines.append(
                f"| {layer.name} | {_kernel(layer)} | {_channels(layer)} | {layer.rank} | "
                f"{human(layer.params_before)} -> {human(layer.params_after)} | "
                f"{human(layer.macs_before)} -> {human(layer.macs_after)} | {layer.weight_error:.3f} | converted |"
            )
        else:
            lines.append(
                f"| {layer.name} | {_kernel(layer)} | {_channels(layer)} | - | {human(layer.params_before)} | "
                f"{human(layer.macs_before)} | | skipped: {layer.reason} |"
            )
    t = record.totals
    lines.append("")
    lines.append(
        f"**{t.converted} of {t.conv_nodes} Conv nodes converted** ({record.rank_policy}); params "
        f"{human(t.params_before)} -> {human(t.params_after)}, MACs {human(t.macs_before)} -> {human(t.macs_after)}"
    )
    return "\n".join(lines) + "\n"
