"""The drift-budget search (``--max-drift D``): per-layer ranks and layouts that save the most of
what the user deploys for - measured time (``--objective latency``, the default), MACs or
parameters - while the whole model's drift on data no fit saw stays within ``D``.

Data
----
With calibration data the samples are split once (seeded, ``holdout`` of them, at least one):
the refits of every trial use only the *fit* part (the refit itself holds out part of it again
to choose its regulariser), and every drift - each trial's and the final one - is measured on
the *held-out* part, so ``D`` is a promise about unseen data.  The summary records the drift
on the fitted samples beside it.  Without calibration data, seeded random inputs are used (no
refit, nothing to hold out), and the record says so: drift on random inputs says little about
accuracy.

Refits of the trials.  A data-aware refit (both factors, :mod:`convtool.core.als`) costs
seconds per layer, a pointwise refit a fraction of that, so trials refit the pointwise weights;
a trial that comes out at most :data:`ESCALATE` times over the budget is measured again with
the data-aware factors (which drift less), and once such a trial is accepted every later trial
of that selection is data-aware.  The chosen plan then gets the data-aware factors only if
their measured held-out drift keeps the budget (else the pointwise refit the search measured),
and the summary's ``factors`` says which - the final model is always the one whose drift was
measured.  On the digits sample at ``--max-drift 0.05`` this took the search from 186 s to
70 s (2 cores, timing cached) at 50% instead of 61% fewer MACs.

The metric (:mod:`convtool.analysis.drift`): ``rel_l2`` budgets the worst output's relative L2,
normalised per channel for outputs with a channel axis; ``top1`` budgets ``1 - top-1
agreement`` on outputs shaped like class scores.

Candidates and their gain
-------------------------
A candidate is one way to convert one layer: a rank of ``search_ranks`` (capped at the layer's
full rank) and a layout.  Its *gain* is what it saves in the objective's unit:

* ``latency``: milliseconds, measured - the layer's original conv and each replacement layout
  worth trying (:func:`convtool.core.plan.candidate_layouts`; every form under ``--layout
  auto``) are timed alone at the layer's real input shape with the deployment's session
  options (:class:`convtool.search.latency.LayerTuner`: interleaved, spinning off, cached).
  Only replacements faster beyond noise (:func:`convtool.core.decide.verdict`, with the
  ``--latency-aware`` margin) are candidates; per rank the fastest depthwise-first form is
  kept, and ``pointwise_first`` too when it passes and is faster still (its drift differs: it
  is not refitted).  ``gain = median(original) - median(replacement)``;
* ``macs``: ``MACs_before x (1 - r / Cout_g - r / K)`` (``r / K + r / Cin_g`` for
  ``pointwise_first``), the layout being the planner's;
* ``params``: the weights and bias the replacement saves.

A layer with no candidate (never faster, or never cheaper) stays unconverted, and its record
says why.

The search
----------
Each trial is one call of the pure conversion step (:func:`convtool.convert.convert`) with a
plan of per-layer overrides, then - with data - the sequential refit
(:mod:`convtool.search.calibrate`) and one run over the held-out samples.  Trials are memoised
by plan, so a sweep over budgets (:mod:`convtool.search.sweep`) re-runs none twice.

1. Sensitivity: each candidate is converted alone and its drift measured.
2. Greedy: layers are ordered by gain per unit of drift (their best candidate alone; the
   per-channel drift orders even when the budget is on top-1, which is too coarse to rank by).
   Each layer in turn tries its candidates that fit the budget alone, largest gain first; one
   is kept when the whole model with every layer accepted so far plus this one stays within
   the budget (re-checked, with the refit redone, since errors compound); otherwise the layer
   stays unconverted.
3. Never slower: the final model is timed against the original end to end (interleaved A/B,
   :func:`convtool.search.latency.confirm`).  Under ``latency``, while it is not faster beyond
   noise (the paired interval's lower end above 1) - or its drift exceeds the budget - the
   chosen layer with the least gain per unit of drift is dropped and the model re-timed; the
   dropped layers are recorded.  Under ``macs`` / ``params`` a slower model is kept (that is
   what was asked for) with a warning.  ``LatencyOptions.confirm=False`` skips this step.

Cost: with ``L`` layers, ``R`` ranks and ``F`` forms per rank, ``L R F`` timed pairs
(latency only; cached on disk), at most ``2 L R`` trials (fewer under latency: candidates that
are not faster are never trialled), one end-to-end timing per dropped layer plus one; trials
sharing a prefix of converted layers reuse its refits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import onnx

from convtool.analysis.drift import Drift, compare_outputs
from convtool.convert import Conversion, convert, plan
from convtool.core.decide import Verdict
from convtool.core.factorize import mac_ratio
from convtool.core.plan import Decision, Override, plan_layer
from convtool.errors import ConvToolError, OptionError
from convtool.graph.select import ConvSite
from convtool.options import CalibrationOptions, ConvertOptions, RankPolicy
from convtool.records import LatencySummary, LayerChange, SearchSummary, Sensitivity
from convtool.runtime.inputs import Dataset, fixed_batch, random_dataset
from convtool.runtime.run import run_outputs
from convtool.search import latency
from convtool.search.calibrate import RefitCache, refit_layers

log = logging.getLogger(__name__)

__all__ = ["BudgetSearch", "Candidate", "Selection", "SearchResult", "search"]

RANDOM_SAMPLES = 16
#: A pointwise-refit trial at most this factor over the budget is re-measured with the data-aware
#: factors (which drift less); from the first such acceptance on, the selection's trials are
#: data-aware.
ESCALATE = 1.5
RANDOM_WARNING = ("--max-drift without --calibration: drift measured on {n} seeded random inputs, "
                  "which say little about real data; pass --calibration data.npz")
#: Held-out samples below this make the budget's promise weak; the record warns.
FEW_HELD_OUT = 16
#: Drift below this counts as this, so that gain / drift stays finite.
_DRIFT_FLOOR = 1e-9

#: ``progress(stage, done, total)``
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Candidate:
    """One way the search may convert a layer, and what it saves."""

    name: str
    rank: int
    layout: str
    macs_saved: int
    params_saved: int
    original_ms: float | None = None  # medians, latency objective only
    replacement_ms: float | None = None
    timing: str | None = None  # the verdict's reason

    def gain(self, objective: str) -> float:
        if objective == "latency":
            assert self.original_ms is not None and self.replacement_ms is not None
            return self.original_ms - self.replacement_ms
        return float(self.params_saved if objective == "params" else self.macs_saved)

    @property
    def override(self) -> Override:
        return Override(rank=self.rank, layout=self.layout)

    @property
    def key(self) -> tuple[str, int, str]:
        return self.name, self.rank, self.layout


def describe_gain(c: Candidate, objective: str) -> str:
    """``"saves 0.12 ms (0.31 -> 0.19 ms)"``, ``"saves 1.2M MACs"``..."""
    if objective == "latency":
        return f"saves {c.gain(objective):.3g} ms ({c.original_ms:.3g} -> {c.replacement_ms:.3g} ms)"
    unit = "params" if objective == "params" else "MACs"
    return f"saves {_count(c.gain(objective))} {unit}"


def _count(v: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.0f}"


@dataclass
class Selection:
    """The outcome for one budget: the plan, the final model's drift and timing, and why each
    layer was chosen or left."""

    budget: float
    chosen: dict[str, Candidate]
    overrides: dict[str, Override]
    value: float  # the budgeted drift of the final model, held out
    drift: Drift
    model: onnx.ModelProto  # the final trial (refitted on the fit split)
    notes: dict[str, str]  # per layer: why chosen or left
    end_to_end: Verdict | None = None
    dropped: tuple[str, ...] = ()
    slower: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchResult:
    """The search's per-layer plan, why layers were left, its summary and warnings."""

    overrides: dict[str, Override]
    summary: SearchSummary
    warnings: tuple[str, ...]
    fit_data: Dataset | None  # what the final refit must use, so the held-out drift stays true
    cache: RefitCache
    notes: dict[str, str] = field(default_factory=dict)  # per layer: why chosen or left
    choices: dict[str, latency.LayerChoice] = field(default_factory=dict)  # timed layers (latency)
    latency: LatencySummary | None = None  # how the timing ran (latency objective)
    factors: str = "pointwise"  # the refit the final model must get: the one its drift was measured with

    @property
    def timed(self) -> bool:
        """The search measured layers and the whole model itself (``--latency-aware`` need not)."""
        return self.latency is not None

    def apply(self, layers: Sequence[LayerChange]) -> None:
        """Copy each layer's search decision (and timing) into its record entry."""
        latency.apply_choices(layers, self.choices)
        for layer in layers:
            if layer.name in self.notes:
                layer.search_decision = self.notes[layer.name]


def _drift(reference: dict, candidate: dict, metric: str) -> tuple[float, Drift]:
    d = compare_outputs(reference, candidate)
    try:
        return d.value(metric), d
    except ValueError:
        raise OptionError("--metric top1 needs an output shaped like class scores [N, C]; use --metric rel_l2") from None


def _same_family(a: str, b: str) -> bool:
    return (a == "pointwise_first") == (b == "pointwise_first")


class BudgetSearch:
    """The search's state: data split, reference outputs, candidates, sensitivities and a memo of
    trials.  :meth:`analyse` once, then :meth:`select` for any number of budgets."""

    def __init__(self, model: onnx.ModelProto, options: ConvertOptions, data: Dataset | None, *,
                 source: str = "<memory>", progress: Progress | None = None):
        self.start = time.perf_counter()
        self.model, self.options, self.data, self.source, self.progress = model, options, data, source, progress
        self.objective, self.metric = options.objective, options.metric
        self.cal = options.calibration_or_default
        # trials refit only the pointwise weights (seconds per trial); the chosen plan then gets the
        # data-aware factors, kept only if they hold the budget on the held-out split (final_factors)
        self.trial_cal = replace(self.cal, factors="pointwise")
        self.timing = options.timing_options
        if self.objective == "latency" or self.timing.confirm:
            from convtool.runtime.session import check_providers

            check_providers(tuple(self.timing.providers))  # before any work: one line, no CPU fallback
        self.base = replace(options, check=False, latency_aware=None, max_drift=None)
        self.warnings: list[str] = []
        self.refit = data is not None
        if data is not None:
            fit, held = data.split(self.cal.holdout, self.cal.seed + 1, fixed_batch(model) or 1)
            if held is None:  # a single sample: nothing can be held out
                held = fit
                self.warnings.append("--max-drift: one calibration sample, so drift is measured on the data the "
                                     "refit used")
            elif held.count < FEW_HELD_OUT:
                self.warnings.append(f"--max-drift: drift measured on only {held.count} held-out samples; "
                                     "pass more calibration data for a firmer promise")
        else:
            fit = held = random_dataset(model, options.input_shape_map, count=RANDOM_SAMPLES, seed=self.cal.seed)
            self.warnings.append(RANDOM_WARNING.format(n=held.count))
        self.fit, self.held = fit, held
        self.batch = self.cal.batch_size
        self.reference = run_outputs(model, held, self.batch)
        self.cache = RefitCache()
        self.evaluations = 0
        self._memo: dict[tuple, tuple[float, Drift]] = {}
        self._aware = False  # this selection's trials refit with the data-aware factors
        self._last: tuple[tuple, onnx.ModelProto] | None = None
        self.names: list[str] = []  # every layer that qualifies at some rank, graph order
        self.candidates: dict[str, list[Candidate]] = {}
        self.left: dict[str, str] = {}  # layers without a candidate: why
        self.choices: dict[str, latency.LayerChoice] = {}  # best timed choice per layer
        self.timed_all: dict[str, list[latency.Candidate]] = {}  # every timed form, every rank
        self.alone: dict[tuple[str, int, str], tuple[float, Drift]] = {}
        self.order: list[str] = []
        self.tuner: latency.LayerTuner | None = None
        self.timed_candidates = 0

    # -- trials ------------------------------------------------------------------------------------

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    @staticmethod
    def plan_key(overrides: Mapping[str, Override]) -> tuple:
        return tuple(sorted((n, o.rank, o.layout) for n, o in overrides.items() if o.rank))

    def build(self, overrides: Mapping[str, Override], cal: CalibrationOptions | None = None) -> Conversion:
        """The conversion of one plan, refitted on the fit split when there is data (trials: the
        pointwise refit; ``cal``: another refit, e.g. the data-aware one for the final plan)."""
        conv = convert(self.model, self.base, overrides, source=self.source, count_macs=False)
        if self.refit and conv.record.totals.converted:
            conv.model, _ = refit_layers(self.model, conv.model, conv.record.layers, self.fit, cal or self.trial_cal,
                                         self.cache, decisions=conv.decisions)
        return conv

    def final_factors(self, selection: Selection) -> tuple[Selection, str]:
        """The chosen plan with data-aware factors when the user asked for them and they keep the
        budget on the held-out split (their drift is measured, not assumed); else the pointwise
        refit the search measured.  Returns the selection to report and the refit it used."""
        if not self.refit:
            return selection, "none"
        if self._aware:  # the selection was measured with the data-aware refit already
            return selection, "data-aware"
        if not (selection.chosen and self.cal.factors == "data-aware"):
            return selection, self.trial_cal.factors
        self._tick("data-aware factors", 0, 1)
        model = self.build(selection.overrides, self.cal).model
        value, drift = _drift(self.reference, run_outputs(model, self.held, self.batch), self.metric)
        self._tick("data-aware factors", 1, 1)
        if value <= selection.budget:
            return replace(selection, value=value, drift=drift, model=model), "data-aware"
        warning = (f"--max-drift: the data-aware factors drifted {value:.4g} > {selection.budget:g} on the held-out "
                   f"samples for the chosen layers; kept the pointwise refit the search measured ({selection.value:.4g})")
        return replace(selection, warnings=[*selection.warnings, warning]), "pointwise"

    def trial_model(self, overrides: Mapping[str, Override], aware: bool | None = None) -> onnx.ModelProto:
        aware = self._aware if aware is None else aware
        key = (self.plan_key(overrides), aware)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        model = self.build(overrides, self.cal if aware else None).model if key[0] else self.model
        self._last = (key, model)
        return model

    def evaluate(self, overrides: Mapping[str, Override], aware: bool | None = None) -> tuple[float, Drift]:
        """The budgeted drift (and every measure) of a plan on the held-out samples; memoised.
        ``aware``: with the data-aware refit (default: the current selection's mode)."""
        aware = self._aware if aware is None else aware
        key = (self.plan_key(overrides), aware)
        if key not in self._memo:
            self.evaluations += 1
            self._memo[key] = _drift(self.reference,
                                     run_outputs(self.trial_model(overrides, aware), self.held, self.batch),
                                     self.metric)
        return self._memo[key]

    def _alone(self, c: Candidate, budget: float) -> float:
        """``c``'s drift alone; a pointwise value just over the budget is re-measured data-aware."""
        value = self.alone[c.key][0]
        if self._escalates(value, budget):
            value = min(value, self.evaluate(self.plan_of({c.name: c}), aware=True)[0])
        return value

    def _escalates(self, value: float, budget: float) -> bool:
        """A pointwise-refit trial just over the budget is worth a data-aware trial."""
        return (self.refit and not self._aware and self.cal.factors == "data-aware"
                and budget < value <= ESCALATE * budget)

    def plan_of(self, chosen: Mapping[str, Candidate]) -> dict[str, Override]:
        """Every qualifying layer off except the chosen ones."""
        return {**{n: Override(rank=0) for n in self.names}, **{n: c.override for n, c in chosen.items()}}

    # -- 1. candidates and sensitivity ---------------------------------------------------------------

    def analyse(self) -> BudgetSearch:
        """Candidates (timed under the latency objective), then each one's drift alone."""
        self._candidates()
        todo = [c for n in self.names for c in self.candidates.get(n, [])]
        for i, c in enumerate(todo):
            self._tick("sensitivity", i, len(todo))
            self.alone[c.key] = self.evaluate(self.plan_of({c.name: c}))
        self._tick("sensitivity", len(todo), len(todo))
        ratio = {n: max(self.ratio(c) for c in cs) for n, cs in self.candidates.items() if cs}
        self.order = sorted(ratio, key=lambda n: -ratio[n])
        return self

    def ratio(self, c: Candidate) -> float:
        """Gain per unit of (per-channel) drift, alone."""
        return c.gain(self.objective) / max(self.alone[c.key][1].drift, _DRIFT_FLOOR)

    def _candidates(self) -> None:
        from convtool.analysis.costs import node_costs

        ranks = sorted({int(r) for r in self.options.search_ranks})
        planned = plan(self.model, replace(self.base, rank=RankPolicy.fixed(ranks[0])), source=self.source)
        sites = [s for s in planned.sites if isinstance(s, ConvSite)]
        try:
            costs = node_costs(self.model, self.options.input_shape_map)
        except ConvToolError:
            costs = None
        layout = self.options.layout
        decisions: dict[str, list[Decision]] = {}
        for site in sites:
            seen: set[int] = set()
            for r in ranks:
                d = plan_layer(site.layer, RankPolicy.fixed(r), layout)
                if isinstance(d, Decision) and d.rank not in seen:
                    seen.add(d.rank)
                    decisions.setdefault(site.name, []).append(d)
        self.names = [s.name for s in sites if s.name in decisions]
        macs_before = {s.name: (costs[s.index].macs or 0) if costs is not None else 0 for s in sites}

        def make(site, d: Decision, layout: str, timing=None) -> Candidate:
            geo = site.layer.geometry
            orientation = "pointwise_first" if layout == "pointwise_first" else "depthwise_first"
            ratio = mac_ratio(geo.out_channels // geo.group, geo.in_channels // geo.group, geo.kernel_size, d.rank,
                              orientation)
            params_after = d.params_after
            if not _same_family(layout, d.layout):
                other = plan_layer(site.layer, RankPolicy.fixed(d.rank), layout, Override(rank=d.rank))
                params_after = other.params_after if isinstance(other, Decision) else params_after
            kw = {}
            if timing is not None:
                kw = dict(original_ms=timing.verdict.original_ms, replacement_ms=timing.verdict.replacement_ms,
                          timing=timing.verdict.reason)
            return Candidate(site.name, d.rank, layout, int(round(macs_before[site.name] * max(0.0, 1.0 - ratio))),
                             int(site.layer.params - params_after), **kw)

        if self.objective != "latency":
            for site in sites:
                self.candidates[site.name] = [make(site, d, d.layout) for d in decisions.get(site.name, [])]
            return
        self._timed_candidates(sites, decisions, make)

    def _timed_candidates(self, sites, decisions: dict[str, list[Decision]], make) -> None:
        opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)
        try:
            shapes = latency.tensor_shapes(self.model, self.options.input_shape_map)
        except ConvToolError as exc:
            self.warnings.append(f"--objective latency: input shapes unknown ({exc}); no layer can be measured")
            shapes = {}
        self.tuner = tuner = latency.LayerTuner(self.timing, opset)
        by_name = {s.name: s for s in sites}
        todo = [(by_name[n], d) for n in self.names for d in decisions[n]]
        for i, (site, d) in enumerate(todo):
            self._tick("timing layers", i, len(todo))
            choice = tuner.evaluate(site, d, self.options.layout, Override(rank=d.rank),
                                    shapes.get(site.node.inputs[0].name), RankPolicy.fixed(d.rank))
            self.timed_candidates += len(choice.candidates)
            best = self.choices.get(site.name)
            if best is None or _best_speedup(choice) > _best_speedup(best):
                self.choices[site.name] = choice  # the layer's best measurement, quoted when it is left
            self.timed_all.setdefault(site.name, []).extend(choice.candidates)
            passing = sorted((c for c in choice.candidates if c.verdict.convert), key=lambda c: c.verdict.replacement_ms)
            # per rank the fastest depthwise-first form, and pointwise_first only when faster still
            dwf = next((c for c in passing if c.layout != "pointwise_first"), None)
            pwf = next((c for c in passing if c.layout == "pointwise_first"), None)
            kept = [dwf] if dwf is not None else []
            if pwf is not None and (dwf is None or pwf.verdict.replacement_ms < dwf.verdict.replacement_ms):
                kept.append(pwf)
            for c in kept:
                self.candidates.setdefault(site.name, []).append(make(site, d, c.layout, c))
            if not choice.candidates and site.name not in self.left:
                self.left[site.name] = choice.reason
        self._tick("timing layers", len(todo), len(todo))
        for name in self.names:
            if not self.candidates.get(name):
                choice = self.choices.get(name)
                why = self.left.get(name) or (choice.reason if choice is not None else "not measured")
                self.left[name] = f"no rank measurably faster: {why}"

    # -- 2. greedy, 3. never slower -----------------------------------------------------------------

    def select(self, budget: float) -> Selection:
        """The greedy selection under ``budget``, then the end-to-end check (module docstring)."""
        chosen: dict[str, Candidate] = {}
        notes: dict[str, str] = dict(self.left)
        totals: dict[str, float] = {}
        self._aware = False
        for i, name in enumerate(self.order):
            self._tick("greedy", i, len(self.order))
            cands = sorted(self.candidates[name], key=lambda c: -c.gain(self.objective))
            fits = [c for c in cands if self._alone(c, budget) <= budget]
            if not fits:
                best = min(self.alone[c.key][0] for c in cands)
                notes[name] = f"alone it drifts {best:.4g} > budget {budget:g}"
                continue
            for c in fits:
                plan = self.plan_of({**chosen, name: c})
                value, _ = self.evaluate(plan)
                if self._escalates(value, budget):
                    aware_value, _ = self.evaluate(plan, aware=True)
                    if aware_value <= budget:  # from here on every trial of this selection is data-aware
                        self._aware, value = True, aware_value
                if value <= budget:
                    chosen[name] = c
                    totals[name] = value
                    break
            else:
                notes[name] = f"with the layers already chosen every rank exceeds budget {budget:g}"
        self._tick("greedy", len(self.order), len(self.order))
        for name, c in chosen.items():
            notes[name] = (f"chosen at rank {c.rank} ({c.layout}): {describe_gain(c, self.objective)}, drift alone "
                           f"{self.alone[c.key][0]:.4g}; whole model {totals[name]:.4g} <= {budget:g} when added")
        return self._finish(budget, chosen, notes)

    def _finish(self, budget: float, chosen: dict[str, Candidate], notes: dict[str, str]) -> Selection:
        warnings: list[str] = []
        dropped: list[str] = []
        verdict = None
        slower = False
        check = self.timing.confirm
        while True:
            overrides = self.plan_of(chosen)
            value, drift = self.evaluate(overrides)
            model = self.trial_model(overrides)
            if not chosen:
                verdict = None
                break
            verdict = self._time_whole(model) if check else None
            faster = verdict is None or verdict.convert
            if self.objective != "latency" or (faster and value <= budget):
                break
            worst = min(chosen, key=lambda n: self.ratio(chosen[n]))
            why = (f"whole model {verdict.speedup:.2f}x ({verdict.original_ms:.3g} -> {verdict.replacement_ms:.3g} ms, "
                   f"95% CI {verdict.ci_low:.2f}-{verdict.ci_high:.2f}x) not faster beyond noise"
                   if not faster and verdict is not None else f"whole model drift {value:.4g} > budget {budget:g}")
            notes[worst] = f"dropped after the search ({why}): least gain per unit of drift of the chosen layers"
            dropped.append(worst)
            del chosen[worst]
        if dropped:
            warnings.append(f"--max-drift: dropped {len(dropped)} chosen layer(s) so that the whole model is faster "
                            f"than the original ({', '.join(dropped)})")
        if verdict is not None and self.objective != "latency" and verdict.speedup < 1.0:
            slower = True
            warnings.append(f"--objective {self.objective}: the converted model is {1 / verdict.speedup:.2f}x SLOWER "
                            f"than the original ({verdict.original_ms:.3g} -> {verdict.replacement_ms:.3g} ms, 95% CI "
                            f"{verdict.ci_low:.2f}-{verdict.ci_high:.2f}x, measured end to end); written because "
                            f"{self.objective} was asked for - use --objective latency for a faster model")
        if not chosen:
            if self.objective == "latency" and not any(self.candidates.values()):
                warnings.append(f"no layer is measurably faster converted (at {self.timing.threads} thread(s)); "
                                "the model is unchanged")
            elif dropped:
                warnings.append("no selection under the budget made the whole model faster; the model is unchanged")
            else:
                warnings.append(f"no layer fits the drift budget {budget:g}; the model is unchanged. Try a larger "
                                "--max-drift, more --search-ranks (e.g. 1,2,4,8) or more --calibration data")
        overrides = self.plan_of(chosen)
        for name, note in notes.items():
            if name not in chosen and name in overrides:
                overrides[name] = Override(rank=0, reason=f"left unconverted by --max-drift: {note}")
        return Selection(budget, dict(chosen), overrides, value, drift, model, notes, verdict, tuple(dropped),
                         slower, warnings)

    def _time_whole(self, converted: onnx.ModelProto) -> Verdict:
        return latency.confirm(self.model, converted, self.timing, self.options.input_shape_map,
                               progress=None if self.progress is None else
                               (lambda d, t: self._tick("timing models", d, t)))

    # -- the record -------------------------------------------------------------------------------

    def latency_summary(self, selection: Selection) -> LatencySummary | None:
        if self.tuner is None:
            return None
        return latency.summary_of(self.tuner, self.timing, selection.end_to_end, reverted=bool(selection.dropped)
                                  and not selection.chosen)

    def sensitivities(self) -> tuple[Sensitivity, ...]:
        """Every candidate alone: drift, MACs saved, gain and (latency) its timing."""
        out = []
        for name in self.names:
            for c in self.candidates.get(name, []):
                value, d = self.alone[c.key]
                out.append(Sensitivity(name, c.rank, value, d.drift, d.top1_agreement, c.macs_saved, c.layout,
                                       c.gain(self.objective), c.original_ms, c.replacement_ms))
        return tuple(out)

    def summary(self, selection: Selection) -> SearchSummary:
        from convtool.records import EndToEnd

        fitted = None
        if self.fit is not self.held and selection.chosen:
            fitted, _ = _drift(run_outputs(self.model, self.fit, self.batch),
                               run_outputs(selection.model, self.fit, self.batch), self.metric)
        elif self.fit is not self.held:
            fitted = 0.0
        v, final = selection.end_to_end, selection.drift
        return SearchSummary(
            metric=self.metric, max_drift=selection.budget, drift=selection.value, rel_l2=final.drift,
            plain_rel_l2=final.rel_l2, top1_agreement=final.top1_agreement,
            data=self.held.source if self.refit else self.held.describe(),
            samples=self.data.count if self.data is not None else self.held.count, refit=self.refit,
            evaluations=self.evaluations, seconds=round(time.perf_counter() - self.start, 3),
            ranks={n: selection.chosen[n].rank if n in selection.chosen else 0 for n in self.names},
            sensitivity=self.sensitivities(), held_out_drift=selection.value,
            held_out_samples=self.held.count if self.refit else 0, fitted_drift=fitted, objective=self.objective,
            layouts={n: c.layout for n, c in selection.chosen.items()}, timed_candidates=self.timed_candidates,
            end_to_end=None if v is None else EndToEnd(v.original_ms, v.replacement_ms, v.speedup, v.ci_low,
                                                       v.ci_high, v.runs),
            dropped=selection.dropped, slower=selection.slower)

    def result(self, selection: Selection) -> SearchResult:
        choices: dict[str, latency.LayerChoice] = {}
        for name, timed in self.timed_all.items():  # the record lists every timed form of every rank
            c = selection.chosen.get(name)
            reason = c.timing if c is not None else self.choices[name].reason
            choices[name] = latency.LayerChoice(None, reason or "", list(timed),
                                                chosen=None if c is None else (c.rank, c.layout))
        return SearchResult(selection.overrides, self.summary(selection), tuple(self.warnings + selection.warnings),
                            self.fit if self.refit else None, self.cache, dict(selection.notes), choices,
                            self.latency_summary(selection))


def _best_speedup(choice: latency.LayerChoice) -> float:
    return max((c.verdict.speedup for c in choice.candidates), default=0.0)


def search(model: onnx.ModelProto, options: ConvertOptions, data: Dataset | None, *, source: str = "<memory>",
           progress: Progress | None = None) -> SearchResult:
    """Choose per-layer ranks and layouts under ``options.max_drift`` (see the module docstring)."""
    if options.max_drift is None:
        raise ValueError("search needs options.max_drift")
    s = BudgetSearch(model, options, data, source=source, progress=progress).analyse()
    selection, factors = s.final_factors(s.select(float(options.max_drift)))
    log.info("max-drift search: %d evaluations, drift %.4g (budget %g)", s.evaluations, selection.value,
             selection.budget)
    result = s.result(selection)
    return replace(result, factors=factors, summary=replace(result.summary, factors=factors))
