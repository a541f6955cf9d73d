"""A :class:`~convtool.report.Report` as rich tables and as GitHub-flavoured Markdown.

Pure functions: they take the report and return renderables or text; nothing here prints,
times or reads files. The terminal and the Markdown show the same content:

1. the verdict in one line (:func:`verdict`): for a pair, e.g. ``1.24x faster, MACs -68.0%,
   params -70.1%, drift 0.0120 on 497 samples of eval.npz, top-1 agreement 99.8%``; on seeded random
   inputs it says that drift then says little about accuracy, and top-1 agreement (the arg-max
   of random inputs' scores) is not shown at all;
2. a summary (one model) or before/after table (a pair): parameters, MACs, FLOPs (2 x MACs),
   latency median with p10-p90, speedup, the drift ``--max-drift`` budgets (per-channel
   relative L2, the same number as ``convert --max-drift``) beside the plain whole-tensor
   relative L2, cosine, max abs error, top-1 agreement and accuracy; changes coloured green
   when they help and red when they hurt;
3. per-layer: for a pair, every converted layer with its replacement nodes (``.dw + .pw``),
   parameters, MACs and (with ``--profile``) time before and after, slower layers flagged; for
   one model, the nodes with the most MACs;
4. the gates with threshold, value and PASS/FAIL, in the tables' units (fractions as
   percentages: ``--min-mac-reduction 0.3`` reads ``>= 30.0%``; speedups as ``1.20x``);
5. the measurement environment, notes and a legend of the abbreviations.

With ``--int8-baseline`` (:class:`convtool.report.Int8Baseline`) the before/after table gets an
``INT8 orig.`` column between the original and the converted model (size on disk, latency, the
speedup of each over the original and of the converted model over the INT8 original, each with
its interval, drift, agreement and accuracy), and the verdict adds which of the two is faster
at what drift (:func:`int8_verdict`).

Numbers use :mod:`convtool.render.fmt`, the vocabulary ``convert`` uses too; tables fit the
console (:mod:`convtool.render.table`).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from convtool.render import fmt
from convtool.render.table import Column, build, fit
from convtool.report import GateResult, LayerRecord, Report

__all__ = [
    "report_renderable",
    "verdict",
    "int8_verdict",
    "summary_table",
    "layers_table",
    "gates_table",
    "environment_text",
    "gate_failure_lines",
    "render_markdown",
    "random_inputs",
    "fmt_count",
]

#: Single-model per-node tables show this many nodes (most MACs first).
TOP_NODES = 15

#: kept for callers of the old name: the one count format
fmt_count = fmt.count

_GOOD, _BAD, _DIM = "green", "red", "dim"
RANDOM_NOTE = ("drift was measured on seeded random inputs: relative L2 and cosine show how far the outputs "
               "moved, not whether predictions changed, and top-1 agreement on random inputs says nothing "
               "about accuracy (not shown); measure on real samples: 'convtool report MODEL CONVERTED --inputs "
               "DATA', or 'convtool convert --calibration DATA --report' (its held-out samples)")


def random_inputs(report: Report) -> bool:
    """True when the drift was measured on seeded random inputs (no ``--inputs``)."""
    return report.inputs_random


def _inputs_phrase(report: Report, samples: int | None) -> str:
    if random_inputs(report):
        return f"{samples} seeded random inputs" if samples else "seeded random inputs"
    return f"{samples} samples of {report.inputs}" if samples else str(report.inputs)


# ----------------------------------------------------------------------------- verdict


def speed_text(comp) -> str:
    """``1.24x faster (95% CI 1.20x-1.28x)``, ``0.86x (slower) (95% CI 0.80x-0.95x)``, or ``speed
    not resolved at 800 runs: 1.01x (95% CI 0.98x-1.03x)``."""
    low, high, sp = comp.ci_low, comp.ci_high, comp.speedup
    if comp.resolved is False and low is not None and high is not None:
        return f"speed not resolved at {comp.runs} runs: {fmt.times(sp)} (95% CI {fmt.times(low)}-{fmt.times(high)})"
    return fmt.faster_ci(sp, low, high)


def verdict(report: Report) -> str:
    """The report in one line (see the module docstring)."""
    if not report.is_pair:
        m = report.models[0]
        parts = [f"{fmt.count(m.params)} params", f"{fmt.count(m.macs)} MACs"]
        if m.latency is not None:
            parts.append(f"{fmt.ms(m.latency.median)} ms median ({m.latency.runs} runs)")
        if m.accuracy is not None:
            parts.append(f"top-1 accuracy {fmt.pct(m.accuracy)} on {report.inputs}")
        return ", ".join(parts)
    a, b = report.models
    comp = report.comparison
    assert comp is not None
    parts = []
    if comp.speedup is not None:
        parts.append(speed_text(comp))
    parts.append(_less("MACs", comp.mac_reduction))
    parts.append(_less("params", comp.param_reduction))
    d = comp.drift
    if d is not None:
        samples = getattr(d, "samples", 0) or None
        parts.append(f"drift {fmt.num(d.drift)} on {_inputs_phrase(report, samples)}")
        if random_inputs(report):
            parts[-1] += " (says little about accuracy)"
        elif d.top1_agreement is not None:
            parts.append(f"top-1 agreement {fmt.pct(d.top1_agreement)}")
    if a.accuracy is not None and b.accuracy is not None:
        parts.append(f"top-1 accuracy {fmt.arrow(fmt.pct(a.accuracy), fmt.pct(b.accuracy))}")
    int8 = int8_verdict(report)
    if int8:
        parts.append(int8)
    if report.gates:
        failed = len(report.failed_gates)
        n = len(report.gates)
        parts.append(("gate passed" if n == 1 else f"all {n} gates passed") if not failed
                     else f"{failed} of {n} gate{'s' if n != 1 else ''} failed")
    return ", ".join(parts)


def int8_verdict(report: Report) -> str | None:
    """Which is faster, the converted model or the INT8-quantized original, at what drift:
    ``1.62x faster than the INT8 original (95% CI 1.02x-2.25x) at drift 0.254 (INT8 original:
    0.0138)``,
    ``the INT8 original is faster: 0.80x (95% CI ...) ...``, or not resolved; ``None``
    without ``--int8-baseline``."""
    int8, comp = report.int8, report.comparison
    if int8 is None or comp is None:
        return None
    drifts = ""
    if comp.drift is not None and int8.comparison.drift is not None:
        drifts = f" at drift {fmt.num(comp.drift.drift)} (INT8 original: {fmt.num(int8.comparison.drift.drift)})"
    c = int8.converted
    if c.speedup is None:
        return f"INT8 original not timed (--no-latency){drifts.replace(' at drift', ': drift', 1)}"
    ci = f"95% CI {fmt.times(c.ci_low)}-{fmt.times(c.ci_high)}"
    if c.resolved is False:
        return (f"against the INT8 original: speed not resolved at {c.runs} runs, {fmt.times(c.speedup)} ({ci})"
                f"{drifts}")
    if c.speedup >= 1.0:
        return f"{fmt.times(c.speedup)} faster than the INT8 original ({ci}){drifts}"
    return f"the INT8 original is faster: converted {fmt.times(c.speedup)} of its speed ({ci}){drifts}"


def _less(what: str, reduction: float | None) -> str:
    """``MACs -68.0%``: a reduction said the way every command says a change (:mod:`fmt`)."""
    return f"{what} {fmt.UNKNOWN}" if reduction is None else f"{what} {fmt.signed_pct(-reduction)}"


# ----------------------------------------------------------------------------- rows


# A change cell: text plus whether it helps (True), hurts (False) or is neutral (None).
_Cell = tuple[str, "bool | None"]


def _rel_change(before: float | None, after: float | None, lower_is_better: bool = True) -> _Cell:
    change = fmt.change(before, after)
    if change is None:
        return ("-", None)
    text = fmt.signed_pct(change)
    if text.startswith("0.0"):
        return (text, None)
    return (text, (change < 0) == lower_is_better)


def _ci_label(low: float | None, high: float | None, unresolved: bool = False) -> str:
    """`` (95% CI 1.20-1.28x)`` after a speedup row's label (``, not resolved`` when it is not)."""
    if low is None or high is None:
        return ""
    return f" (95% CI {low:.2f}-{high:.2f}x{', not resolved' if unresolved else ''})"


def _single_rows(report: Report) -> tuple[list[str], list[list[str]], list[bool | None]]:
    """The summary of one model: header, rows and (no) flags."""
    m = report.models[0]
    rows = [
        ["params", fmt.count(m.params)],
        ["MACs", fmt.count(m.macs)],
        ["FLOPs (2 x MACs)", fmt.count(m.flops)],
    ]
    if m.latency is not None:
        rows.append(["latency median (ms)", fmt.ms(m.latency.median)])
        rows.append(["latency p10-p90 (ms)", f"{fmt.ms(m.latency.p10)}-{fmt.ms(m.latency.p90)}"])
    if report.aa_check is not None:
        aa = report.aa_check
        rows.append([f"A/A ratio (noise floor){_ci_label(aa.ci_low, aa.ci_high)}", fmt.times(aa.ratio)])
    if m.accuracy is not None:
        rows.append(["top-1 accuracy", fmt.pct(m.accuracy)])
    return ["metric", "value"], rows, [None] * len(rows)


def _summary_rows(report: Report) -> tuple[list[str], list[list[str]], list[bool | None]]:
    """Header, rows (plain text) and each row's good/bad flag for the change column."""
    models = report.models
    if not report.is_pair:
        return _single_rows(report)

    if report.int8 is not None:
        return _int8_rows(report)
    a, b = models
    comp = report.comparison
    assert comp is not None
    header = ["metric", "original", "converted", "change"]
    rows: list[list[str]] = []
    flags: list[bool | None] = []

    def add(label: str, before: str, after: str, cell: _Cell) -> None:
        rows.append([label, before, after, cell[0]])
        flags.append(cell[1])

    add("params", fmt.count(a.params), fmt.count(b.params), _rel_change(a.params, b.params))
    add("MACs", fmt.count(a.macs), fmt.count(b.macs), _rel_change(a.macs, b.macs))
    add("FLOPs (2 x MACs)", fmt.count(a.flops), fmt.count(b.flops), _rel_change(a.flops, b.flops))
    if a.latency is not None and b.latency is not None:
        add("latency median (ms)", fmt.ms(a.latency.median), fmt.ms(b.latency.median),
            _rel_change(a.latency.median, b.latency.median))
        add("latency p10-p90 (ms)", f"{fmt.ms(a.latency.p10)}-{fmt.ms(a.latency.p90)}",
            f"{fmt.ms(b.latency.p10)}-{fmt.ms(b.latency.p90)}", ("", None))
    if comp.speedup is not None:
        # the interval goes in the label: the change column stays narrow enough for 80 columns
        add(f"speedup{_ci_label(comp.ci_low, comp.ci_high, comp.resolved is False)}", "", "",
            (fmt.times(comp.speedup), None if comp.resolved is False else comp.speedup > 1.0))
        if report.aa_check is not None:
            aa = report.aa_check
            add(f"A/A control{_ci_label(aa.ci_low, aa.ci_high)}", "", "", (fmt.times(aa.ratio), None))
    if comp.drift is not None:
        d = comp.drift
        add("drift: per-channel rel. L2 (--max-drift)", "", fmt.num(d.drift), ("", None))
        add("rel. L2, whole tensor", "", fmt.num(d.rel_l2), ("", None))
        add("cosine similarity", "", fmt.num(d.cosine, 6), ("", None))
        add("max abs error", "", fmt.num(d.max_abs), ("", None))
        if d.top1_agreement is not None and not random_inputs(report):
            add("top-1 agreement", "", fmt.pct(d.top1_agreement), ("", None))
    if a.accuracy is not None and b.accuracy is not None:
        delta = b.accuracy - a.accuracy
        add("top-1 accuracy", fmt.pct(a.accuracy), fmt.pct(b.accuracy),
            (f"{delta * 100:+.1f} pp", None if abs(delta) < 1e-12 else delta > 0))
    return header, rows, flags


def _span(low: float | None, high: float | None, unresolved: bool) -> str:
    """A speedup interval as a cell: ``1.02-2.25x``, ``0.95-1.10x n.r.`` when it includes 1."""
    if low is None or high is None:
        return ""
    return f"{low:.2f}-{high:.2f}x{' n.r.' if unresolved else ''}"


def _int8_rows(report: Report) -> tuple[list[str], list[list[str]], list[bool | None]]:
    """The before/after rows with the INT8-quantized original as a third column (module docstring)."""
    a, b = report.models
    comp, int8 = report.comparison, report.int8
    assert comp is not None and int8 is not None
    q, vs = int8.model, int8.comparison
    header = ["metric", "original", "INT8 orig.", "converted", "change"]
    rows: list[list[str]] = []
    flags: list[bool | None] = []

    def add(label: str, before: str, middle: str, after: str, cell: _Cell = ("", None)) -> None:
        rows.append([label, before, middle, after, cell[0]])
        flags.append(cell[1])

    add("params", fmt.count(a.params), fmt.count(q.params), fmt.count(b.params), _rel_change(a.params, b.params))
    add("MACs", fmt.count(a.macs), fmt.count(q.macs), fmt.count(b.macs), _rel_change(a.macs, b.macs))
    add("FLOPs (2 x MACs)", fmt.count(a.flops), fmt.count(q.flops), fmt.count(b.flops),
        _rel_change(a.flops, b.flops))
    size_a, size_q, size_b = int8.sizes
    add("size on disk (bytes)", fmt.count(size_a), fmt.count(size_q), fmt.count(size_b), _rel_change(size_a, size_b))
    if a.latency is not None and b.latency is not None:
        add("latency median (ms)", fmt.ms(a.latency.median), fmt.ms(q.latency.median if q.latency else None),
            fmt.ms(b.latency.median), _rel_change(a.latency.median, b.latency.median))
        add("latency p10-p90 (ms)", f"{fmt.ms(a.latency.p10)}-{fmt.ms(a.latency.p90)}",
            f"{fmt.ms(q.latency.p10)}-{fmt.ms(q.latency.p90)}" if q.latency else fmt.NONE,
            f"{fmt.ms(b.latency.p10)}-{fmt.ms(b.latency.p90)}")
    if comp.speedup is not None:
        add("speedup over the original", "", fmt.times(vs.speedup), fmt.times(comp.speedup))
        add("95% CI", "", _span(vs.ci_low, vs.ci_high, vs.resolved is False),
            _span(comp.ci_low, comp.ci_high, comp.resolved is False))
        c = int8.converted
        add("speedup over the INT8 original", "", "", fmt.times(c.speedup))
        add("95% CI", "", "", _span(c.ci_low, c.ci_high, c.resolved is False))
        if report.aa_check is not None:
            aa = report.aa_check
            add(f"A/A control{_ci_label(aa.ci_low, aa.ci_high)}", "", "", "", (fmt.times(aa.ratio), None))
    d, dq = comp.drift, vs.drift
    if d is not None:
        add("drift: per-channel rel. L2 (--max-drift)", "", fmt.num(dq.drift if dq else None), fmt.num(d.drift))
        add("rel. L2, whole tensor", "", fmt.num(dq.rel_l2 if dq else None), fmt.num(d.rel_l2))
        add("cosine similarity", "", fmt.num(dq.cosine if dq else None, 6), fmt.num(d.cosine, 6))
        add("max abs error", "", fmt.num(dq.max_abs if dq else None), fmt.num(d.max_abs))
        if d.top1_agreement is not None and not random_inputs(report):
            add("top-1 agreement", "", fmt.pct(dq.top1_agreement if dq else None), fmt.pct(d.top1_agreement))
    if a.accuracy is not None and b.accuracy is not None:
        delta = b.accuracy - a.accuracy
        add("top-1 accuracy", fmt.pct(a.accuracy), fmt.pct(q.accuracy), fmt.pct(b.accuracy),
            (f"{delta * 100:+.1f} pp", None if abs(delta) < 1e-12 else delta > 0))
    return header, rows, flags


def _short(layer: str, node: str) -> str:
    """``conv.dw`` under layer ``conv`` is shown as ``.dw``."""
    return node[len(layer):] if node.startswith(layer + ".") else node


def _layer_rows(report: Report) -> tuple[str, list[str], list[list[str]], list[bool]]:
    """Title, header, rows (plain text; before/after pairs with the one arrow) and 'slower' flags."""
    if report.is_pair:
        timed = any(x.latency_ms is not None or x.latency_ms_before is not None for x in report.layers)
        header = ["layer", "replaced by", "params", "MACs"] + (["time (ms)", "flag"] if timed else [])
        rows, flags = [], []
        for layer in report.layers:
            row = [
                layer.name,
                " + ".join(_short(layer.name, n) for n in layer.replaced_by),
                fmt.counts(layer.params_before, layer.params),
                fmt.counts(layer.macs_before, layer.macs),
            ]
            if timed:
                row += [fmt.ms_pair(layer.latency_ms_before, layer.latency_ms), "slower" if layer.slower else ""]
            rows.append(row)
            flags.append(bool(layer.slower))
        return f"Converted layers ({len(rows)})", header, rows, flags
    nodes = sorted(report.layers, key=lambda n: (n.macs or 0, n.params), reverse=True)
    shown: Sequence[LayerRecord] = [n for n in nodes if (n.macs or n.params or n.latency_ms)][:TOP_NODES]
    header = ["node", "op", "params", "MACs", "time (ms)"]
    rows = [[n.name, n.op_type, fmt.count(n.params), fmt.count(n.macs), fmt.ms(n.latency_ms)] for n in shown]
    title = f"Top {len(rows)} of {len(report.layers)} nodes by MACs"
    return title, header, rows, [False] * len(rows)


#: Gates whose values are fractions of 1: shown as percentages, like the tables beside them.
_PERCENT_GATES = ("--min-top1-agreement", "--max-accuracy-drop", "--min-param-reduction", "--min-mac-reduction")


def _gate_number(g: GateResult, value: float | None) -> str:
    """A gate's threshold or value in the tables' vocabulary: ``30.0%``, ``1.20x``, ``0.0500``."""
    if g.flag in _PERCENT_GATES:
        return fmt.pct(value)
    if g.flag == "--min-speedup":
        return fmt.times(value)
    return fmt.num(value)


def _gate_rows(gates: Sequence[GateResult]) -> list[list[str]]:
    return [[g.flag, f"{g.direction} {_gate_number(g, g.threshold)}", _gate_number(g, g.value),
             "PASS" if g.passed else "FAIL"] for g in gates]


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
        several = len(report.models) > 1 or report.aa_check
        parts.append(f"{lat.runs} timed runs{' interleaved' if several else ''} in rounds of fresh sessions")
    if report.profile_opt_level is not None:
        parts.append(f"profiled at opt level {report.profile_opt_level}")
    return " · ".join(parts)


def legend_text(report: Report) -> str | None:
    """The abbreviations the tables use."""
    parts = []
    if report.is_pair:
        parts.append("before→after: original→converted")
        if report.layers:
            parts.append(".dw + .pw: the depthwise and pointwise convs that replaced the layer (named after it)")
            suffixes = " ".join(_short(x.name, n) for x in report.layers for n in x.replaced_by)
            extra = [text for key, text in ((".rep", ".rep: the input repeated r times"),
                                            (".b0", ".b0, .b1...: one depthwise + pointwise branch per rank"),
                                            (".sum", ".sum: the branches added")) if key in suffixes]
            if extra:
                parts[-1] += " (" + ", ".join(extra) + ")"
        parts.append("change: converted / original - 1")
        if report.int8 is not None:
            parts.append("INT8 orig.: the original quantized to INT8 by onnxruntime (see the note); n.r.: the "
                         "interval includes 1.00x (speed not resolved)")
    return "; ".join(parts) or None


def notes(report: Report) -> list[str]:
    """The report's notes, plus the random-inputs caveat when it applies."""
    out = list(report.notes)
    if report.is_pair and random_inputs(report) and report.comparison is not None \
            and report.comparison.drift is not None:
        out.append(RANDOM_NOTE)
    return out


def gate_failure_lines(report: Report) -> list[str]:
    """``gate failed: --max-drift 0.120 (needs <= 0.0500)`` lines, one per failed gate."""
    return [f"gate failed: {g.flag} {_gate_number(g, g.value)} (needs {g.direction} {_gate_number(g, g.threshold)})"
            for g in report.failed_gates]


# ----------------------------------------------------------------------------- rich


def summary_table(report: Report, width: int = 120) -> Table:
    header, rows, flags = _summary_rows(report)
    cols = [Column(header[0], [r[0] for r in rows], justify="left", wrap=True)]
    for i, h in enumerate(header[1:], start=1):
        cells: list[str | Text] = [r[i] for r in rows]
        if report.is_pair and i == len(header) - 1:
            cells = [Text(r[i], style=_GOOD if f is True else _BAD if f is False else "") for r, f in zip(rows, flags)]
        cols.append(Column(h, cells))
    table = build(cols, width, title="Before / after" if report.is_pair else "Model")
    if report.is_pair:
        table.caption = f"original: {report.models[0].path}  converted: {report.models[1].path}"
    else:
        table.caption = report.models[0].path
    table.caption_justify = "left"
    return table


def _layer_columns(report: Report, rows: list[list[str]], header: list[str], flags: list[bool]) -> list[Column]:
    style = [_BAD if s else "" for s in flags]
    cols = [Column(header[0], [r[0] for r in rows], justify="left", names=True)]
    for i, h in enumerate(header[1:], start=1):
        text_col = h in ("replaced by", "op", "flag")
        cells = [Text(r[i], style=s) for r, s in zip(rows, style)]
        cols.append(Column(h, cells, justify="left" if text_col else "right", wrap=h == "replaced by"))
    return cols


def layers_table(report: Report, width: int = 120) -> Table | None:
    if not report.layers:
        return None
    title, header, rows, flags = _layer_rows(report)
    cols = fit([lambda: _layer_columns(report, rows, header, flags)], width)
    return build(cols, width, title=title)


def gates_table(report: Report, width: int = 120) -> Table | None:
    if not report.gates:
        return None
    rows = _gate_rows(report.gates)
    cols = [Column("gate", [r[0] for r in rows], justify="left"), Column("threshold", [r[1] for r in rows]),
            Column("value", [r[2] for r in rows]),
            Column("result", [Text(r[3], style=f"bold {_GOOD if g.passed else _BAD}")
                              for r, g in zip(rows, report.gates)])]
    return build(cols, width, title="Gates")


def report_renderable(report: Report, width: int = 120) -> RenderableType:
    """The verdict, every table, then the environment line, notes and legend."""
    parts: list[RenderableType] = [Text(verdict(report), style="bold"), summary_table(report, width)]
    for extra in (layers_table(report, width), gates_table(report, width)):
        if extra is not None:
            parts.append(extra)
    parts.append(Text(environment_text(report), style=_DIM))
    legend = legend_text(report)
    if legend:
        parts.append(Text(legend, style=_DIM))
    for note in notes(report):
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
    out += [f"**{verdict(report)}**", ""]
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
        verdict_text = "all passed" if report.passed else f"{len(report.failed_gates)} failed"
        grows = [[*r[:3], ("✅ " if g.passed else "❌ ") + r[3]] for r, g in zip(_gate_rows(report.gates), report.gates)]
        out += [f"### Gates ({verdict_text})", "", _md_table(["gate", "threshold", "value", "result"], grows), ""]
    out += [f"_{environment_text(report)}_", ""]
    legend = legend_text(report)
    if legend:
        out += [f"_{legend}_", ""]
    for note in notes(report):
        out += [f"> note: {note}", ""]
    return "\n".join(out).rstrip() + "\n"
