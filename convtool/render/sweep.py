"""``convtool sweep`` drawn three ways, from a :class:`~convtool.records.SweepRecord` (pure
functions: a record in, a table or text out).

* :func:`table`: the terminal table, one row per budget (the quality measure of the picture
  only; the Markdown and the JSON have every measure), fitted to the console like every other
  table (:mod:`convtool.render.table`): at 80 columns the headers shorten and, if still too
  wide, the latency column goes (the speedup stays), never a cut number or a lost column;
* :func:`markdown`: ``sweep.md`` - the same table, the setting it was measured in, and two
  Mermaid ``xychart-beta`` charts that GitHub renders (speedup per budget as bars; the quality
  measure per budget as a line);
* :func:`svg`: ``sweep.svg`` - the picture to pick a budget from: speedup (y) against the
  quality measure (x: accuracy with labels, else top-1 agreement, else drift, which runs
  right to left so that "better" is always to the right), one labelled point per budget, the
  original as a square at (perfect quality, 1.00x) drawn on top of budgets that converted
  nothing (they are the original), the Pareto front filled and joined by a line, dominated
  points hollow, the INT8 original (when measured) a red diamond.  The x axis spans the data
  (with a margin), not a fixed range.  Whether
  ``--finetune`` ran, and where its weights were kept, is in the subtitle, the tooltips and
  the table.  Written by hand: no plotting library.

With the INT8 original (``record.int8``: ``--int8-baseline``, ``--quantize int8``) the table and
the Markdown get a row ``INT8`` for it and a column ``vs INT8 (95% CI)``, each point's speedup
over it; the picture draws it as a diamond; :func:`summary_lines` say which budgets are faster
than it.  At 80 columns the intervals then go under their speedups.

Numbers go through :mod:`convtool.render.fmt`, like every other table: a speedup is always a
ratio (``0.82x``, never "1.21x slower"), a MAC change is signed (``MACs -56.9%``).
"""

from __future__ import annotations

import math
from html import escape

from rich.console import Group, RenderableType
from rich.text import Text

from convtool.records import PairSpeed, SweepInt8, SweepPoint, SweepRecord
from convtool.render import fmt
from convtool.render.table import Column, build, fit

__all__ = ["legend", "markdown", "nice_ticks", "rows", "svg", "table"]

PARETO = "*"
_QUALITY = {"accuracy": "accuracy", "top1_agreement": "top-1 agreement", "drift": "drift"}


def _quality(p: SweepPoint, axis: str) -> float | None:
    return getattr(p, axis)


def _quality_text(value: float | None, axis: str) -> str:
    return fmt.num(value) if axis == "drift" else fmt.pct(value)


def _finetuned(p: SweepPoint) -> str:
    """``yes``: the fine-tuned weights were kept; ``no``: fine-tuned, not kept (or nothing to
    tune); empty: --finetune was not asked for."""
    if p.finetuned is None:
        return ""
    return "yes" if p.finetuned else "no"


def _plural(n: int | None, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _finetune_ran(record: SweepRecord) -> bool:
    return any(p.finetuned is not None for p in record.points)


#: The INT8 original's row label (the budget column).
INT8_ROW = "INT8"


def _speedup_ci(speedup: float | None, low: float | None, high: float | None, stacked: bool = False) -> str:
    """``1.76x (1.31-6.69)``; with ``stacked`` the interval on a second line."""
    if speedup is None or low is None or high is None:
        return fmt.times(speedup)
    return f"{fmt.times(speedup)}{chr(10) if stacked else ' '}({low:.2f}-{high:.2f})"


def _vs_int8(v: PairSpeed | None, stacked: bool = False) -> str:
    if v is None:
        return fmt.NONE
    if v.runs is None:  # the model against itself, or the original against the INT8 original's pair
        return fmt.times(v.speedup) if v.speedup == 1.0 else _speedup_ci(v.speedup, v.ci_low, v.ci_high, stacked)
    return _speedup_ci(v.speedup, v.ci_low, v.ci_high, stacked)


def _int8_row(record: SweepRecord, q: SweepInt8, stacked: bool = False) -> dict[str, str]:
    return {
        "budget": INT8_ROW, "converted": fmt.NONE,
        "MACs": fmt.signed_pct(fmt.change(record.original.macs, q.macs)),
        "params": fmt.signed_pct(fmt.change(record.original.params, q.params)),
        "drift (search)": fmt.NONE, "drift (eval)": fmt.num(q.drift), "top-1 agreement": fmt.pct(q.top1_agreement),
        "accuracy": fmt.pct(q.accuracy), "latency ms": fmt.ms(q.latency_ms),
        "speedup (95% CI)": _speedup_ci(q.speedup, q.ci_low, q.ci_high, stacked), "vs INT8 (95% CI)": "1.00x",
        "Pareto": "", "fine-tuned": "",
    }


def rows(record: SweepRecord, stacked: bool = False) -> list[dict[str, str]]:
    """One dict of display strings per point (the table's and the Markdown's cells), then the
    INT8 original's when there is one; ``stacked``: intervals under their speedups."""
    out = []
    n = record.original.convs
    for p in record.points:
        out.append({
            "budget": f"{p.budget:g}",
            "converted": f"{p.converted}/{n}",
            "MACs": fmt.signed_pct(fmt.change(record.original.macs, p.macs)),
            "params": fmt.signed_pct(fmt.change(record.original.params, p.params)),
            "drift (search)": fmt.num(p.search_drift),
            "drift (eval)": fmt.num(p.drift),
            "top-1 agreement": fmt.pct(p.top1_agreement),
            "accuracy": fmt.pct(p.accuracy),
            "latency ms": fmt.ms(p.latency_ms),
            "speedup (95% CI)": _speedup_ci(p.speedup, p.ci_low, p.ci_high, stacked),
            "vs INT8 (95% CI)": _vs_int8(p.vs_int8, stacked),
            "Pareto": PARETO if p.pareto else "",
            "fine-tuned": _finetuned(p),
        })
    if record.int8 is not None:
        out.append(_int8_row(record, record.int8, stacked))
    return out


#: The terminal's headers, widest arrangement first: the long header, then the short one.
_SHORT = {"converted": "layers", "drift (eval)": "drift", "top-1 agreement": "agreement", "latency ms": "ms",
          "fine-tuned": "tuned", "speedup (95% CI)": "speedup", "vs INT8 (95% CI)": "vs INT8"}


def _terminal_columns(record: SweepRecord) -> list[str]:
    """The terminal's narrower choice: the quality measure of the x axis only, no search drift."""
    quality = {"accuracy": ["accuracy"], "top1_agreement": ["top-1 agreement"]}.get(record.x_axis, [])
    tuned = ["fine-tuned"] if _finetune_ran(record) else []
    int8 = ["vs INT8 (95% CI)"] if record.int8 is not None else []
    return ["budget", "converted", "MACs", "drift (eval)", *quality, "latency ms", "speedup (95% CI)", *int8,
            "Pareto", *tuned]


def _columns(record: SweepRecord) -> list[str]:
    cols = ["budget", "converted", "MACs", "params", "drift (search)", "drift (eval)"]
    if any(p.top1_agreement is not None for p in record.points):
        cols.append("top-1 agreement")
    if record.original.accuracy is not None:
        cols.append("accuracy")
    int8 = ["vs INT8 (95% CI)"] if record.int8 is not None else []
    return cols + ["latency ms", "speedup (95% CI)", *int8, "Pareto"] + (["fine-tuned"] if _finetune_ran(record)
                                                                         else [])


def _setting(record: SweepRecord) -> str:
    return _setting_text(record) + (
        "; every point quantized to INT8 (--quantize int8: equalized, onnxruntime static INT8; drift measured on the "
        "quantized model)" if record.quantize else "") + (
        f"; INT8: the original quantized by onnxruntime on {record.int8.samples} samples of "
        f"{record.int8.calibration}, each point also timed against it" if record.int8 is not None else "")


def _setting_text(record: SweepRecord) -> str:
    env = record.environment
    providers = ", ".join(env.get("providers", ())) or "CPUExecutionProvider"
    threads = env.get("threads")
    return (f"objective {record.objective}, budget metric {record.metric}; evaluation: {record.eval_samples} samples "
            f"of {record.evaluation}, not seen by the search; timing: "
            f"{_plural(threads, 'thread') if isinstance(threads, int) else f'{threads} threads'}, opt level "
            f"{env.get('opt_level')}, {providers}, onnxruntime {env.get('onnxruntime')}, {env.get('cpu')}, "
            f"each point against the original as `convtool report` times a pair: {env.get('runs')} to "
            f"{env.get('max_runs')} paired runs interleaved in rounds of fresh sessions, until the 95% CI "
            f"excludes 1 (speedup: median of paired ratios, CI from the same statistic)")


def _baseline(record: SweepRecord) -> str:
    o = record.original
    acc = f", accuracy {fmt.pct(o.accuracy)}" if o.accuracy is not None else ""
    return f"original: {fmt.count(o.macs)} MACs, {fmt.count(o.params)} params, {fmt.ms(o.latency_ms)} ms{acc}"


def _table_columns(record: SweepRecord, short: bool, latency: bool, stacked: bool = False) -> list[Column]:
    cells = rows(record, stacked)
    cols = []
    for c in _terminal_columns(record):
        if c == "latency ms" and not latency:
            continue
        header = _SHORT.get(c, c) if short else c
        if header in ("speedup", "vs INT8") and not stacked:  # the short header, the interval still beside it
            header = c
        left = c in ("Pareto", "fine-tuned")
        cols.append(Column(header, [r[c] for r in cells], justify="left" if left else "right"))
    return cols


def table(record: SweepRecord, title: str | None = None, width: int = 120) -> RenderableType:
    """The terminal table for a console ``width`` wide (numbers never cut, no column lost; see
    the module docstring), the original's numbers and a legend under it."""
    cols = fit([lambda: _table_columns(record, short=False, latency=True),
                lambda: _table_columns(record, short=True, latency=True),
                lambda: _table_columns(record, short=True, latency=False),
                lambda: _table_columns(record, short=True, latency=False, stacked=True)], width)
    built = build(cols, width, title=title or f"convtool sweep {record.input}")
    return Group(built, Text(_baseline(record)), legend(record, [c.header for c in cols]))


def legend(record: SweepRecord, headers: list[str] | None = None) -> Text:
    """What the terminal table's columns mean, in one dim line."""
    headers = headers or _terminal_columns(record)
    n = record.original.convs
    parts = [f"{'layers' if 'layers' in headers else 'converted'}: Conv layers converted, of {n}",
             "MACs: change from the original",
             f"{'drift' if 'drift' in headers else 'drift (eval)'}: on the {record.eval_samples} evaluation samples, "
             "which the search never saw"]
    if "ms" in headers:
        parts.append("ms: median latency")
    if record.int8 is not None:
        parts.append(f"{INT8_ROW}: the original quantized to INT8 by onnxruntime ({record.int8.samples} calibration "
                     "samples); vs INT8: speedup over it")
    parts.append(f"{PARETO}: on the Pareto front")
    if "tuned" in headers or "fine-tuned" in headers:
        parts.append("fine-tuned: --finetune's weights kept (yes) or discarded (no)")
    return Text("; ".join(parts), style="dim")


def _speed(p: SweepPoint) -> str:
    """``speedup 1.98x`` - the table's number, the same way everywhere (never "x slower")."""
    return f"speedup {fmt.times(p.speedup)}"


def _ci(p: SweepPoint) -> str:
    return f" (95% CI {p.ci_low:.2f}-{p.ci_high:.2f})" if p.ci_low is not None and p.ci_high is not None else ""


def unresolved_lines(record: SweepRecord) -> list[str]:
    """One line per converted point whose speedup interval still includes 1."""
    return [f"budget {p.budget:g}: speed not resolved at {p.runs} runs: {fmt.times(p.speedup)}{_ci(p)} "
            f"includes 1.00x" for p in record.points if p.converted and p.resolved is False]


def summary_lines(record: SweepRecord) -> list[str]:
    """What to read off the table: points whose speed is not resolved, then the Pareto points,
    fastest first, then (with the INT8 original) which budgets are faster than it."""
    front = sorted((p for p in record.points if p.pareto), key=lambda p: -(p.speedup or 0))
    int8 = int8_lines(record)
    if not front:
        return [*unresolved_lines(record),
                "no budget gave a model faster than the original without losing quality: keep the original", *int8]
    axis = record.x_axis
    return [*unresolved_lines(record), "Pareto front: " + "; ".join(
        f"budget {p.budget:g}: {_speed(p)}{_ci(p)}, {_QUALITY[axis]} {_quality_text(_quality(p, axis), axis)}"
        for p in front), *int8]


def int8_lines(record: SweepRecord) -> list[str]:
    """``INT8 original: speedup 1.76x (95% CI 1.31-6.69), accuracy 100.0%; faster than it (95% CI
    above 1.00x): budget 0.3: 1.24x (1.06-1.90), accuracy 99.4%`` - or that no budget is."""
    q = record.int8
    if q is None:
        return []
    axis = record.x_axis
    ci = f" (95% CI {q.ci_low:.2f}-{q.ci_high:.2f})" if q.ci_low is not None and q.ci_high is not None else ""
    head = (f"INT8 original: speedup {fmt.times(q.speedup)}{ci}, {_QUALITY[axis]} "
            f"{_quality_text(getattr(q, axis), axis)}")
    faster = [p for p in record.points if p.converted and p.vs_int8 is not None and p.vs_int8.ci_low > 1.0]
    if not faster:
        return [head + "; no budget is faster than it (95% CI above 1.00x)"]
    return [head + "; faster than it (95% CI above 1.00x): " + "; ".join(
        f"budget {p.budget:g}: {_vs_int8(p.vs_int8)}, {_QUALITY[axis]} {_quality_text(_quality(p, axis), axis)}"
        for p in faster)]


def markdown(record: SweepRecord, picture: str | None = "sweep.svg") -> str:
    """``sweep.md``: setting, table, Mermaid charts and (if given) a link to the picture."""
    cols = _columns(record)
    lines = [f"# convtool sweep: {record.input}", "", _setting(record) + ".", "", _baseline(record) + ".", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" if c in ("budget", "Pareto") else "---:" for c in cols) + "|")
    for r in rows(record):
        lines.append("| " + " | ".join(r[c] for c in cols) + " |")
    others = "nor the original, nor the INT8 original," if record.int8 is not None else "nor the original,"
    lines += ["", f"{PARETO}: on the Pareto front (no other budget, {others} is both at least as fast "
                  f"and at least as good in {_QUALITY[record.x_axis]}).", ""]
    lines += [*summary_lines(record), ""]
    if picture:
        lines += [f"![speedup against {_QUALITY[record.x_axis]}, one point per budget]({picture})", ""]
    lines += mermaid(record)
    if record.warnings:
        lines += ["", "Warnings:", ""] + [f"- {fmt.plurals(w)}" for w in record.warnings]
    return "\n".join(lines) + "\n"


def mermaid(record: SweepRecord) -> list[str]:
    """Two ``xychart-beta`` blocks: speedup per budget (bars), quality per budget (line)."""
    budgets = ", ".join(f'"{p.budget:g}"' for p in record.points)
    speedups = [p.speedup if p.speedup is not None else 0.0 for p in record.points]
    top = max([1.0, *speedups]) * 1.15
    axis = record.x_axis
    quality = [_quality(p, axis) for p in record.points]
    if axis == "drift":
        q_values, q_label, q_top = [v or 0.0 for v in quality], "drift on the evaluation data", max([*(v or 0.0 for v in quality), 1e-3]) * 1.15
        q_bottom = 0.0
    else:
        q_values = [100.0 * (v or 0.0) for v in quality]
        q_label = f"{_QUALITY[axis]} (%)"
        q_bottom, q_top = max(0.0, math.floor(min(q_values + [100.0]) - 5)), 100.0
    return [
        "```mermaid", "xychart-beta", '    title "Speedup per drift budget (1.00x = the original)"',
        f'    x-axis "max drift" [{budgets}]', f'    y-axis "speedup (x)" 0 --> {top:.2f}',
        f"    bar [{', '.join(f'{v:.3f}' for v in speedups)}]", "```", "",
        "```mermaid", "xychart-beta", f'    title "{_QUALITY[axis].capitalize()} per drift budget, on held-out data"',
        f'    x-axis "max drift" [{budgets}]', f'    y-axis "{q_label}" {q_bottom:.4g} --> {q_top:.4g}',
        f"    line [{', '.join(f'{v:.4g}' for v in q_values)}]", "```",
    ]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


class _Frame:
    """The plot area of :func:`svg`: its ticks, margins and the data-to-pixel mapping."""

    left, right, top, bottom = 70, 30, 50, 60
    inset = 0.04  # points never sit on the frame

    def __init__(self, width: int, height: int, xt: list[float], yt: list[float], drift_axis: bool) -> None:
        self.width, self.height, self.xt, self.yt, self.drift_axis = width, height, xt, yt, drift_axis
        self.pw, self.ph = width - self.left - self.right, height - self.top - self.bottom

    def x_of(self, q: float) -> float:
        xt = self.xt
        f = (q - xt[0]) / ((xt[-1] - xt[0]) or 1.0)
        return self.left + (self.inset + (1.0 - 2 * self.inset) * (1.0 - f if self.drift_axis else f)) * self.pw

    def y_of(self, s: float) -> float:
        yt = self.yt
        return self.top + (1.0 - (s - yt[0]) / ((yt[-1] - yt[0]) or 1.0)) * self.ph

    def xlabel(self, q: float) -> str:
        return f"{q:g}" if self.drift_axis else f"{q * 100:.4g}%"


def _svg_x_ticks(xs: list[float], drift_axis: bool) -> list[float]:
    """The x ticks: from 0 for drift; for a fraction the span of the data, never past 100 %."""
    if drift_axis:
        return nice_ticks(0.0, max(xs)) if xs and max(xs) > 0 else [0.0, 0.01]
    lo, hi = (min(xs), max(xs)) if xs else (0.9, 1.0)
    span = max(hi - lo, 0.002)  # at least 0.2 points, so that equal values get a readable axis
    lo, hi = max(0.0, lo - 0.1 * span), min(1.0, hi + 0.1 * span)
    xt = [t for t in nice_ticks(lo, hi) if t <= 1.0 + 1e-12]
    if xt[-1] < hi:  # ticks past 100 % were dropped: the data still ends inside the frame
        xt.append(1.0)
    return xt


def _svg_header(record: SweepRecord, axis: str, frame: _Frame) -> list[str]:
    """The opening tag, background, title and subtitle."""
    width, height = frame.width, frame.height
    threads = record.environment.get("threads")
    subtitle = (f"{_plural(threads, 'thread') if isinstance(threads, int) else f'{threads} threads'}, "
                f"objective {record.objective}, {_finetune_words(record)}; filled: Pareto front")
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{width / 2:.1f}" y="22" text-anchor="middle" font-size="15">'
            f'{escape(f"convtool sweep: speedup against {_QUALITY[axis]}, one point per drift budget")}</text>',
            f'<text x="{width / 2:.1f}" y="38" text-anchor="middle" fill="#555">{escape(subtitle)}</text>']


def _svg_axes(axis: str, frame: _Frame) -> list[str]:
    """Grid, ticks, frame, the 1.00x line and the axis titles."""
    left, top, pw, ph = frame.left, frame.top, frame.pw, frame.ph
    xt, yt = frame.xt, frame.yt
    name = _QUALITY[axis] + (" on the evaluation data (lower is better, right)" if frame.drift_axis else
                             " on the evaluation data")
    out = []
    for v in yt:  # grid and y ticks
        y = frame.y_of(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{v:g}x</text>')
    for v in xt:
        x = frame.x_of(v)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{escape(frame.xlabel(v))}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    if yt[0] <= 1.0 <= yt[-1]:
        y1 = frame.y_of(1.0)
        out.append(f'<line x1="{left}" y1="{y1:.1f}" x2="{left + pw}" y2="{y1:.1f}" stroke="#999" '
                   f'stroke-dasharray="5,4"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{frame.height - 16}" text-anchor="middle">{escape(name)}</text>')
    out.append(f'<text x="18" y="{top + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2:.1f})">speedup over the original (x)</text>')
    return out


def _svg_points(pts: list[tuple[SweepPoint, float, float]], axis: str, frame: _Frame) -> list[str]:
    """The Pareto line, one circle per budget and the budget labels."""
    out = []
    front = sorted(((frame.x_of(q), frame.y_of(s)) for p, q, s in pts if p.pareto), key=lambda xy: xy[0])
    if len(front) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    labels: dict[tuple[int, int], list[str]] = {}  # budgets landing on one spot share one label
    for p, q, s in pts:
        x, y = frame.x_of(q), frame.y_of(s)
        fill = "#1f77b4" if p.pareto else "white"
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{fill}" stroke="#1f77b4" stroke-width="2">'
                   f'<title>{escape(_tooltip(p, axis))}</title></circle>')
        labels.setdefault((round(x), round(y)), []).append(f"{p.budget:g}")
    for (x, y), budgets in labels.items():  # right half: labels to the left of the point
        anchor, dx = ("end", -9) if x > frame.left + frame.pw / 2 else ("start", 9)
        out.append(f'<text x="{x + dx}" y="{y - 8}" text-anchor="{anchor}">{escape(", ".join(budgets))}</text>')
    return out


def _svg_int8(int8_at: tuple, axis: str, frame: _Frame) -> list[str]:
    """The INT8 original: a labelled diamond (nothing when it has no position)."""
    if int8_at[0] is None or int8_at[1] is None:
        return []
    x, y = frame.x_of(int8_at[0]), frame.y_of(int8_at[1])
    tip = (f"the INT8-quantized original: {fmt.times(int8_at[1])}, {_QUALITY[axis]} "
           f"{_quality_text(int8_at[0], axis)}")
    anchor, dx = ("end", -10) if x > frame.left + frame.pw / 2 else ("start", 10)
    return [f'<polygon points="{x:.1f},{y - 7:.1f} {x + 7:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 7:.1f},{y:.1f}" '
            f'fill="#d62728"><title>{escape(tip)}</title></polygon>',
            f'<text x="{x + dx:.1f}" y="{y + 16:.1f}" text-anchor="{anchor}" fill="#d62728">INT8 original</text>']


def _svg_original(orig_q: float | None, frame: _Frame) -> list[str]:
    """The original: a grey square at (its quality, 1.00x) (nothing without a quality)."""
    if orig_q is None:
        return []
    x, y = frame.x_of(orig_q), frame.y_of(1.0)
    return [f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#666">'
            f'<title>the original: speedup 1.00x</title></rect>',
            f'<text x="{x:.1f}" y="{y + 20:.1f}" text-anchor="middle" fill="#444">original</text>']


def svg(record: SweepRecord, width: int = 720, height: int = 440) -> str:
    """The picture: speedup against the quality measure, Pareto front marked (module docstring)."""
    axis = record.x_axis
    drift_axis = axis == "drift"
    pts = [(p, _quality(p, axis), p.speedup) for p in record.points if p.speedup is not None and _quality(p, axis) is not None]
    orig_q = 0.0 if drift_axis else (record.original.accuracy if axis == "accuracy" else 1.0)
    xs = [q for _, q, _ in pts] + ([orig_q] if orig_q is not None else [])
    ys = [s for _, _, s in pts] + [1.0]
    q8 = record.int8
    int8_at = (getattr(q8, axis), q8.speedup) if q8 is not None else (None, None)
    if int8_at[0] is not None and int8_at[1] is not None:  # the INT8 original: inside the frame too
        xs.append(int8_at[0])
        ys.append(int8_at[1])
    frame = _Frame(width, height, _svg_x_ticks(xs, drift_axis), nice_ticks(min(0.9, min(ys)), max(ys)), drift_axis)
    out = _svg_header(record, axis, frame) + _svg_axes(axis, frame) + _svg_points(pts, axis, frame)
    out += _svg_int8(int8_at, axis, frame)  # a diamond, labelled, above the points
    out += _svg_original(orig_q, frame)  # last, so that it stays visible above budgets that converted nothing
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _finetune_words(record: SweepRecord) -> str:
    """``no --finetune`` / ``--finetune kept at budgets 0.05, 0.1`` (the subtitle's words)."""
    if not _finetune_ran(record):
        return "no --finetune"
    kept = [f"{p.budget:g}" for p in record.points if p.finetuned]
    return (f"--finetune kept at budget{'s' if len(kept) != 1 else ''} {', '.join(kept)}" if kept
            else "--finetune ran, kept nowhere")


def _tooltip(p: SweepPoint, axis: str) -> str:
    tuned = {None: "", True: ", fine-tuned", False: ", fine-tune discarded"}[p.finetuned]
    return (f"budget {p.budget:g}: {_speed(p)}, {_QUALITY[axis]} {_quality_text(_quality(p, axis), axis)}, "
            f"{_plural(p.converted, 'layer')} converted{tuned}")
