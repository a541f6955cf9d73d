"""A :class:`~convtool.report.Report` as rich tables and as GitHub-flavoured Markdown.

Pure functions: they take the report and return renderables or text; nothing here prints,
times or reads files. The terminal and the Markdown show the same tables:

1. a summary (one model) or before/after table (a pair): parameters, MACs, FLOPs (2 x MACs),
   latency median with p10-p90, speedup, output drift, accuracy; changes coloured green when
   they help and red when they hurt;
2. per-layer: for a pair, every converted layer with its replacement nodes, parameters, MACs
   and (with ``--profile``) time before and after, slower layers flagged; for one model, the
   nodes with the most MACs;
3. the gates with threshold, value and PASS/FAIL;
4. the measurement environment and notes.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from convtool.report import GateResult, LayerRecord, Report

__all__ = [
    "report_renderable",
    "summary_table",
    "layers_table",
    "gates_table",
    "environment_text",
    "gate_failure_lines",
    "render_markdown",
    "fmt_count",
]

#: Single-model per-node tables show this many nodes (most MACs first).
TOP_NODES = 15

_GOOD, _BAD, _DIM = "green", "red", "dim"


# ----------------------------------------------------------------------------- formatting


def fmt_count(n: int | None) -> str:
    """Compact count: 950, 12.3K, 4.56M, 1.23G."""
    if n is None:
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return str(n)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _pct(v: float | None, signed: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v * 100:+.1f}%" if signed else f"{v * 100:.1f}%"


def _num(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}"


# A change cell: text plus whether it helps (True), hurts (False) or is neutral (None).
_Cell = tuple[str, bool | None]


def _rel_change(before: float | None, after: float | None, lower_is_better: bool = True) -> _Cell:
    if before is None or after is None or before == 0:
        return ("-", None)
    change = after / before - 1.0
    if abs(change) < 5e-4:
        return ("0.0%", None)
    return (_pct(change), (change < 0) == lower_is_better)


def _summary_rows(report: Report) -> tuple[list[str], list[list[str]], list[bool | None]]:
    """Header, rows (plain text) and each row's good/bad flag for the change column."""
    models = report.models
    if not report.is_pair:
        m = models[0]
        rows = [
            ["params", fmt_count(m.params)],
            ["MACs", fmt_count(m.macs)],
            ["FLOPs (2 x MACs)", fmt_count(m.flops)],
        ]
        if m.latency is not None:
            rows.append(["latency median (ms)", _ms(m.latency.median)])
            rows.append(["latency p10-p90 (ms)", f"{_ms(m.latency.p10)}-{_ms(m.latency.p90)}"])
        if report.aa_check is not None:
            rows.append(["A/A ratio (noise floor)", f"{report.aa_check.ratio:.3f}x"])
        if m.accuracy is not None:
            rows.append(["top-1 accuracy", _pct(m.accuracy, signed=False)])
        return ["metric", "value"], rows, [None] * len(rows)

    a, b = models
    comp = report.comparison
    assert comp is not None
    header = ["metric", "original", "converted", "change"]
    rows: list[list[str]] = []
    flags: list[bool | None] = []

    def add(label: str, before: str, after: str, cell: _Cell) -> None:
        rows.append([label, before, after, cell[0]])
        flags.append(cell[1])

    add("params", fmt_count(a.params), fmt_count(b.params), _rel_change(a.params, b.params))
    add("MACs", fmt_count(a.macs), fmt_count(b.macs), _rel_change(a.macs, b.macs))
    add("FLOPs (2 x MACs)", fmt_count(a.flops), fmt_count(b.flops), _rel_change(a.flops, b.flops))
    if a.latency is not None and b.latency is not None:
        add(
            "latency median (ms)",
            _ms(a.latency.median),
            _ms(b.latency.median),
            _rel_change(a.latency.median, b.latency.median),
        )
        add(
            "latency p10-p90 (ms)",
            f"{_ms(a.latency.p10)}-{_ms(a.latency.p90)}",
            f"{_ms(b.latency.p10)}-{_ms(b.latency.p90)}",
            ("", None),
        )
    if comp.speedup is not None:
        noise = f" (A/A {report.aa_check.ratio:.3f}x)" if report.aa_check is not None else ""
        add("speedup (ratio of medians)", "", "", (f"{comp.speedup:.3f}x{noise}", comp.speedup > 1.0))
    if comp.drift is not None:
        d = comp.drift
        add("drift: rel L2", "", _num(d.rel_l2), ("", None))
        add("drift: cosine", "", _num(d.cosine, 6), ("", None))
        add("drift: max abs", "", _num(d.max_abs), ("", None))
        if d.top1_agreement is not None:
            add("top-1 agreement", "", _pct(d.top1_agreement, signed=False), ("", None))
    if a.accuracy is not None and b.accuracy is not None:
        delta = b.accuracy - a.accuracy
        add(
            "top-1 accuracy",
            _pct(a.accuracy, signed=False),
            _pct(b.accuracy, signed=False),
            (f"{delta * 100:+.1f} pp", None if abs(delta) < 1e-12 else delta > 0),
        )
    return header, rows, flags


def _layer_rows(report: Report) -> tuple[str, list[str], list[list[str]], list[bool]]:
    """Title, header, rows and each row's 'slower' flag."""
    if report.is_pair:
        timed = any(x.latency_ms is not None or x.latency_ms_before is not None for x in report.layers)
        header = ["layer", "replaced by", "params", "MACs"] + (["time (ms)", "flag"] if timed else [])
        rows, flags = [], []
        for layer in report.layers:
            row = [
                layer.name,
                " + ".join(_short(layer.name, n) for n in layer.replaced_by),
                f"{fmt_count(layer.params_before)} -> {fmt_count(layer.params)}",
                f"{fmt_count(layer.macs_before)} -> {fmt_count(layer.macs)}",
            ]
            if timed:
                row += [f"{_ms(layer.latency_ms_before)} -> {_ms(layer.latency_ms)}", "slower" if layer.slower else ""]
            rows.append(row)
            flags.append(bool(layer.slower))
        return f"Converted layers ({len(rows)})", header, rows, flags
    nodes = sorted(report.layers, key=lambda n: (n.macs or 0, n.params), reverse=True)
    shown: Sequence[LayerRecord] = [n for n in nodes if (n.macs or n.params or n.latency_ms)][:TOP_NODES]
    header = ["node", "op", "params", "MACs", "time (ms)"]
    rows = [[n.name, n.op_type, fmt_count(n.params), fmt_count(n.macs), _ms(n.latency_ms)] for n in shown]
    title = f"Top {len(rows)} of {len(report.layers)} nodes by MACs"
    return title, header, rows, [False] * len(rows)


def _short(layer: str, node: str) -> str:
    """``conv.dw`` under layer ``conv`` is shown as ``.dw``."""
    return node[len(layer) :] if node.startswith(layer + ".") else node


def _gate_rows(gates: Sequence[GateResult]) -> list[list[str]]:
    return [
        [g.flag, f"{g.direction} {_num(g.threshold)}", _num(g.value), "PASS" if g.passed else "FAIL"] for g in gates
    ]


def environment_text(report: Report) -> str:
    """One line: how the numbers were measured."""
    env = report.environment
    parts = [
        f"onnxruntime {env.onnxruntime}",
        f"CPU {env.cpu} ({env.cpu_count} logical)",
        f"{env.threads} intra-op thread{'s' if env.threads != 1 else ''}",
        f"opt level {env.opt_level}",
        f"spinning {'on' if env.allow_spinning else 'off'}",
        f"inputs {report.inputs}",
    ]
    lat = next((m.latency for m in report.models if m.latency is not None), None)
    if lat is not None:
        parts.append(f"{lat.runs} timed runs{' interleaved' if len(report.models) > 1 or report.aa_check else ''}")
    if report.profile_opt_level is not None:
        parts.append(f"profiled at opt level {report.profile_opt_level}")
    return " · ".join(parts)


def gate_failure_lines(report: Report) -> list[str]:
    """``gate failed: --max-drift 0.12 > 0.05`` lines, one per failed gate."""
    return [
        f"gate failed: {g.flag} {_num(g.value)} (needs {g.direction} {_num(g.threshold)})" for g in report.failed_gates
    ]


# ----------------------------------------------------------------------------- rich


def summary_table(report: Report) -> Table:
    header, rows, flags = _summary_rows(report)
    title = "Before / after" if report.is_pair else "Model"
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row, flag in zip(rows, flags):
        cells: list[RenderableType] = list(row)
        if report.is_pair:
            style = _GOOD if flag is True else _BAD if flag is False else ""
            cells[-1] = Text(row[-1], style=style)
        table.add_row(*cells)
    if report.is_pair:
        table.caption = f"original: {report.models[0].path}  converted: {report.models[1].path}"
    else:
        table.caption = report.models[0].path
    return table


def layers_table(report: Report) -> Table | None:
    if not report.layers:
        return None
    title, header, rows, flags = _layer_rows(report)
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 2 else "right", overflow="fold")
    for row, slower in zip(rows, flags):
        table.add_row(*row, style=_BAD if slower else None)
    return table


def gates_table(report: Report) -> Table | None:
    if not report.gates:
        return None
    table = Table(title="Gates", title_justify="left")
    for i, h in enumerate(["gate", "threshold", "value", "result"]):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row, gate in zip(_gate_rows(report.gates), report.gates):
        table.add_row(*row[:3], Text(row[3], style=f"bold {_GOOD if gate.passed else _BAD}"))
    return table


def report_renderable(report: Report) -> RenderableType:
    """Every table of the report, then the environment line and notes."""
    parts: list[RenderableType] = [summary_table(report)]
    for extra in (layers_table(report), gates_table(report)):
        if extra is not None:
            parts.append(extra)
    parts.append(Text(environment_text(report), style=_DIM))
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


# ----------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align_right_from: int = 1) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" if i < align_right_from else "---:" for i in range(len(header))) + " |")
    for row in rows:
        lines.append("| " + " | ".join(_md_escape(c) for c in row) + " |")
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown (for a CI job summary)."""
    out: list[str] = ["## convtool report", ""]
    if report.is_pair:
        out += [f"Original `{report.models[0].path}` vs converted `{report.models[1].path}`.", ""]
    else:
        out += [f"Model `{report.models[0].path}`.", ""]
    header, rows, flags = _summary_rows(report)
    if report.is_pair:
        marks = {True: " ✅", False: " ⚠️", None: ""}
        rows = [[*r[:-1], r[-1] + (marks[f] if r[-1] else "")] for r, f in zip(rows, flags)]
    out += [_md_table(header, rows), ""]
    if report.layers:
        title, lheader, lrows, slower = _layer_rows(report)
        if report.is_pair and "flag" in lheader:
            lrows = [[*r[:-1], "⚠️ slower" if s else ""] for r, s in zip(lrows, slower)]
        out += [f"### {title}", "", _md_table(lheader, lrows, align_right_from=2), ""]
    if report.gates:
        verdict = "all passed" if report.passed else f"{len(report.failed_gates)} failed"
        grows = [[*r[:3], ("✅ " if g.passed else "❌ ") + r[3]] for r, g in zip(_gate_rows(report.gates), report.gates)]
        out += [f"### Gates ({verdict})", "", _md_table(["gate", "threshold", "value", "result"], grows), ""]
    out += [f"_{environment_text(report)}_", ""]
    for note in report.notes:
        out += [f"> note: {note}", ""]
    return "\n".join(out).rstrip() + "\n"
