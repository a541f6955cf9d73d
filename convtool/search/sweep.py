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
5. Latency: every distinct point model against the original, each pair timed exactly as
   ``convtool report`` times one (spinning off, the deployment's threads / opt level /
   providers): a two-model interleaved loop (ABBA...) in rounds of fresh sessions
   (:func:`convtool.runtime.timing.time_rounds`), from ``runs`` paired runs doubling until the
   interval excludes 1, ``run_cap`` runs or ``max_seconds``; the speedup is
   ``exp(median(ln(original_i / point_i)))`` with its interval from the same statistic
   (:func:`convtool.core.decide.speedup`).  Why not one loop over all models, as before: one
   session per model is a random draw (a point once showed 0.82x that ``report`` timed at
   1.12x), and a many-model loop cycles each model's data out of the caches, which biases
   small, fast models low (2.29x for a point ``report`` timed at 2.46x).  A point whose
   interval still includes 1 says ``resolved: false``.
6. The Pareto front over (speedup, quality), quality being accuracy when labels are given,
   else top-1 agreement on class scores, else (lower is better) drift; the original (speedup
   1, perfect quality) takes part, so a point no faster than the original is never on the
   front; so does the INT8 original when there is one (7.).
7. INT8 (``SweepOptions.int8_baseline``, and always under ``--quantize int8``; needs
   calibration data): the original quantized by onnxruntime on the search's fit samples
   (:func:`convtool.runtime.quantize.quantize_model`, the options of ``--quantize int8``; under
   ``--quantize int8`` the very model the search compared with) is a reference point, measured
   like a point (evaluation data; timed against the original) - and every point is also timed
   against it (``SweepPoint.vs_int8``: INT8 original / point, the same pair protocol).  Under
   ``--quantize int8`` each point is built by :meth:`BudgetSearch.final`, which equalizes and
   quantizes the chosen plan, measures it against the float original and keeps the INT8
   original when the plan is not faster than it: such a point *is* the INT8 original and gets
   its numbers.

Nothing here prints or writes files; :mod:`convtool.api` writes models, the CLI the tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import onnx

from convtool.analysis.costs import model_params
from convtool.analysis.drift import accuracy, class_scores, compare_outputs, label_problem
from convtool.convert import convert
from convtool.core.decide import resolved, verdict
from convtool.errors import ConvToolError, OptionError
from convtool.options import ConvertOptions, QuantizeOptions, SweepOptions
from convtool.records import PairSpeed, SweepBaseline, SweepInt8, SweepPoint, SweepRecord
from convtool.runtime.inputs import Dataset, random_feeds
from convtool.runtime.observe import model_costs
from convtool.runtime.run import run_outputs
from convtool.search.budget import BudgetSearch, Selection

log = logging.getLogger(__name__)

__all__ = ["SweepResult", "pareto", "quality_axis", "sweep", "sweep_words"]

#: ``progress(stage, done, total)``
Progress = Callable[[str, int, int], None]

#: The key of the INT8 original among the point models (a point whose plan ``--quantize int8`` dropped).
INT8_KEY = ("int8",)


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


def pareto(points: Sequence[Mapping], axis: str, original: Mapping | None = None,
           references: Sequence[Mapping] = ()) -> list[bool]:
    """For each point (a mapping with ``speedup`` and the ``axis`` measure): is it on the front?

    A point is dominated when another - or the original, if given, or one of ``references``
    (the INT8 original) - is at least as fast and at least as good, and strictly better in one.
    Points without a speedup are never on it.
    """
    others = list(points) + ([original] if original is not None else []) + list(references)
    flags = []
    for point in points:
        if point.get("speedup") is None:
            flags.append(False)
            continue
        sp, q = float(point["speedup"]), _quality(point, axis)
        dominated = any(o is not point and o.get("speedup") is not None and float(o["speedup"]) >= sp
                        and _quality(o, axis) >= q and (float(o["speedup"]) > sp or _quality(o, axis) > q)
                        for o in others)
        flags.append(not dominated)
    return flags


def sweep_words(warning: str) -> str:
    """A search warning in the sweep's terms: the sweep has ``--budgets``, not ``--max-drift``."""
    text = warning.removeprefix("--max-drift: ")
    text = text.replace("--max-drift without", "sweep without").replace("a larger --max-drift", "larger --budgets")
    return text.replace("--max-drift", "--budgets")


def _int8_original(search: BudgetSearch, quantize: QuantizeOptions | None):
    """The INT8-quantized original on the search's fit samples: the one the search compares its
    plans with under ``--quantize int8`` (one quantization, the same model)."""
    return search.int8_original()


def _ticker(progress: Progress | None) -> Progress:
    def tick(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)
    return tick


def _select(search: BudgetSearch, budgets: Sequence[float], warnings: list[str],
            tick: Progress) -> tuple[list[Selection], list[str]]:
    """2. Per budget, the search's final selection and the refit its drift was measured with."""
    selections: list[Selection] = []
    refits: list[str] = []  # the refit each point's drift was measured with
    for i, budget in enumerate(budgets):
        tick("budgets", i, len(budgets))
        selection, refit = search.final(budget)  # exactly what convert --max-drift does
        selections.append(selection)
        refits.append(refit)
        warnings += [f"budget {budget:g}: {sweep_words(w)}" for w in selection.warnings]
    tick("budgets", len(budgets), len(budgets))
    return selections, refits


def _point_keys(search: BudgetSearch, selections: Sequence[Selection], refits: Sequence[str]) -> list[tuple]:
    """Each point's model key: identical plans (and refits) share one model."""
    return [INT8_KEY if s.quantization is not None and not s.chosen else  # --quantize int8 kept the INT8 original
            (search.plan_key(s.overrides), refit) if search.plan_key(s.overrides) else ()
            for s, refit in zip(selections, refits)]


def _build(model: onnx.ModelProto, options: ConvertOptions, selections: Sequence[Selection], keys: Sequence[tuple],
           int8, warnings: list[str], source: str,
           tick: Progress) -> tuple[dict[tuple, tuple[onnx.ModelProto, int | None]], dict[tuple, bool]]:
    """3. The point models, built as convert builds them; identical plans share one model."""
    final = replace(options, latency_aware=None, max_drift=None)
    built: dict[tuple, tuple[onnx.ModelProto, int | None]] = {}
    finetuned: dict[tuple, bool] = {}  # --finetune: the point's fine-tuned weights were kept
    for i, (key, selection) in enumerate(zip(keys, selections)):
        tick("building models", i, len(selections))
        if key in built:
            continue
        if key == INT8_KEY:
            assert int8 is not None
            built[key] = (int8.model, None)
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
    return built, finetuned


def _measure(candidate: onnx.ModelProto, reference, eval_data: Dataset, batch) -> dict:
    """4. One model's quality on the evaluation data, against the original's outputs."""
    labels = eval_data.labels
    outputs = run_outputs(candidate, eval_data, batch)
    d = compare_outputs(reference, outputs)
    return dict(drift=d.drift, rel_l2=d.rel_l2, top1_agreement=d.top1_agreement,
                accuracy=accuracy(outputs, labels, eval_data.source) if labels is not None else None)


def _evaluate(model: onnx.ModelProto, eval_data: Dataset, batch, built: Mapping[tuple, tuple],
              warnings: list[str], tick: Progress):
    """4. The original's outputs (and accuracy) and every distinct point model's measures."""
    reference = run_outputs(model, eval_data, batch)
    labels = eval_data.labels
    acc_original = accuracy(reference, labels, eval_data.source) if labels is not None else None
    if labels is not None:
        problem = label_problem(class_scores(reference)[1], labels, eval_data.source)  # type: ignore[index]
        warnings += [problem] if problem else []
    measured: dict[tuple, dict] = {}
    for i, key in enumerate(built):
        tick("evaluating", i, len(built))
        measured[key] = _measure(built[key][0], reference, eval_data, batch)
    tick("evaluating", len(built), len(built))
    return reference, acc_original, measured


class _PairTimer:
    """B against A, timed as ``convtool report`` times a pair: a two-model loop in rounds of fresh
    sessions until the interval excludes 1 or a cap; the pairs are counted for the progress."""

    def __init__(self, feeds, session_options, sweep_options: SweepOptions, pairs: int, tick: Progress) -> None:
        from convtool.runtime.timing import schedule

        self.feeds, self.session_options, self.sweep_options, self.tick = feeds, session_options, sweep_options, tick
        self.looks = schedule(sweep_options.runs, sweep_options.run_cap)
        self.per_pair = 2 * self.looks[-1]
        self.pairs = pairs
        self.done_pairs = 0

    def __call__(self, a: onnx.ModelProto, b: onnx.ModelProto):
        """(A's stats, B's stats, verdict)."""
        from convtool.runtime.session import make_session
        from convtool.runtime.timing import per_round, time_rounds

        looks, feeds, session, so = self.looks, self.feeds, self.session_options, self.sweep_options

        def decided(samples: list[list[float]], rounds: list[int]) -> bool:
            return resolved(samples[0], samples[1], margin=0.0, rounds=rounds, looks=len(looks))

        offset = self.done_pairs * self.per_pair
        total = self.pairs * self.per_pair
        timed = time_rounds([lambda: make_session(a, session), lambda: make_session(b, session)],
                            [feeds, feeds], looks=looks, per_round=per_round(looks[0]),
                            warmup=so.warmup, stop=decided, max_seconds=so.max_seconds,
                            progress=lambda d, t: self.tick("timing models", offset + d, total))
        self.done_pairs += 1
        first, second = timed.stats
        return first, second, verdict(first.samples, second.samples, margin=0.0, rounds=timed.rounds,
                                      looks=timed.looks)


def _time_points(model: onnx.ModelProto, options: ConvertOptions, sweep_options: SweepOptions,
                 built: Mapping[tuple, tuple], int8, measured: dict[tuple, dict], tick: Progress):
    """5. Every distinct point against the original (and the INT8 original), exactly as
    ``convtool report`` times a pair; returns the original's latency stats and the INT8
    original's (median, verdict) or None.

    (One loop over all models was tried: it cycles each model's data out of the caches and
    biases small, fast models low - 2.29x there for a point report timed at 2.46x, disjoint
    intervals.)  A plan that converts nothing is the original itself: it gets the original's
    numbers, not a timing."""
    from convtool.runtime.session import make_session
    from convtool.runtime.timing import latency_stats, per_round, time_rounds

    lat = options.timing_options
    feeds = random_feeds(model, options.input_shape_map)
    order = [k for k in built if k and k != INT8_KEY]
    pairs = len(order) * (2 if int8 is not None else 1) + (1 if int8 is not None else 0)
    time_pair = _PairTimer(feeds, lat.session, sweep_options, pairs, tick)
    looks = time_pair.looks
    original_ms: list[float] = []
    int8_speed = None
    if int8 is not None:  # the reference first: every point is then timed against it too
        a, b, v = time_pair(model, int8.model)
        original_ms += a.samples
        int8_speed = (b.median, v)
    for k in order:
        a, b, v = time_pair(model, built[k][0])
        original_ms += a.samples
        measured[k].update(latency_ms=b.median, speedup=v.speedup, ci_low=v.ci_low, ci_high=v.ci_high,
                           runs=v.runs, resolved=v.resolved)
        if int8 is not None:
            _, _, w = time_pair(int8.model, built[k][0])
            measured[k]["vs_int8"] = PairSpeed(w.speedup, w.ci_low, w.ci_high, w.runs, w.resolved)
    if not original_ms:  # nothing converted anywhere: the original alone, for its latency
        timed = time_rounds([lambda: make_session(model, lat.session)], [feeds], looks=(looks[0],),
                            per_round=per_round(looks[0]), warmup=sweep_options.warmup,
                            progress=lambda d, t: tick("timing models", d, t))
        original_ms = list(timed.stats[0].samples)
    tick("timing models", 1, 1)
    return latency_stats(original_ms), int8_speed


def _original_point(measured: dict[tuple, dict], base, int8_speed) -> None:
    """A plan that converts nothing is the original: the original's numbers."""
    if () in measured:
        measured[()].update(latency_ms=base.median, speedup=1.0, ci_low=1.0, ci_high=1.0, runs=None, resolved=None)
        if int8_speed is not None:  # the original against the INT8 original: the reference's pair, inverted
            v = int8_speed[1]
            measured[()]["vs_int8"] = PairSpeed(1.0 / v.speedup, 1.0 / v.ci_high, 1.0 / v.ci_low, v.runs, v.resolved)


def _int8_point(int8, eval_data: Dataset, batch, reference, measured: dict[tuple, dict],
                built: dict[tuple, tuple], int8_speed, macs_before: int | None) -> SweepInt8:
    """7. The INT8 original measured like a point (and the point models that are it get its MACs)."""
    if INT8_KEY not in measured:
        measured[INT8_KEY] = _measure(int8.model, reference, eval_data, batch)
    m8 = measured[INT8_KEY]
    ms8, v = int8_speed if int8_speed is not None else (None, None)
    m8.update(latency_ms=ms8, speedup=None if v is None else v.speedup, ci_low=None if v is None else v.ci_low,
              ci_high=None if v is None else v.ci_high, runs=None if v is None else v.runs,
              resolved=None if v is None else v.resolved, vs_int8=PairSpeed(1.0, 1.0, 1.0))
    int8_record = SweepInt8(
        calibration=int8.summary.calibration, samples=int8.summary.samples, macs=macs_before,
        params=model_params(int8.model), size_bytes=int8.model.ByteSize(), latency_ms=ms8,
        **{k: m8[k] for k in ("speedup", "ci_low", "ci_high", "runs", "resolved", "drift", "rel_l2",
                              "top1_agreement", "accuracy")})
    if INT8_KEY in built:
        built[INT8_KEY] = (int8.model, macs_before)
    return int8_record


def _points(keys: Sequence[tuple], selections: Sequence[Selection], measured: Mapping[tuple, dict],
            built: Mapping[tuple, tuple], finetuned: Mapping[tuple, bool], finetune_on: bool) -> list[dict]:
    """6. One point per budget, in the budgets' order (the front not yet marked)."""
    points = []
    for key, selection in zip(keys, selections):
        m, (out, macs) = measured[key], built[key]
        points.append(dict(
            budget=selection.budget, search_drift=selection.value, macs=macs, params=model_params(out),
            converted=len(selection.chosen), ranks={n: c.rank for n, c in selection.chosen.items()},
            layouts={n: c.layout for n, c in selection.chosen.items()}, dropped=selection.dropped,
            finetuned=finetuned.get(key, False) if finetune_on else None, **m))
    return points


def _mark_front(points: list[dict], has_labels: bool, acc_original: float | None,
                int8_record: SweepInt8 | None) -> str:
    """6. Mark each point's ``pareto``; returns the quality axis."""
    has_agreement = any(point["top1_agreement"] is not None for point in points)
    axis = quality_axis(has_labels, has_agreement)
    original = dict(speedup=1.0, drift=0.0, top1_agreement=1.0 if has_agreement else None, accuracy=acc_original)
    references = [asdict(int8_record)] if int8_record is not None else []  # the INT8 original competes too
    for point, on in zip(points, pareto(points, axis, original, references)):
        point["pareto"] = on and point["converted"] > 0  # the unchanged model is the original, drawn apart
    return axis


def _environment(options: ConvertOptions, sweep_options: SweepOptions) -> dict:
    """The deployment's setting and the timing protocol, for the record."""
    from convtool.runtime.session import environment

    env = environment(options.timing_options.session).to_dict()
    env.update(runs=sweep_options.runs, max_runs=sweep_options.run_cap, warmup=sweep_options.warmup,
               max_seconds=sweep_options.max_seconds)
    return env


def _macs_before(model: onnx.ModelProto, options: ConvertOptions) -> int | None:
    try:
        return model_costs(model, options.input_shape_map).macs
    except ConvToolError:
        return None


def sweep(model: onnx.ModelProto, options: ConvertOptions, data: Dataset | None, eval_data: Dataset,
          sweep_options: SweepOptions, *, source: str = "<memory>", progress: Progress | None = None) -> SweepResult:
    """Search once, select per budget, measure every point (see the module docstring)."""
    start = time.perf_counter()
    tick = _ticker(progress)
    with_int8 = sweep_options.int8_baseline or options.quantize is not None
    if with_int8 and data is None:
        raise OptionError("the INT8 original (--int8-baseline, --quantize int8) is quantized on calibration data: "
                          "give --calibration DATA")
    search = BudgetSearch(model, replace(options, max_drift=None), data, source=source, progress=progress).analyse()
    warnings = [sweep_words(w) for w in search.warnings]
    budgets = sweep_options.sorted_budgets
    selections, refits = _select(search, budgets, warnings, tick)
    keys = _point_keys(search, selections, refits)
    int8 = _int8_original(search, options.quantize) if with_int8 else None
    built, finetuned = _build(model, options, selections, keys, int8, warnings, source, tick)
    macs_before = _macs_before(model, options)
    batch = search.batch
    reference, acc_original, measured = _evaluate(model, eval_data, batch, built, warnings, tick)
    base, int8_speed = _time_points(model, options, sweep_options, built, int8, measured, tick)
    _original_point(measured, base, int8_speed)
    int8_record = None
    if int8 is not None:
        int8_record = _int8_point(int8, eval_data, batch, reference, measured, built, int8_speed, macs_before)
    points = _points(keys, selections, measured, built, finetuned, options.finetune is not None)
    axis = _mark_front(points, eval_data.labels is not None, acc_original, int8_record)
    record = SweepRecord(
        input=source, calibration=data.source if data is not None else search.held.describe(),
        evaluation=eval_data.source, eval_samples=eval_data.count, objective=options.objective, metric=options.metric,
        x_axis=axis,
        original=SweepBaseline(macs_before, model_params(model), base.median, acc_original,
                               convs=len(search.names)),
        points=[SweepPoint(**p) for p in points], environment=_environment(options, sweep_options),
        sensitivity=search.sensitivities(),
        warnings=list(dict.fromkeys(warnings)), seconds=round(time.perf_counter() - start, 3),
        evaluations=search.evaluations, int8=int8_record,
        quantize=None if options.quantize is None else "int8")
    log.info("sweep: %d budgets, %d distinct models, %d trials", len(budgets), len(built), search.evaluations)
    return SweepResult(record, [built[k][0] for k in keys])

