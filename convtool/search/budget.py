"""The drift-budget search (``--max-drift D``): per-layer ranks that remove the most MACs while
the whole model's drift on data no fit saw stays within ``D``.

Data
----
With calibration data the samples are split once (seeded, ``holdout`` of them, at least one):
the refits of every trial use only the *fit* part (the refit itself holds out part of it again
to choose its regulariser), and every drift - each trial's and the final one - is measured on
the *held-out* part, so ``D`` is a promise about unseen data.  The summary records the drift
on the fitted samples beside it.  Without calibration data, seeded random inputs are used (no
refit, nothing to hold out), and the record says so: drift on random inputs says little about
accuracy.

The metric (:mod:`convtool.analysis.drift`): ``rel_l2`` budgets the worst output's relative L2,
normalised per channel for outputs with a channel axis; ``top1`` budgets ``1 - top-1
agreement`` on outputs shaped like class scores.

The search
----------
Candidates are the layers that qualify for conversion at each rank of ``search_ranks`` that
reduces MACs, plus "leave unconverted".  Each trial is one call of the pure conversion step
(:func:`convtool.convert.convert`) with a plan of per-layer overrides, then - with data - the
sequential refit (:mod:`convtool.search.calibrate`) and one run over the held-out samples.

1. Sensitivity: each (layer, rank) is converted alone and its drift measured.
2. Greedy: layers are ordered by MACs saved per unit of drift (their best rank alone; the
   per-channel drift orders even when the budget is on top-1, which is too coarse to rank by).
   Each layer in turn tries its ranks from the cheapest; a rank is kept when the whole model
   with every layer accepted so far plus this one stays within the budget (re-checked, with the
   refit redone, since errors compound); otherwise the next rank, else the layer stays
   unconverted.

Cost: with ``L`` candidate layers and ``R`` ranks, at most ``2 L R`` trials plus ``R`` plans
and the final conversion; trials sharing a prefix of converted layers reuse its refits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import onnx

from convtool.analysis.drift import Drift, compare_outputs
from convtool.convert import Conversion, convert
from convtool.core.plan import Override
from convtool.errors import OptionError
from convtool.options import ConvertOptions, RankPolicy
from convtool.records import SearchSummary, Sensitivity
from convtool.runtime.inputs import Dataset, random_dataset
from convtool.runtime.run import run_outputs
from convtool.search.calibrate import RefitCache, refit_layers

log = logging.getLogger(__name__)

RANDOM_SAMPLES = 16
RANDOM_WARNING = ("--max-drift without --calibration: drift measured on {n} seeded random inputs, "
                  "which say little about real data; pass --calibration data.npz")
#: Held-out samples below this make the budget's promise weak; the record warns.
FEW_HELD_OUT = 16

#: ``progress(stage, done, total)``
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SearchResult:
    """The search's per-layer plan, why layers were left, its summary and warnings."""

    overrides: dict[str, Override]
    summary: SearchSummary
    warnings: tuple[str, ...]
    fit_data: Dataset | None  # what the final refit must use, so the held-out drift stays true
    cache: RefitCache


def _drift(reference: dict, candidate: dict, metric: str) -> tuple[float, Drift]:
    d = compare_outputs(reference, candidate)
    try:
        return d.value(metric), d
    except ValueError:
        raise OptionError("--metric top1 needs an output shaped like class scores [N, C]; use --metric rel_l2") from None


def search(model: onnx.ModelProto, options: ConvertOptions, data: Dataset | None, *, source: str = "<memory>",
           progress: Progress | None = None) -> SearchResult:
    """Choose per-layer ranks under ``options.max_drift`` (see the module docstring)."""
    if options.max_drift is None:
        raise ValueError("search needs options.max_drift")
    start = time.perf_counter()
    budget, metric = float(options.max_drift), options.metric
    cal = options.calibration_or_default
    warnings: list[str] = []
    base = replace(options, check=False, latency_aware=None)
    refit = data is not None
    if data is not None:
        fit, held = data.split(cal.holdout, cal.seed + 1)
        if held is None:  # a single sample: nothing can be held out
            held = fit
            warnings.append("--max-drift: one calibration sample, so drift is measured on the data the refit used")
        elif held.count < FEW_HELD_OUT:
            warnings.append(f"--max-drift: drift measured on only {held.count} held-out samples; "
                            "pass more calibration data for a firmer promise")
    else:
        fit = held = random_dataset(model, options.input_shape_map, count=RANDOM_SAMPLES, seed=cal.seed)
        warnings.append(RANDOM_WARNING.format(n=held.count))
    batch = cal.batch_size
    reference = run_outputs(model, held, batch)
    reference_fit = run_outputs(model, fit, batch) if fit is not held else reference
    cache = RefitCache()
    evaluations = 0

    def trial(overrides: dict[str, Override]) -> Conversion:
        conv = convert(model, base, overrides, source=source, count_macs=False)
        if refit and conv.record.totals.converted:
            conv.model, _ = refit_layers(model, conv.model, conv.record.layers, fit, cal, cache)
        return conv

    def evaluate(overrides: dict[str, Override]) -> tuple[float, Drift]:
        nonlocal evaluations
        evaluations += 1
        return _drift(reference, run_outputs(trial(overrides).model, held, batch), metric)

    # candidates: which layers convert at which (effective) rank, and the MACs each saves
    ranks = sorted({int(r) for r in options.search_ranks})
    saved: dict[str, dict[int, int]] = {}
    for r in ranks:
        planned = convert(model, replace(base, rank=RankPolicy.fixed(r)), source=source)
        for layer in planned.record.layers:
            if layer.converted and layer.rank is not None:
                gain = (layer.macs_before or 0) - (layer.macs_after or 0)
                saved.setdefault(layer.name, {}).setdefault(int(layer.rank), gain)
    names = list(saved)
    off = {name: Override(rank=0) for name in names}

    def plan_of(chosen: dict[str, int]) -> dict[str, Override]:
        return {**off, **{n: Override(rank=r) for n, r in chosen.items() if r}}

    # 1. sensitivity of each (layer, rank) alone
    total = sum(len(saved[n]) for n in names)
    alone: dict[tuple[str, int], tuple[float, Drift]] = {}
    for name in names:
        for r in saved[name]:
            if progress is not None:
                progress("sensitivity", len(alone), total)
            alone[(name, r)] = evaluate(plan_of({name: r}))
    if progress is not None:
        progress("sensitivity", total, total)
    order = sorted(names, key=lambda n: -max(saved[n][r] / max(alone[(n, r)][1].drift, 1e-9) for r in saved[n]))

    # 2. greedy, re-checking the whole model
    chosen: dict[str, int] = {}
    notes: dict[str, str] = {}
    for i, name in enumerate(order):
        if progress is not None:
            progress("greedy", i, len(order))
        fits = [r for r in sorted(saved[name]) if alone[(name, r)][0] <= budget]
        if not fits:
            best = min(alone[(name, r)][0] for r in saved[name])
            notes[name] = f"alone it drifts {best:.4g} > budget {budget:g}"
            continue
        for r in fits:
            value, _ = evaluate(plan_of({**chosen, name: r}))
            if value <= budget:
                chosen[name] = r
                break
        else:
            notes[name] = f"with the layers already chosen every rank exceeds budget {budget:g}"
    if progress is not None:
        progress("greedy", len(order), len(order))

    overrides = plan_of(chosen)
    for name, note in notes.items():
        overrides[name] = Override(rank=0, reason=f"left unconverted by --max-drift: {note}")
    final_model = trial(overrides).model if chosen else model
    value, final = _drift(reference, run_outputs(final_model, held, batch), metric)
    fitted = None
    if fit is not held:
        fitted, _ = _drift(reference_fit, run_outputs(final_model, fit, batch), metric)
    if not chosen:
        warnings.append(f"no layer fits the drift budget {budget:g}; the model is unchanged. "
                        "Try a larger --max-drift, more --search-ranks (e.g. 1,2,4,8) or more --calibration data")
    summary = SearchSummary(
        metric=metric, max_drift=budget, drift=value, rel_l2=final.drift, plain_rel_l2=final.rel_l2,
        top1_agreement=final.top1_agreement, data=held.source if refit else held.describe(),
        samples=data.count if data is not None else held.count, refit=refit, evaluations=evaluations,
        seconds=round(time.perf_counter() - start, 3), ranks={n: chosen.get(n, 0) for n in names},
        sensitivity=tuple(Sensitivity(n, r, v, d.drift, d.top1_agreement, saved[n][r]) for (n, r), (v, d) in alone.items()),
        held_out_drift=value, held_out_samples=held.count if refit else 0, fitted_drift=fitted,
    )
    log.info("max-drift search: %d evaluations, drift %.4g (budget %g)", evaluations, value, budget)
    return SearchResult(overrides, summary, tuple(warnings), fit if refit else None, cache)
