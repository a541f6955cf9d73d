"""The drift-budget search (``--max-drift D``): per-layer ranks and layouts that save the most of
what the user deploys for - measured time (``--objective latency``, the default), MACs or
parameters - while the whole model's drift on data no fit saw stays within ``D``.

Cost grows with the model, not with the search: one capture pass, one suffix run per candidate,
one knapsack and a handful of whole-model verifications per budget.

Data
----
With calibration data the samples are split once (seeded, ``holdout`` of them, whole batches
for fixed-batch models): every fit uses only the *fit* part (and holds part of it out again to
choose its regulariser), every drift is measured on the *held-out* part, so ``D`` is a promise
about unseen data.  Acceptance uses the 95 % upper confidence bound of the held-out value
(:mod:`convtool.analysis.bounds`: Clopper-Pearson on disagreements for ``top1``, a bootstrap
over samples for ``rel_l2``), and the record carries the value, the bound and the sample count.
A ``top1`` budget that even zero disagreements on the held-out samples cannot certify is
refused before any work, with the number of samples it needs (a plan could only be accepted on
a promise the data cannot back).  Without calibration data seeded random inputs are used
(data-free factors, nothing held out, no bound), and the record says so.

The metric (:mod:`convtool.analysis.drift`): ``rel_l2`` budgets the worst output's relative L2,
normalised per channel for outputs with a channel axis; ``top1`` budgets ``1 - top-1
agreement``.  Selection always ranks layers by the continuous per-channel drift (top-1 is too
coarse to rank by); verification certifies in the user's metric.

Candidates and their gain
-------------------------
A candidate is one way to convert one layer: a rank of ``search_ranks`` (capped at the layer's
full rank) and a layout.  Its *gain* is what it saves in the objective's unit:

* ``latency``: milliseconds, measured - the layer's original conv and each replacement layout
  worth trying are timed alone at the layer's real input shape with the deployment's session
  options (:class:`convtool.search.latency.LayerTuner`: interleaved, spinning off, cached on
  disk).  Only replacements faster beyond noise are candidates; per rank the fastest
  depthwise-first form is kept, and ``pointwise_first`` too when it is faster still.
  ``gain = median(original) - median(replacement)``;
* ``macs``: ``MACs_before x (1 - r / Cout_g - r / K)`` (``r / K + r / Cin_g`` for
  ``pointwise_first``);
* ``params``: the weights and bias the replacement saves.

The search
----------
1. Sensitivity (:mod:`convtool.search.sensitivity`): one pass of the original model over the
   calibration samples streams every candidate layer's input-patch moments and keeps, for the
   held-out samples, every layer input and every tensor a suffix of the graph reads (memory:
   ``capture_bytes`` in the record).  Each candidate is fitted from its layer's moments alone
   (:data:`SENSE_ITERATIONS` alternating rounds: the whitened-SVD start and the pointwise solve,
   within a few % of the full fit's layer error at a quarter of its cost on YOLOv8n), and its
   drift alone is measured by running only the graph downstream of the layer.
2. Selection: the whole-model drift is modelled as ``sqrt(sum d_l^2)`` over the chosen layers'
   drifts alone; a multiple-choice knapsack (:mod:`convtool.core.knapsack`) picks every layer's
   candidate at once, maximising the gain with ``sum d_l^2 <= b^2`` for an internal budget
   ``b``.  The plan is verified: converted with its local fits and run once over the held-out
   samples.  ``b`` starts at ``D`` (``rel_l2``) and is rescaled by the measured interaction
   (``b D / measured``) or bisected, inside the bracket of the largest kept and the smallest
   rejected ``b``, for at most :data:`MAX_VERIFICATIONS` verifications; the kept plan with the
   largest gain wins.  Every attempt is in the record.
3. Never slower: under ``latency`` the final model is timed against the original end to end
   (interleaved A/B, :func:`convtool.search.latency.confirm`); while it is not faster beyond
   noise the chosen layer with the least gain per unit of drift is dropped and the model
   re-verified and re-timed.  Under ``macs`` / ``params`` a slower model is kept with a warning.
4. Final weights: the chosen plan is refitted sequentially (:mod:`convtool.search.calibrate`:
   each layer fitted to the original's output from its converted predecessors, with the user's
   ``--refit`` and at most :data:`FINAL_ITERATIONS` alternating rounds) and measured; it is
   kept when its bound keeps the budget and its held-out drift
   is no worse than the local fits', else the local fits are kept.  Either way the written
   model is the one whose drift was measured (``SearchResult.model``), for ``convert`` and for
   every ``sweep`` point alike.

Cost on YOLOv8n (nudenet 320n, 38 candidate layers, 48 calibration images, 2 cores): see the
"Budget search on real models" in benchmarks/README.md (``benchmarks/search_real.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import onnx

from convtool.analysis.bounds import drift_upper, samples_needed
from convtool.analysis.drift import Drift, compare_outputs
from convtool.convert import convert, plan
from convtool.core import knapsack
from convtool.core.decide import Verdict
from convtool.core.factorize import mac_ratio
from convtool.core.plan import Decision, Override, plan_layer
from convtool.errors import CalibrationDataError, ConvToolError, OptionError
from convtool.graph import weights
from convtool.graph.select import ConvSite
from convtool.options import ConvertOptions, RankPolicy
from convtool.records import (CalibrationSummary, FinetuneSummary, LatencySummary, LayerChange,
                              QuantizationSummary, SearchSummary, Sensitivity)
from convtool.runtime.inputs import Dataset, fixed_batch, random_dataset
from convtool.runtime.run import run_outputs
from convtool.search import latency, sensitivity
from convtool.search.calibrate import RefitCache, refit_layers

log = logging.getLogger(__name__)

__all__ = ["BudgetSearch", "Candidate", "Selection", "SearchResult", "search"]

RANDOM_SAMPLES = 16
#: Whole-model verifications per budget (each: one conversion and one held-out run).
MAX_VERIFICATIONS = 8
#: The internal-budget bracket is closed when ``hi / lo < 1 + BRACKET``.
BRACKET = 0.05
#: Alternating rounds of the sensitivity fits: 0 = the whitened-SVD start and the pointwise solve,
#: within a few % of the full fit's layer error at a quarter of its cost (YOLOv8n, module docstring).
SENSE_ITERATIONS = 0
#: Alternating rounds of the final sequential refit.  YOLOv8n, a 22-layer plan, 38 fit images
#: (2 cores): 0 rounds 29 s, held-out drift 0.0211; 1 round 55 s, 0.0195; 10 rounds 287 s, 0.0190
#: (the local fits alone: 0.0234).  Under load the 1-round refit took 99 s of a 205 s search.
FINAL_ITERATIONS = 0
#: The sequential refit's room: below this fraction of the budget, a larger plan is tried ...
ROOM = 0.8
#: ... at most this many times (each one more sequential refit).
SEQ_ROUNDS = 2
#: --finetune: fine-tunes per budget (the chosen plan, then deeper ones).
FINETUNE_ATTEMPTS = 3
#: --quantize int8: quantizations per budget (the chosen plan, then plans for smaller budgets).
QUANT_ATTEMPTS = 3
#: Confidence of the held-out upper bound the acceptance uses.
CONFIDENCE = 0.95
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
    bound: float | None = None  # 95 % upper confidence bound of ``value``
    factors: str = "local"  # the final model's weights: "local" fits, or the sequential refit's method
    calibration: CalibrationSummary | None = None  # the sequential refit, when it was kept
    finetune: FinetuneSummary | None = None  # --finetune: the fine-tune of the kept plan
    quantization: QuantizationSummary | None = None  # --quantize int8: the model is the quantized one


@dataclass(frozen=True)
class Measured:
    """A model's held-out drift: the budgeted value, every measure, the 95 % upper bound."""

    value: float
    drift: Drift
    bound: float | None


@dataclass(frozen=True)
class Attempt:
    """One verification: the internal budget, the plan's size, what the held-out run measured."""

    internal: float
    layers: int
    value: float
    bound: float | None
    kept: bool
    gain: float
    fits: str = "local"  # the weights verified: "local" fits, or "sequential" (the final refit)

    def to_dict(self) -> dict:
        return {"internal_budget": self.internal, "layers": self.layers, "drift": self.value, "bound": self.bound,
                "kept": self.kept, "gain": self.gain, "fits": self.fits}


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
    factors: str = "pointwise"  # the final model's weights: "local" fits or the sequential refit's method
    model: onnx.ModelProto | None = None  # the final model: the one whose held-out drift was measured
    calibration: CalibrationSummary | None = None  # its sequential refit, when that was kept
    finetune: FinetuneSummary | None = None  # --finetune inside the search (``deepen``)
    quantization: QuantizationSummary | None = None  # --quantize int8 inside the search

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


def _value(drift: Drift, metric: str) -> float:
    try:
        return drift.value(metric)
    except ValueError:
        raise OptionError("--metric top1 needs an output shaped like class scores [N, C]; use --metric rel_l2") from None


def _check_certifiable(budget: float | None, held: int, zero: Drift) -> None:
    """A ``top1`` budget that even 0 disagreements on ``held`` samples cannot certify is refused."""
    _value(zero, "top1")  # class scores at all
    if budget is None:
        return
    need = samples_needed(budget, CONFIDENCE)
    if held < need:
        raise CalibrationDataError(
            f"--max-drift {budget:g} --metric top1 cannot be certified with {held} held-out samples: even 0 "
            f"disagreements bound the rate at {1 - (1 - CONFIDENCE) ** (1 / max(held, 1)):.1%} (95%); it needs "
            f">= {need} held-out samples (more --calibration data or a larger --holdout)")


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
        self._zero = compare_outputs(self.reference, self.reference)
        if self.metric == "top1" and self.refit:
            _check_certifiable(options.max_drift, held.count, self._zero)
        self.cache = RefitCache()
        self.evaluations = 0
        self._memo: dict[tuple, Measured] = {}
        self.fitted: dict[tuple[str, int, str], sensitivity.Fitted] = {}
        self.phases: dict[str, float] = {}
        self.attempts: dict[float, tuple[Attempt, ...]] = {}
        self.capture_bytes = 0
        self.sites: list[ConvSite] = []
        self.sequential: dict[float, Measured] = {}  # per budget: the sequential refit's measurement
        self.kept_internal: dict[float, float] = {}  # per budget: the internal budget of the kept plan
        self._ks: tuple | None = None  # _knapsack(): fixed once the candidates' drifts are known
        self.ft_attempts: dict[float, list[dict]] = {}  # per budget: --finetune attempts (deepen)
        self.q_attempts: dict[float, list[dict]] = {}  # per budget: --quantize int8 attempts
        self._q_original = None  # the INT8-quantized original (--quantize int8), made once
        self._q_original_measured: Measured | None = None
        self.names: list[str] = []  # every layer that qualifies at some rank, graph order
        self.candidates: dict[str, list[Candidate]] = {}
        self.left: dict[str, str] = {}  # layers without a candidate: why
        self.choices: dict[str, latency.LayerChoice] = {}  # best timed choice per layer
        self.timed_all: dict[str, list[latency.Candidate]] = {}  # every timed form, every rank
        self.alone: dict[tuple[str, int, str], tuple[float, Drift]] = {}
        self.order: list[str] = []
        self.tuner: latency.LayerTuner | None = None
        self.timed_candidates = 0

    # -- plans and their models ---------------------------------------------------------------------

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    @staticmethod
    def plan_key(overrides: Mapping[str, Override]) -> tuple:
        return tuple(sorted((n, o.rank, o.layout) for n, o in overrides.items() if o.rank))

    def plan_of(self, chosen: Mapping[str, Candidate]) -> dict[str, Override]:
        """Every qualifying layer off except the chosen ones."""
        return {**{n: Override(rank=0) for n in self.names}, **{n: c.override for n, c in chosen.items()}}

    def overrides_of(self, chosen: Mapping[str, Candidate], notes: Mapping[str, str]) -> dict[str, Override]:
        """The plan, each layer left out carrying its note as the reason."""
        overrides = self.plan_of(chosen)
        for name, note in notes.items():
            if name not in chosen and name in overrides:
                overrides[name] = Override(rank=0, reason=f"left unconverted by --max-drift: {note}")
        return overrides

    def local_model(self, chosen: Mapping[str, Candidate]) -> onnx.ModelProto:
        """The plan converted, each layer with its local fit from the sensitivity pass."""
        if not chosen:
            return self.model
        conv = convert(self.model, self.base, self.plan_of(chosen), source=self.source, count_macs=False)
        for layer in conv.record.layers:
            c = chosen.get(layer.name)
            if c is None or not layer.converted:
                continue
            f = self.fitted[c.key]
            weights.write_factors(conv.model, list(layer.new_nodes), layer.layout or "multiplier", f.factors,
                                  f.bias, layer.group)
        return conv.model

    def sequential_model(self, chosen: Mapping[str, Candidate]) -> tuple[onnx.ModelProto, CalibrationSummary | None,
                                                                         list[LayerChange]]:
        """The plan converted and refitted sequentially on the fit split (what ``convert
        --calibration`` does to a fixed plan); the model, the refit's summary, the layers."""
        conv = convert(self.model, self.base, self.plan_of(chosen), source=self.source, count_macs=False)
        if not (self.refit and conv.record.totals.converted):
            return conv.model, None, conv.record.layers
        cal = replace(self.cal, iterations=min(self.cal.iterations, FINAL_ITERATIONS))
        model, summary = refit_layers(self.model, conv.model, conv.record.layers, self.fit, cal, self.cache,
                                      decisions=conv.decisions)
        return model, summary, conv.record.layers

    def measure(self, model: onnx.ModelProto) -> Measured:
        """Held-out drift of ``model``, the budgeted value and its upper confidence bound."""
        self.evaluations += 1
        outputs = run_outputs(model, self.held, self.batch)
        value, drift = _drift(self.reference, outputs, self.metric)
        bound = drift_upper(self.reference, outputs, self.metric, drift.top1_agreement, self.held.count,
                            CONFIDENCE) if self.refit else None
        return Measured(value, drift, bound)

    def verify(self, chosen: Mapping[str, Candidate]) -> Measured:
        """The plan's local model measured on the held-out samples; memoised by plan."""
        key = self.plan_key(self.plan_of(chosen))
        if key not in self._memo:
            self._memo[key] = self.measure(self.local_model(chosen)) if key else Measured(0.0, self._zero, 0.0)
        return self._memo[key]

    def keeps(self, m: Measured, budget: float) -> bool:
        """Acceptance: the upper bound keeps the budget (the value, where there is no bound)."""
        return m.value <= budget and (m.bound is None or m.bound <= budget)

    # -- 1. candidates and sensitivity ---------------------------------------------------------------

    def analyse(self) -> BudgetSearch:
        """Candidates (timed under the latency objective), then each one's fit and drift alone."""
        t0 = time.perf_counter()
        self._candidates()
        self.phases["candidates"] = round(time.perf_counter() - t0, 3)
        self._sense()
        ratio = {n: max(self.ratio(c) for c in cs) for n, cs in self.candidates.items() if cs}
        self.order = sorted(ratio, key=lambda n: -ratio[n])
        return self

    def _sense(self) -> None:
        """Step 1 of the module docstring: one capture, a local fit and a suffix run per candidate."""
        t0 = time.perf_counter()
        todo = [c for n in self.names for c in self.candidates.get(n, [])]
        if not todo:
            return
        by_name = {s.name: s for s in self.sites}
        sites = [by_name[n] for n in self.names if self.candidates.get(n)]
        decisions = {c.key: self._decision(by_name[c.name], c) for c in todo}
        first = {c.name: decisions[c.key] for c in reversed(todo)}
        cap = sensitivity.capture(self.model, sites, first, self.fit, self.held, self.cal, moments=self.refit,
                                  progress=lambda d, t: self._tick("capturing activations", d, t))
        self.capture_bytes, self.phases["capture"] = cap.nbytes, cap.seconds
        runner = sensitivity.SuffixRunner(self.model, cap)
        t1 = time.perf_counter()
        self.fitted.update(sensitivity.fit_all(
            [(c.key, decisions[c.key], cap.moments[c.name]) for c in todo], self.cal, SENSE_ITERATIONS,
            fit=self.refit, progress=lambda d, t: self._tick("fitting candidates", d, t)))
        self.phases["fits"] = round(time.perf_counter() - t1, 3)
        for i, c in enumerate(todo):
            self._tick("sensitivity", i, len(todo))
            if cap.suffixes:
                drift, _ = runner.drift(by_name[c.name], decisions[c.key], self.fitted[c.key])
            else:  # control-flow subgraphs: no suffix models, the whole model runs (slower, same number)
                drift = compare_outputs(self.reference, run_outputs(self.local_model({c.name: c}), self.held,
                                                                    self.batch))
            self.alone[c.key] = (_value(drift, self.metric), drift)
        self._tick("sensitivity", len(todo), len(todo))
        self.phases["sensitivity"] = round(time.perf_counter() - t1, 3)
        self.phases["capture+sensitivity"] = round(time.perf_counter() - t0, 3)

    def _decision(self, site: ConvSite, c: Candidate) -> Decision:
        d = plan_layer(site.layer, RankPolicy.fixed(c.rank), c.layout, Override(rank=c.rank, layout=c.layout))
        if not isinstance(d, Decision):
            raise ConvToolError(f"{c.name}: candidate rank {c.rank} ({c.layout}) cannot be planned: {d}")
        return d

    def ratio(self, c: Candidate) -> float:
        """Gain per unit of (per-channel) drift, alone."""
        return c.gain(self.objective) / max(self.alone[c.key][1].drift, _DRIFT_FLOOR)

    def _candidates(self) -> None:
        from convtool.runtime.observe import model_costs

        ranks = sorted({int(r) for r in self.options.search_ranks})
        planned = plan(self.model, replace(self.base, rank=RankPolicy.fixed(ranks[0])), source=self.source)
        sites = [s for s in planned.sites if isinstance(s, ConvSite)]
        self.sites = sites
        try:
            costs = list(model_costs(self.model, self.options.input_shape_map).nodes)  # convert's count
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
        self.tuner = tuner = latency.LayerTuner(self.timing, opset, quantize=self.options.quantize)
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

    def select(self, budget: float, promise: float | None = None) -> Selection:
        """The knapsack plan under ``budget``, verified, then the end-to-end check (module docstring).
        ``promise``: the user's budget when ``budget`` is a tighter one chosen internally
        (``--quantize int8`` leaves room for the quantization's drift); the selection carries it."""
        t0 = time.perf_counter()
        _, options, top = self._knapsack()
        attempts: list[Attempt] = []
        best: tuple[dict[str, Candidate], Measured, float] = ({}, self.verify({}), 0.0)
        lo, hi = 0.0, math.inf
        internal = min(budget, top) if self.metric == "rel_l2" else top / 4
        for step in range(MAX_VERIFICATIONS):
            if not options or internal <= 0:
                break
            self._tick("verifying plans", step, MAX_VERIFICATIONS)
            chosen = self.plan_for(internal)
            m = self.verify(chosen)
            ok = self.keeps(m, budget)
            attempts.append(Attempt(internal, len(chosen), m.value, m.bound, ok, self.gain_of(chosen)))
            if ok:
                lo = internal
                if self.gain_of(chosen) > self.gain_of(best[0]):
                    best = (chosen, m, internal)
            else:
                hi = internal
            if ok and internal >= top:
                break  # every layer at its largest gain keeps the budget
            internal = self._next_internal(internal, m, budget, lo, hi, top)
            if internal is None:
                break
        self._tick("verifying plans", MAX_VERIFICATIONS, MAX_VERIFICATIONS)
        self.attempts[budget] = tuple(attempts)
        chosen, measured, internal = best
        self.kept_internal[budget] = internal
        notes = self._notes(budget, chosen, measured)
        self.phases[f"selection {budget:g}"] = round(time.perf_counter() - t0, 3)
        selection = self._finish(budget, dict(chosen), notes)
        if promise is not None:
            return replace(selection, budget=promise)
        need = samples_needed(budget, CONFIDENCE) if self.metric == "top1" and self.refit else 0
        if need > self.held.count:
            selection.warnings.append(f"--max-drift {budget:g} (top1) cannot be certified with {self.held.count} "
                                      f"held-out samples (needs >= {need}); no plan was accepted")
        return selection

    def _knapsack(self) -> tuple[list[str], list[list[tuple[float, float]]], float]:
        """The layers with candidates, each one's ``(cost, gain)`` options, and the internal budget
        at which every layer takes its costliest option (fixed once :meth:`analyse` has run)."""
        if self._ks is None:
            names = [n for n in self.names if self.candidates.get(n)]
            options = [[(self.cost(c), c.gain(self.objective)) for c in self.candidates[n]] for n in names]
            top = math.sqrt(sum(max(cost for cost, _ in opts) for opts in options)) if options else 0.0
            self._ks = (names, options, top)
        return self._ks

    def plan_for(self, internal: float) -> dict[str, Candidate]:
        """The knapsack's plan for internal budget ``internal``: ``sum d_l^2 <= internal^2``."""
        names, options, _ = self._knapsack()
        picks = knapsack.solve(options, internal * internal)
        return {n: self.candidates[n][j] for n, j in zip(names, picks) if j is not None}

    def gain_of(self, chosen: Mapping[str, Candidate]) -> float:
        return sum(c.gain(self.objective) for c in chosen.values())

    def _adopt(self, selection: Selection, chosen: dict[str, Candidate], m: Measured, model: onnx.ModelProto,
               how: str, **fields) -> Selection:
        """``selection`` replaced by a larger plan the search measured (its notes, overrides, drift)."""
        notes = self._notes(selection.budget, chosen, m, how)
        return replace(selection, chosen=chosen, overrides=self.overrides_of(chosen, notes), value=m.value,
                       drift=m.drift, bound=m.bound, model=model, notes=notes, **fields)

    def _notes(self, budget: float, chosen: Mapping[str, Candidate], measured: Measured,
               how: str = "") -> dict[str, str]:
        """Why each layer was chosen or left, for the record."""
        notes: dict[str, str] = dict(self.left)
        bound = "" if measured.bound is None else f" (95% bound {measured.bound:.4g})"
        for name in self._knapsack()[0]:
            if name in chosen:
                c = chosen[name]
                notes[name] = (f"chosen at rank {c.rank} ({c.layout}){how}: {describe_gain(c, self.objective)}, drift "
                               f"alone {self.alone[c.key][0]:.4g}; whole model {measured.value:.4g}{bound} <= "
                               f"{budget:g}")
            else:
                alone = min(self.alone[c.key][0] for c in self.candidates[name])
                notes[name] = (f"alone it drifts {alone:.4g} > budget {budget:g}" if alone > budget else
                               f"not in the best plan within budget {budget:g} (least drift alone {alone:.4g})")
        return notes

    def _next_internal(self, internal: float, m: Measured, budget: float, lo: float, hi: float,
                       top: float) -> float | None:
        """The next internal budget: scaled by the measured interaction under ``rel_l2`` (the
        whole-model drift grows about linearly with ``sqrt(sum d_l^2)``), else bisected in log
        space; always inside the bracket ``(lo, hi)``; ``None`` when the bracket is closed."""
        if hi < math.inf and lo > 0 and hi / lo < 1.0 + BRACKET:
            return None
        measured = m.bound if m.bound is not None else m.value
        guess = None
        if self.metric == "rel_l2" and measured > 0:
            guess = internal * budget / measured * (0.97 if measured > budget else 1.0)
        if hi == math.inf:
            nxt = min(top, max(guess or 0.0, internal * 2.0))
        elif lo == 0.0:
            nxt = min(guess, internal / 2.0) if guess is not None else internal / 4.0
        else:
            mid = math.sqrt(lo * hi)
            nxt = guess if guess is not None and lo < guess < hi else mid
        if nxt <= 0 or nxt == internal or (hi < math.inf and nxt >= hi) or nxt <= lo:
            nxt = math.sqrt(lo * hi) if lo > 0 and hi < math.inf else None
        return nxt

    def cost(self, c: Candidate) -> float:
        """The knapsack weight: the squared per-channel drift the candidate causes alone."""
        return max(self.alone[c.key][1].drift, _DRIFT_FLOOR) ** 2

    def _finish(self, budget: float, chosen: dict[str, Candidate], notes: dict[str, str]) -> Selection:
        warnings: list[str] = []
        dropped: list[str] = []
        verdict = None
        slower = False
        check = self.timing.confirm and self.options.quantize is None  # --quantize int8: timed in INT8 later
        while True:
            m = self.verify(chosen)
            value, drift = m.value, m.drift
            model = self.local_model(chosen)
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
        overrides = self.overrides_of(chosen, notes)
        return Selection(budget, dict(chosen), overrides, value, drift, model, notes, verdict, tuple(dropped),
                         slower, warnings, bound=m.bound)

    def _time_whole(self, converted: onnx.ModelProto) -> Verdict:
        return self._time_pair(self.model, converted)

    def final(self, budget: float) -> tuple[Selection, str]:
        """Everything ``convert --max-drift budget`` does after the analysis - selection, final
        weights, ``--finetune`` - so that a sweep point is built exactly as ``convert`` builds it.
        Returns the selection (its ``model`` is the one to write) and its weights' source."""
        selection, factors = self.final_factors(self.select(budget))
        if self.options.finetune is not None and self.refit and selection.chosen:
            selection = self.deepen(selection)
            factors = selection.factors
        if self.options.quantize is not None and self.refit:
            selection = self.quantized(selection)
            factors = selection.factors if selection.chosen else "none"
        return selection, factors

    # -- 4. the final weights --------------------------------------------------------------------------

    def final_factors(self, selection: Selection) -> tuple[Selection, str]:
        """The chosen plan refitted sequentially (each layer fitted to the original's output from
        its converted predecessors) when that measures no worse on the held-out samples than the
        local fits the search verified, and keeps the budget; else the local fits.  The final
        model is always the one whose drift was measured.  Returns the selection and its weights'
        source (``"local"``, or the refit's method)."""
        if not (self.refit and selection.chosen):
            return selection, "local" if self.refit else "none"
        t0 = time.perf_counter()
        self._tick("sequential refit", 0, 1)
        model, cal, _ = self.sequential_model(selection.chosen)
        m = self.measure(model)
        self._tick("sequential refit", 1, 1)
        self.phases["sequential refit"] = round(time.perf_counter() - t0, 3)
        self.sequential[selection.budget] = m
        if self.keeps(m, selection.budget) and m.value <= selection.value:
            kept = replace(selection, value=m.value, drift=m.drift, bound=m.bound, model=model,
                           factors=self.cal.factors, calibration=cal)
            return self._spend_room(kept, m), self.cal.factors
        local = sensitivity.local_summary({n: self.fitted[c.key] for n, c in selection.chosen.items()},
                                          self.data.source if self.data is not None else "<memory>",
                                          self.data.count if self.data is not None else 0, self.fit.count,
                                          self.held.count, self.phases.get("sensitivity", 0.0))
        return replace(selection, calibration=local), "local"

    def _spend_room(self, selection: Selection, m: Measured) -> Selection:
        """The sequential refit usually drifts well below the local fits the plan was chosen
        with (digits at 0.05: 0.044 -> 0.026), leaving budget unspent.  While it measures below
        :data:`ROOM` of the budget, the internal budget is scaled up by ``budget / measured``
        and the larger plan is refitted sequentially and verified (and, under ``latency``,
        timed end to end), at most :data:`SEQ_ROUNDS` times; the larger plan is kept only when
        it keeps the budget."""
        budget = selection.budget
        lo, hi = self.kept_internal.get(budget, 0.0), math.inf
        gain = self.gain_of(selection.chosen)
        measured = m.bound if m.bound is not None else m.value
        if lo <= 0 or measured >= ROOM * budget:
            return selection
        for _ in range(SEQ_ROUNDS):
            t0 = time.perf_counter()
            internal = (lo * min(2.0, 0.95 * budget / max(measured, 1e-12)) if hi == math.inf
                        else math.sqrt(lo * hi))
            if hi < math.inf and hi / lo < 1.0 + BRACKET:
                break
            chosen = self.plan_for(internal)
            this = self.gain_of(chosen)
            if this <= gain:
                lo = internal
                continue
            self._tick("sequential refit", 0, 1)
            model, cal, _ = self.sequential_model(chosen)
            m2 = self.measure(model)
            ok = self.keeps(m2, budget)
            verdict = None
            if ok and self.objective == "latency" and self.timing.confirm and self.options.quantize is None:
                verdict = self._time_whole(model)
                ok = verdict.convert
            self.attempts[budget] = (*self.attempts.get(budget, ()),
                                     Attempt(internal, len(chosen), m2.value, m2.bound, ok, this, "sequential"))
            self.phases["sequential refit"] = round(self.phases.get("sequential refit", 0.0)
                                                    + time.perf_counter() - t0, 3)
            if not ok:
                hi = internal
                continue
            lo, measured = internal, (m2.bound if m2.bound is not None else m2.value)
            selection = self._adopt(selection, chosen, m2, model, " (room left by the sequential refit)",
                                    calibration=cal, end_to_end=verdict or selection.end_to_end, dropped=())
            gain = this
        return selection

    # -- 6. --quantize int8: the deployed precision --------------------------------------------------

    def quantized(self, selection: Selection) -> Selection:
        """``--quantize int8``: the chosen model is equalized and quantized
        (:mod:`convtool.runtime.quantize`, on the fit samples) and measured on the held-out
        samples against the FLOAT original - the budget applies to what is deployed.  When it
        breaks the budget, plans for smaller float budgets (scaled by ``budget / measured``)
        are tried, at most :data:`QUANT_ATTEMPTS` quantizations.  The kept one is then timed
        against the INT8-quantized original (what the user would otherwise ship); when it is not
        faster beyond noise the plan is dropped: the original layers are kept, quantized, with
        a warning.  The summary's ``quantization_attempts`` lists each try."""
        from convtool.graph.equalize import equalize_model
        from convtool.runtime.quantize import quantize_model

        q = self.options.quantize
        if q is None or self.data is None:
            return selection
        budget = selection.budget
        self.int8_original()
        attempts = self.q_attempts.setdefault(budget, [])
        current, scale = selection, 1.0
        for attempt in range(QUANT_ATTEMPTS):
            if not current.chosen:
                break
            self._tick("quantizing", attempt, QUANT_ATTEMPTS)
            conv = convert(self.model, self.base, self.plan_of(current.chosen), source=self.source, count_macs=False)
            model, pairs = (equalize_model(current.model, conv.record.layers) if q.equalize
                            else (current.model, []))
            qm = quantize_model(model, self.fit, q)
            m = self.measure(qm.model)
            ok = self.keeps(m, budget)
            verdict = self._time_pair(self._q_original.model, qm.model) if ok and self.timing.confirm else None
            faster = verdict is None or verdict.convert
            attempts.append({"layers": len(current.chosen), "float_drift": current.value, "drift": m.value,
                             "bound": m.bound, "kept": ok and faster,
                             "speedup_vs_int8": None if verdict is None else verdict.speedup,
                             "ci_low": None if verdict is None else verdict.ci_low,
                             "ci_high": None if verdict is None else verdict.ci_high})
            if ok and faster:
                summary = replace(qm.summary, equalized=tuple(pairs), drift=m.drift.drift,
                                  drift_samples=self.held.count)
                return replace(current, value=m.value, drift=m.drift, bound=m.bound, model=qm.model,
                               quantization=summary, end_to_end=verdict or current.end_to_end)
            if ok and not faster:
                break  # a smaller plan is no faster: the INT8 original wins
            scale *= 0.95 * budget / max(m.value, 1e-12)
            current = self.select(budget * scale, promise=budget)
        if not attempts:
            why = "the float search converted no layer"
        elif (attempts[-1]["bound"] or attempts[-1]["drift"]) > budget:
            why = "no converted plan kept the budget once quantized"
        else:
            why = "the quantized converted model was not faster than the INT8-quantized original"
        warning = f"--quantize int8: {why}; kept the original layers (quantized)"
        m0 = self._q_original_measured
        summary = replace(self._q_original.summary, drift=m0.drift.drift, drift_samples=self.held.count)
        notes = {**selection.notes, **{n: f"left unconverted: {why}" for n in selection.chosen}}
        overrides = {n: Override(rank=0, reason=f"left unconverted by --max-drift: {why}") for n in self.names}
        return replace(selection, chosen={}, overrides=overrides, value=m0.value, drift=m0.drift, bound=m0.bound,
                       model=self._q_original.model, notes=notes, quantization=summary, calibration=None,
                       warnings=[*selection.warnings, warning])

    def int8_original(self):
        """The INT8-quantized original (:func:`convtool.runtime.quantize.quantize_model` on the fit
        samples, ``--quantize`` options or the defaults), made once per search; ``.model``,
        ``.summary``."""
        from convtool.options import QuantizeOptions
        from convtool.runtime.quantize import quantize_model

        if self._q_original is None:
            self._tick("quantizing the original", 0, 1)
            self._q_original = quantize_model(self.model, self.fit, self.options.quantize or QuantizeOptions())
            self._q_original_measured = self.measure(self._q_original.model)
        return self._q_original

    def _time_pair(self, a: onnx.ModelProto, b: onnx.ModelProto) -> Verdict:
        return latency.confirm(a, b, self.timing, self.options.input_shape_map,
                               progress=None if self.progress is None else
                               (lambda d, t: self._tick("timing models", d, t)))

    # -- 5. --finetune: deeper plans, certified after fine-tuning -----------------------------------

    def deepen(self, selection: Selection) -> Selection:
        """With ``--finetune``: fine-tune the chosen plan, then plans selected at looser internal
        budgets (each refitted, fine-tuned for at most ``--finetune-seconds`` and measured on the
        held-out samples), and keep the deepest one whose fine-tuned drift - its bound - keeps
        the budget (and, under ``latency``, that is faster end to end).  The internal budget
        doubles after a kept attempt and is bisected after a rejected one, for at most
        :data:`FINETUNE_ATTEMPTS` fine-tunes; every attempt is recorded."""
        from convtool.search import finetune as ft

        ftopt = self.options.finetune
        if ftopt is None or not self.refit:
            return selection
        budget = selection.budget
        top = self._knapsack()[2]
        start = self.kept_internal.get(budget, 0.0)
        best, tried = selection, []
        gain = self.gain_of(selection.chosen)
        lo, hi, internal = start, math.inf, start
        for attempt in range(FINETUNE_ATTEMPTS):
            t0 = time.perf_counter()
            if attempt == 0:
                chosen = dict(selection.chosen)
            else:
                internal = min(top, internal * 2.0 if hi == math.inf else math.sqrt(max(lo, 1e-12) * hi))
                chosen = self.plan_for(internal)
                if self.plan_key(self.plan_of(chosen)) in tried or not chosen:
                    break
            tried.append(self.plan_key(self.plan_of(chosen)))
            self._tick("fine-tuning plans", attempt, FINETUNE_ATTEMPTS)
            model, cal, layers = self.sequential_model(chosen)
            before = self.measure(model)
            tuned = ft.finetune(self.model, model, layers, self.fit, self.held, ftopt, batch_size=self.batch)
            m = self.measure(tuned.model)
            verdict = None
            ok = self.keeps(m, budget)
            if ok and self.objective == "latency" and self.timing.confirm and attempt > 0:
                verdict = self._time_whole(tuned.model)
                ok = verdict.convert
            this = self.gain_of(chosen)
            self.ft_attempts.setdefault(budget, []).append(
                {"internal_budget": internal, "layers": len(chosen), "gain": this, "drift_before": before.value,
                 "drift": m.value, "bound": m.bound, "kept": ok, "finetune_kept": tuned.summary.kept,
                 "steps": tuned.summary.steps, "seconds": round(time.perf_counter() - t0, 3)})
            if ok and (attempt == 0 or this > gain):
                best = self._adopt(best, chosen, m, tuned.model, " after fine-tuning", factors=self.cal.factors,
                                   calibration=cal, end_to_end=verdict or best.end_to_end, finetune=tuned.summary)
                gain, lo = this, internal
            elif attempt > 0:
                hi = internal
            if attempt > 0 and hi < math.inf and hi / max(lo, 1e-12) < 1.0 + BRACKET:
                break
        self._tick("fine-tuning plans", FINETUNE_ATTEMPTS, FINETUNE_ATTEMPTS)
        return best

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
            dropped=selection.dropped, slower=selection.slower, bound=selection.bound,
            certified=selection.bound is not None and selection.bound <= selection.budget,
            attempts=tuple(a.to_dict() for a in self.attempts.get(selection.budget, ())),
            phases=dict(self.phases), capture_bytes=self.capture_bytes,
            finetune_attempts=tuple(self.ft_attempts.get(selection.budget, ())),
            quantization_attempts=tuple(self.q_attempts.get(selection.budget, ())),
            local_drift=self._memo.get(self.plan_key(selection.overrides), Measured(selection.value, selection.drift,
                                                                                   None)).value)

    def result(self, selection: Selection) -> SearchResult:
        choices: dict[str, latency.LayerChoice] = {}
        for name, timed in self.timed_all.items():  # the record lists every timed form of every rank
            c = selection.chosen.get(name)
            reason = c.timing if c is not None else self.choices[name].reason
            choices[name] = latency.LayerChoice(None, reason or "", list(timed),
                                                chosen=None if c is None else (c.rank, c.layout))
        return SearchResult(selection.overrides, self.summary(selection), tuple(self.warnings + selection.warnings),
                            self.fit if self.refit else None, self.cache, dict(selection.notes), choices,
                            self.latency_summary(selection), selection.factors, selection.model,
                            selection.calibration, selection.finetune, selection.quantization)


def _best_speedup(choice: latency.LayerChoice) -> float:
    return max((c.verdict.speedup for c in choice.candidates), default=0.0)


def search(model: onnx.ModelProto, options: ConvertOptions, data: Dataset | None, *, source: str = "<memory>",
           progress: Progress | None = None) -> SearchResult:
    """Choose per-layer ranks and layouts under ``options.max_drift`` (see the module docstring)."""
    if options.max_drift is None:
        raise ValueError("search needs options.max_drift")
    s = BudgetSearch(model, options, data, source=source, progress=progress).analyse()
    selection, factors = s.final(float(options.max_drift))
    log.info("max-drift search: %d evaluations, drift %.4g (budget %g)", s.evaluations, selection.value,
             selection.budget)
    result = s.result(selection)
    return replace(result, factors=factors, summary=replace(result.summary, factors=factors))
