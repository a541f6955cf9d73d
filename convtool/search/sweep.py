"""The trade-off curve (``convtool sweep``): one search, many budgets, every result measured on
data the search never saw.

1. One :class:`~convtool.search.budget.BudgetSearch` over the calibration data: the
   candidates (timed under ``--objective latency``) and each one's drift alone, once.
2. Per budget (ascending), the search's greedy selection and its end-to-end check
   (:meth:`BudgetSearch.select`) - exactly what ``convtool convert --max-drift B`` would
   choose with the same options.  Trials are memoised by plan, so budgets that share the
   beginning of their greedy path share its trials, and refits are reused by prefix.
3. Each point's model is built like ``convert`` builds it (the pure conversion step with the
   plan, checked, then the sequential refit on the search's fit split - data-aware factors
   where the search measured them to keep the budget - and, with ``--finetune``, the
   distillation, kept only if the held-out drift drops).
4. Evaluation on the evaluation data (``--inputs``), which neither the refits nor the search
   saw: drift against the original (the per-channel relative L2 that ``--max-drift`` budgets,
   the plain relative L2, top-1 agreement on class-score outputs, top-1 accuracy with a
   ``labels`` array), MACs and parameters.
5. Latency: the original and every distinct point model in ONE interleaved loop (ABBA...,
   spinning off, the deployment's threads / opt level / providers); the speedup is
   median(original) / median(point) with the paired 95 % interval of
   :func:`convtool.core.decide.paired_interval`.
6. The Pareto front over (speedup, quality), quality being accuracy when labels are given,
   else top-1 agreement on class scores, else (lower is better) drift; the original (speedup
   1, perfect quality) takes part, so a point no faster than the original is never on the
   front.

Nothing here prints or writes files; :mod:`convtool.api` writes models, the CLI the tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from convtool.analysis.costs import model_params
from convtool.analysis.drift import accuracy, class_scores, compare_outputs, label_problem
from convtool.convert import convert
from convtool.core.decide import verdict
from convtool.errors import ConvToolError
from convtool.options import ConvertOptions, SweepOptions
from convtool.records import SweepBaseline, SweepPoint, SweepRecord
from convtool.runtime.inputs import Dataset, random_feeds
from convtool.runtime.observe import model_costs
from convtool.runtime.run import run_outputs
from convtool.search.budget import BudgetSearch, Selection

log = logging.getLogger(__name__)

__all__ = ["SweepResult", "pareto", "quality_axis", "sweep", "sweep_words"]

#: ``progress(stage, done, total)``
Progress = Callable[[str, int, int], None]


@dataclass
class SweepResult:
    record: SweepRecord
    models: list[onnx.ModelProto]  # one per point, in the record's order


def quality_axis(has_labels: bool, has_agreement: bool) -> str:
    """The quality measure of the picture and the Pareto front."""
    return "accuracy" if has_labels else "top1_agreement" if has_agreement else "drift"


def _quality(point: Mapping, axis: str) -> float:
    value = point[axis]
    if value is None:
        return -np.inf
    return -float(value) if axis == "drift" else float(value)


def pareto(points: Sequence[Mapping], axis: str, original: Mapping | None = None) -> list[bool]:
    """For each point (a mapping with ``speedup`` and the ``axis`` measure): is it on the front?

    A point is dominated when another - or the original, if given - is at least as fast and at
    least as good, and strictly better in one.  Points without a speedup are never on it.
    """
    others = list(points) + ([original] if original is not None else [])
    flags = []
    for p in points:
        if p.get("speedup") is None:
            flags.append(False)
            continue
        sp, q = float(p["speedup"]), _quality(p, axis)
        dominated = any(o is not p and o.get("speedup") is not None and float(o["speedup"]) >= sp
                        and _quality(o, axis) >= q and (float(o["speedup"]) > sp or _quality(o, axis) > q)
                        for o in others)
        flags.append(not dominated)
    return flags


def sweep_words(warning: str) -> str:
    """A search warning in the sweep's terms: the sweep has ``--budgets``, not ``--max-drift``."""
    text = warning.removeprefix("--max-drift: ")
    text = text.replace("--max-drift without", "sweep without").replace("a larger --max-drift", "larger --budgets")
    return text.replace("--max-drift", "--budgets")


def sweep(model: onnx.ModelProto, options: ConvertOptions, data: Dataset | None, eval_data: Dataset,
          sweep_options: SweepOptions, *, source: str = "<memory>", progress: Progress | None = None) -> SweepResult:
    """Search once, select per budget, measure every point (see the module docstring)."""
    from convtool.runtime.session import environment, make_session
    from convtool.runtime.timing import time_models

    start = time.perf_counter()

    def tick(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    search = BudgetSearch(model, replace(options, max_drift=None), data, source=source, progress=progress).analyse()
    warnings = [sweep_words(w) for w in search.warnings]
    budgets = sweep_options.sorted_budgets
    selections: list[Selection] = []
    refits: list[str] = []  # the refit each point's drift was measured with
    for i, budget in enumerate(budgets):
        tick("budgets", i, len(budgets))
        selection, refit = search.final(budget)  # exactly what convert --max-drift does
        selections.append(selection)
        refits.append(refit)
        warnings += [f"budget {budget:g}: {sweep_words(w)}" for w in selection.warnings]
    tick("budgets", len(budgets), len(budgets))

    # 3. the point models, built as convert builds them; identical plans share one model
    final = replace(options, latency_aware=None, max_drift=None)
    built: dict[tuple, tuple[onnx.ModelProto, int | None]] = {}
    finetuned: dict[tuple, bool] = {}  # --finetune: the point's fine-tuned weights were kept
    keys = [(search.plan_key(s.overrides), refit) if search.plan_key(s.overrides) else ()
            for s, refit in zip(selections, refits)]
    for i, (key, selection) in enumerate(zip(keys, selections)):
        tick("building models", i, len(selections))
        if key in built:
            continue
        conv = convert(model, final, selection.overrides, source=source, count_macs=True)
        # the point's model is the search's final model for this budget - exactly what
        # `convert --max-drift B` writes (same plan, same weights, the drift the search measured)
        out = selection.model if conv.record.totals.converted else conv.model
        if selection.finetune is not None:  # --finetune ran inside the search (BudgetSearch.deepen)
            finetuned[key] = selection.finetune.kept
            if not selection.finetune.kept:
                warnings.append(f"budget {selection.budget:g}: --finetune: {selection.finetune.decision}")
        built[key] = (out, conv.record.totals.macs_after)
    tick("building models", len(selections), len(selections))
    try:
        macs_before = model_costs(model, options.input_shape_map).macs
    except ConvToolError:
        macs_before = None

    # 4. evaluation data
    batch = search.batch
    reference = run_outputs(model, eval_data, batch)
    labels = eval_data.labels
    acc_original = accuracy(reference, labels, eval_data.source) if labels is not None else None
    if labels is not None:
        problem = label_problem(class_scores(reference)[1], labels, eval_data.source)  # type: ignore[index]
        warnings += [problem] if problem else []
    measured: dict[tuple, dict] = {}
    for i, key in enumerate(built):
        tick("evaluating", i, len(built))
        outputs = run_outputs(built[key][0], eval_data, batch)
        d = compare_outputs(reference, outputs)
        measured[key] = dict(drift=d.drift, rel_l2=d.rel_l2, top1_agreement=d.top1_agreement,
                             accuracy=accuracy(outputs, labels, eval_data.source) if labels is not None else None)
    tick("evaluating", len(built), len(built))

    # 5. latency: the original and every distinct model in one interleaved loop (a plan that
    # converts nothing is the original itself: it gets the original's numbers, not a second timing)
    lat = options.timing_options
    feeds = random_feeds(model, options.input_shape_map)
    order = [k for k in built if k]
    sessions = [make_session(model, lat.session)] + [make_session(built[k][0], lat.session) for k in order]
    stats = time_models(sessions, [feeds] * len(sessions), runs=sweep_options.runs, warmup=sweep_options.warmup,
                        progress=lambda d, t: tick("timing models", d, t))
    base = stats[0]
    if () in measured:
        measured[()].update(latency_ms=base.median, speedup=1.0, ci_low=1.0, ci_high=1.0)
    for k, st in zip(order, stats[1:]):
        v = verdict(base.samples, st.samples, margin=0.0)
        measured[k].update(latency_ms=st.median, speedup=v.speedup, ci_low=v.ci_low, ci_high=v.ci_high)

    # 6. points and the front
    points = []
    for key, selection in zip(keys, selections):
        m, (out, macs) = measured[key], built[key]
        points.append(dict(
            budget=selection.budget, search_drift=selection.value, macs=macs, params=model_params(out),
            converted=len(selection.chosen), ranks={n: c.rank for n, c in selection.chosen.items()},
            layouts={n: c.layout for n, c in selection.chosen.items()}, dropped=selection.dropped,
            finetuned=finetuned.get(key, False) if options.finetune is not None else None, **m))
    has_agreement = any(p["top1_agreement"] is not None for p in points)
    axis = quality_axis(labels is not None, has_agreement)
    original = dict(speedup=1.0, drift=0.0, top1_agreement=1.0 if has_agreement else None, accuracy=acc_original)
    for p, on in zip(points, pareto(points, axis, original)):
        p["pareto"] = on and p["converted"] > 0  # the unchanged model is the original, drawn apart
    env = environment(lat.session).to_dict()
    env.update(runs=sweep_options.runs, warmup=sweep_options.warmup)
    record = SweepRecord(
        input=source, calibration=data.source if data is not None else search.held.describe(),
        evaluation=eval_data.source, eval_samples=eval_data.count, objective=options.objective, metric=options.metric,
        x_axis=axis,
        original=SweepBaseline(macs_before, model_params(model), base.median, acc_original,
                               convs=len(search.names)),
        points=[SweepPoint(**p) for p in points], environment=env, sensitivity=search.sensitivities(),
        warnings=list(dict.fromkeys(warnings)), seconds=round(time.perf_counter() - start, 3),
        evaluations=search.evaluations)
    log.info("sweep: %d budgets, %d distinct models, %d trials", len(budgets), len(built), search.evaluations)
    return SweepResult(record, [built[k][0] for k in keys])

