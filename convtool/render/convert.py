"""Conversion records -> rich tables and lines (pure functions, no terminal needed).

* :func:`layer_table`: one row per Conv, what it became or why it was skipped, fitted to the
  console width (:mod:`convtool.render.table`: numbers never split, names shortened from the
  middle, the result moves under the name and before/after pairs stack on narrow consoles);
* :func:`totals_line`: the whole model before and after;
* :func:`summary_lines`: what the calibration refit and the ``--max-drift`` search did, in
  words, with the true time each took (a refit that reused the search's solutions says so
  instead of claiming it took 0.0 s);
* :func:`legend`: the abbreviations the table used.

Numbers use :mod:`convtool.render.fmt`, the vocabulary ``report`` uses too.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from convtool.records import ConversionRecord, LayerChange
from convtool.render import fmt
from convtool.render.table import Column, build, fit

__all__ = ["layer_table", "totals_line", "summary_lines", "legend", "human"]

#: kept for callers of the old name (benchmarks): the one count format
human = fmt.count

_GOOD, _SKIP = "green", "yellow"


def _kernel(layer: LayerChange) -> str:
    return "x".join(str(k) for k in layer.kernel) or "?"


def _channels(layer: LayerChange) -> str:
    text = f"{layer.in_channels}{fmt.ARROW}{layer.out_channels}"
    return text + (f" /g{layer.group}" if layer.group > 1 else "")


def _pair(before: str, after: str, stacked: bool) -> str:
    if before == after == fmt.UNKNOWN:
        return fmt.UNKNOWN
    return f"{before}\n{fmt.ARROW}{after}" if stacked else fmt.arrow(before, after)


def _result(layer: LayerChange) -> Text:
    if not layer.converted:
        return Text(f"skip: {layer.reason}", style=_SKIP)
    text = layer.layout or "converted"
    if layer.folded_batchnorm:
        text += " +BN"
    if layer.note:
        text += f"; {layer.note}"
    return Text(text, style=_GOOD)


def _refit(layer: LayerChange, stacked: bool) -> str:
    if layer.output_error_after is None:
        return ""
    return _pair(fmt.num(layer.output_error_before) if layer.output_error_before is not None else fmt.UNKNOWN,
                 fmt.num(layer.output_error_after), stacked)


def _columns(record: ConversionRecord, result_below: bool, stacked: bool) -> list[Column]:
    layers = record.layers
    show_cal = any(layer.output_error_after is not None for layer in layers)
    names = Column("layer / result" if result_below else "layer", [layer.name for layer in layers],
                   justify="left", names=True)
    cols = [
        names,
        Column("k", [_kernel(layer) for layer in layers]),
        Column("channels", [_channels(layer) for layer in layers]),
        Column("rank", [str(layer.rank) if layer.converted and layer.rank is not None else "-" for layer in layers]),
        Column("params", [_pair(fmt.count(layer.params_before), fmt.count(layer.params_after), stacked)
                          if layer.converted else fmt.count(layer.params_before) for layer in layers]),
        Column("MACs", [_pair(fmt.count(layer.macs_before), fmt.count(layer.macs_after), stacked)
                        if layer.converted else fmt.count(layer.macs_before) for layer in layers]),
        Column("MACs x", [fmt.ratio(layer.macs_before, layer.macs_after) if layer.converted else ""
                          for layer in layers]),
        Column("w.err", [fmt.num(layer.weight_error) if layer.converted and layer.weight_error is not None else ""
                         for layer in layers]),
    ]
    if show_cal:
        cols.append(Column("out err" if stacked else "out err (refit)", [_refit(layer, stacked) for layer in layers]))
    cols = [c for c in cols if c.names or any(str(cell) for cell in c.cells)]  # nothing converted: no ratio, no w.err
    results = [_result(layer) for layer in layers]
    if result_below:
        names.below = list(results)
    else:
        cols.append(Column("result", list(results), justify="left", wrap=True))
    return cols


def layer_table(record: ConversionRecord, title: str | None = None, width: int = 120) -> Table:
    """One row per Conv: what it became, or why it was skipped, for a console ``width`` wide."""
    cols = fit([lambda: _columns(record, result_below=False, stacked=False),
                lambda: _columns(record, result_below=True, stacked=False),
                lambda: _columns(record, result_below=True, stacked=True)], width)
    return build(cols, width, title=title)


def legend(record: ConversionRecord) -> Text | None:
    """The abbreviations :func:`layer_table` used, in one dim line."""
    if not record.layers:
        return None
    parts = []
    if any(layer.converted for layer in record.layers):
        parts += ["params, MACs: before→after", "MACs x: MACs after / before",
                  "w.err: relative weight error of the factorisation"]
    if any(layer.output_error_after is not None for layer in record.layers):
        parts.append("out err: the layer's relative output error, data-free→refitted (held-out samples)")
    if any(layer.folded_batchnorm for layer in record.layers if layer.converted):
        parts.append("+BN: the following BatchNormalization folded in")
    if not parts:
        return None
    return Text("; ".join(parts), style="dim")


def totals_line(record: ConversionRecord) -> Text:
    """``5 of 6 Conv nodes converted (rank 1): params 1.15M→138k (-88.0%), MACs ...``"""
    t = record.totals
    text = Text()
    text.append(f"{t.converted} of {t.conv_nodes} Conv nodes converted", style="bold")
    text.append(f" ({record.rank_policy}): " if record.rank_policy else ": ")
    text.append(f"params {fmt.counts(t.params_before, t.params_after)} "
                f"({fmt.signed_pct(fmt.change(t.params_before, t.params_after))}), ")
    if t.macs_before is None or t.macs_after is None:
        reason = getattr(t, "macs_unknown_reason", None)
        text.append(f"MACs {fmt.UNKNOWN}" + (f" ({reason})" if reason else ""))
    else:
        text.append(f"MACs {fmt.counts(t.macs_before, t.macs_after)} "
                    f"({fmt.signed_pct(fmt.change(t.macs_before, t.macs_after))})")
    return text


def summary_lines(record: ConversionRecord) -> list[str]:
    """What the refit and the ``--max-drift`` search did, and how long each really took."""
    lines = []
    search = record.search
    if search is not None:
        lines.append(_search_line(search))
    cal = record.calibration
    if cal is not None:
        total = cal.layers_refitted + cal.layers_kept_data_free
        kept = f", {cal.layers_kept_data_free} kept data-free (a refit must lower the held-out error)" \
            if cal.layers_kept_data_free else ""
        if total and cal.layers_reused >= total:
            how = "all reused from the search (same layers, ranks and samples: nothing solved again)"
        elif cal.layers_reused:
            how = f"{cal.layers_reused} reused from the search, the others solved in {fmt.duration(cal.seconds)}"
        else:
            how = f"in {fmt.duration(cal.seconds)}"
        lines.append(f"calibration: {_samples_phrase(record, cal)}; "
                     f"{cal.layers_refitted} of {fmt.plural(total, 'layer')} refitted{kept}, {how}")
    if record.finetune is not None:
        lines.append(_finetune_line(record.finetune))
    if record.quantization is not None:
        lines.append(_quantization_line(record.quantization))
    return lines


def _quantization_line(q) -> str:
    """``--quantize int8`` in one line: what was written, equalization, drift, size, time."""
    eq = f"{len(q.equalized)} depthwise/pointwise pairs equalized, " if q.equalized else ""
    drift = (f"drift {fmt.num(q.drift)} against the original on {q.drift_samples} held-out samples, "
             if q.drift is not None else "")
    return (f"INT8: written quantized ({q.options}); {eq}calibrated on {q.samples} samples; {drift}"
            f"{fmt.count(q.size_before)}B -> {fmt.count(q.size_after)}B, in {fmt.duration(q.seconds)}")


def _samples_phrase(record: ConversionRecord, cal) -> str:
    """Which samples the refit used, counted the way the search line counts them: ``the search's
    240 fit samples of calib.npz (of 300; 48 of the 240 choose each layer's fit)``, or without a
    search ``300 samples of calib.npz (240 fitted, 60 held out to choose each layer's fit)``."""
    search = record.search
    held = f"{cal.held_out_samples} held out to choose each layer's fit" if cal.held_out_samples else "none held out"
    if search is not None and search.samples and search.samples != cal.samples:
        return (f"the {cal.samples} of the {search.samples} samples of {cal.source} the search fits on "
                f"({cal.fit_samples} fitted, {held})")
    return f"{cal.samples} samples of {cal.source} ({cal.fit_samples} fitted, {held})"


def _finetune_line(ft) -> str:
    """``--finetune`` in one line: the decision, held-out drift before→after, steps, time."""
    if ft.stopped_by == "not run":
        return f"fine-tune: {ft.decision}"
    before, after = ft.held_out_drift_before, ft.held_out_drift_after
    where = f"{ft.held_out_samples} held-out samples" if ft.held_out_samples else "the fitted samples"
    if before is None:
        before, after = ft.fit_drift_before, ft.fit_drift_after
    drift = f"drift {fmt.arrow(fmt.num(before), fmt.num(after))} on {where}" if before is not None else ""
    agree = ""
    if ft.top1_agreement_before is not None and ft.top1_agreement_after is not None:
        agree = f", top-1 agreement {fmt.arrow(fmt.pct(ft.top1_agreement_before), fmt.pct(ft.top1_agreement_after))}"
    verdict = "kept" if ft.kept else "discarded, calibrated weights kept"
    return (f"fine-tune: {verdict}; {drift}{agree}; {ft.steps} steps (stopped by {ft.stopped_by}) on "
            f"{ft.fit_samples} samples, {ft.parameters} parameters in {fmt.plural(ft.layers, 'layer')}, "
            f"in {fmt.duration(ft.seconds)}")


def _search_line(search) -> str:
    random = not search.refit and "random" in str(search.data)
    if search.metric == "top1":
        measured = f"1 - top-1 agreement {fmt.num(search.drift)}"
        also = f"; per-channel drift {fmt.num(search.rel_l2)}"
    else:
        measured = f"drift {fmt.num(search.drift)} (per-channel rel. L2)"
        also = ""
    also += f"; whole-tensor rel. L2 {fmt.num(search.plain_rel_l2)}"
    if search.fitted_drift is not None:
        also += f"; {fmt.num(search.fitted_drift)} on the samples the refits used"
    if search.top1_agreement is not None and not random:
        also += f"; top-1 agreement {fmt.pct(search.top1_agreement)}"
    if random:
        where = f"on {search.data}, which say little about accuracy (pass --calibration)"
    elif search.held_out_samples:
        where = f"on {search.held_out_samples} of the {search.samples} samples of {search.data} (held out from every fit)"
    else:
        where = f"on {search.samples} samples of {search.data}"
    bound = ""
    if getattr(search, "bound", None) is not None:
        bound = (f" (95% upper bound {fmt.num(search.bound)}: "
                 f"{'certifies' if search.certified else 'does NOT certify'} the budget)")
    elif search.held_out_samples:
        bound = " (too few held-out samples for a 95% bound)"
    phases = getattr(search, "phases", {}) or {}
    shown = [(k, v) for k, v in phases.items() if k in ("candidates", "capture", "fits", "sensitivity",
                                                        "sequential refit")]
    took = (" (" + ", ".join(f"{_PHASE.get(k, k)} {fmt.duration(v)}" for k, v in shown) + ")") if shown else ""
    return (f"max-drift search: {measured}{bound} {where}, budget {search.max_drift:g}{also}; "
            f"{fmt.plural(search.evaluations, 'whole-model evaluation')} in {fmt.duration(search.seconds)}{took}")


_PHASE = {"candidates": "timing layers", "capture": "capture", "fits": "local fits", "sensitivity": "suffix runs",
          "sequential refit": "sequential refit"}
