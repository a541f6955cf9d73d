"""Latency-aware selection (``--latency-aware``): per layer, which replacement (if any) is
measurably faster, and the end-to-end check.

For each candidate Conv the planner's decision is turned into the candidate layouts worth
timing (:func:`convtool.core.plan.candidate_layouts`), each candidate is timed against the
original conv at the layer's real input shape (one-layer models from
:mod:`convtool.graph.single`, interleaved ABBA timing from :mod:`convtool.runtime.timing`,
cached by :mod:`convtool.search.cache`), and :func:`convtool.core.decide.verdict` decides.
Among the candidates that pass, the fastest wins; when none passes the layer keeps its
original conv, and the reason quotes the best candidate's measurement.  The result is a plan
of per-layer overrides for the pure conversion step.

:func:`confirm` then times the whole original and converted models (interleaved A/B) with the
same session options; the caller keeps the original when the converted model is not faster
beyond noise, so ``--latency-aware`` never hands out a model measurably slower than its input.

How long a pair is timed: as long as it takes to decide, within caps.  Timing runs in rounds
of fresh sessions (:func:`convtool.runtime.timing.time_rounds`) and looks at the interval of
:func:`convtool.core.decide.speedup` at ``min_runs``, twice that, ... up to ``max_runs``; it
stops at the first look where the rule decides (:func:`convtool.core.decide.resolved`), or when
``budget_ms`` of wall time is spent (``confirm_runs`` / ``confirm_max_runs`` /
``confirm_budget_ms`` for the whole model).  A pair the cap leaves undecided keeps the original
and says "not resolved at N runs".  The cache stores the paired runs with their rounds; an
entry that does not decide and was not written by this sequential timing (an older cache) is
timed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from convtool.core.decide import Verdict, resolved, verdict
from convtool.core.plan import Decision, Override, candidate_layouts, plan_layer
from convtool.errors import ConvToolError
from convtool.graph.select import ConvSite
from convtool.graph.single import ConvShape, conv_shape, original_model, replacement_model
from convtool.options import ConvertOptions, LatencyOptions, QuantizeOptions, SessionOptions
from convtool.records import EndToEnd, LatencySummary, LayerChange
from convtool.runtime.inputs import random_feeds
from convtool.runtime.session import make_session
from convtool.runtime.timing import Rounds, per_round, schedule, time_rounds
from convtool.search.cache import TimingCache, timing_key

__all__ = ["Candidate", "LayerChoice", "LayerTuner", "PairedTimes", "choose", "confirm", "summary_of", "tensor_shapes",
           "time_pair", "tune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    layout: str
    rank: int
    verdict: Verdict
    cached: bool


@dataclass
class LayerChoice:
    """The outcome for one layer: the winning decision (``None``: keep the original conv)."""

    decision: Decision | None
    reason: str
    candidates: list[Candidate] = field(default_factory=list)
    chosen: tuple[int, str] | None = None  # (rank, layout) a driver picked among ``candidates``

    @property
    def best(self) -> Candidate | None:
        if self.chosen is not None:
            picked = [c for c in self.candidates if (c.rank, c.layout) == self.chosen]
        else:
            picked = [c for c in self.candidates if self.decision is not None and c.layout == self.decision.layout]
        if picked:
            return picked[0]
        return max(self.candidates, key=lambda c: c.verdict.speedup, default=None)

    def layer_fields(self) -> dict[str, Any]:
        """The :class:`~convtool.records.LayerChange` latency fields."""
        best = self.best
        fields: dict[str, Any] = {"latency_decision": self.reason}
        if best is not None:
            fields.update(latency_original_ms=best.verdict.original_ms,
                          latency_replacement_ms=best.verdict.replacement_ms, latency_speedup=best.verdict.speedup,
                          latency_ci_low=best.verdict.ci_low, latency_ci_high=best.verdict.ci_high,
                          latency_resolved=best.verdict.resolved,
                          latency_candidates=[{"layout": c.layout, "rank": c.rank, "original_ms": c.verdict.original_ms,
                                               "replacement_ms": c.verdict.replacement_ms, "speedup": c.verdict.speedup,
                                               "ci_low": c.verdict.ci_low, "ci_high": c.verdict.ci_high,
                                               "runs": c.verdict.runs, "resolved": c.verdict.resolved,
                                               "cached": c.cached}
                                              for c in self.candidates])
        return fields


def choose(candidates: Sequence[tuple[Decision, Candidate]]) -> LayerChoice:
    """Pure: the fastest passing candidate, else keep the original with the best one's reason."""
    if not candidates:
        return LayerChoice(None, "no replacement to measure")
    passing = [(d, c) for d, c in candidates if c.verdict.convert]
    if passing:
        d, c = max(passing, key=lambda dc: dc[1].verdict.speedup)
        return LayerChoice(d, c.verdict.reason, [c for _, c in candidates])
    _, best = max(candidates, key=lambda dc: dc[1].verdict.speedup)
    return LayerChoice(None, best.verdict.reason, [c for _, c in candidates])


def tensor_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None,
                  needed: Sequence[str] = ()) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor shape inference can resolve (name -> dims); those of
    ``needed`` tensors it cannot resolve are observed in one onnxruntime run
    (:func:`convtool.runtime.observe.known_shapes`)."""
    from convtool.runtime.observe import known_shapes

    return known_shapes(model, input_shapes, needed)


class PairedTimes(tuple):
    """``(original_ms, replacement_ms)`` - unpacks like the plain pair it replaces - plus how the
    runs were taken: ``rounds`` (the round of each pair), ``looks`` (planned), ``stopped``."""

    rounds: tuple[int, ...] | None
    looks: int
    stopped: str

    def __new__(cls, original_ms: list[float], replacement_ms: list[float], rounds: Sequence[int] | None = None,
                looks: int = 1, stopped: str = "runs") -> PairedTimes:
        self = super().__new__(cls, (original_ms, replacement_ms))
        self.rounds = None if rounds is None else tuple(int(r) for r in rounds)
        self.looks = int(looks)
        self.stopped = stopped
        return self

    @classmethod
    def of(cls, timed: Rounds) -> PairedTimes:
        a, b = timed.stats[0], timed.stats[-1]
        return cls(list(a.samples), list(b.samples), timed.rounds, timed.looks, timed.stopped)


def _stop(margin: float, looks: int) -> Callable[[list[list[float]], list[int]], bool]:
    """A :func:`~convtool.runtime.timing.time_rounds` stop rule: the rule decides the pair."""
    def stop(samples: list[list[float]], rounds: list[int]) -> bool:
        return resolved(samples[0], samples[1], margin=margin, rounds=rounds, looks=looks)
    return stop


def time_pair(original: onnx.ModelProto, replacement: onnx.ModelProto, shape: ConvShape, session: SessionOptions, *,
              budget_ms: float, min_runs: int, max_runs: int, warmup: int = 3, margin: float = 0.0) -> PairedTimes:
    """Paired timed runs (ms) of both one-layer models, interleaved ABBA in rounds of fresh
    sessions; run ``i`` of each is a pair.  Stops when :func:`convtool.core.decide.resolved`
    (with ``margin``) decides at a look, at ``max_runs`` or after ``budget_ms`` of wall time."""
    models = [original, replacement]
    feeds = {"x": np.random.default_rng(0).standard_normal(shape.x_shape).astype(np.dtype(shape.dtype))}
    looks = schedule(min_runs, max_runs)
    timed = time_rounds([lambda m=m: make_session(m, session) for m in models], [feeds, feeds], looks=looks,
                        per_round=per_round(looks[0]), warmup=warmup, stop=_stop(margin, len(looks)),
                        max_seconds=budget_ms / 1000.0)
    return PairedTimes.of(timed)


class LayerTuner:
    """Times candidate replacements of single layers, with an on-disk cache."""

    def __init__(self, latency: LatencyOptions, opset: int, cache: TimingCache | None = None,
                 quantize: QuantizeOptions | None = None):
        """``quantize``: time both one-layer models INT8-quantized as ``--quantize int8`` would
        deploy them (:func:`convtool.runtime.quantize.quantize_for_timing`), so that forms
        onnxruntime's integer kernels run slowly are never chosen."""
        from convtool.runtime.session import environment

        self.quantize = quantize
        self.latency = latency
        self.opset = opset
        self.session = latency.session
        self.cache = cache if cache is not None else TimingCache(latency.cache_dir, enabled=latency.use_cache)
        env = environment(latency.session)  # onnxruntime is imported in runtime/ only
        self.ort_version = env.onnxruntime
        self.cpu = env.cpu
        self.measured = 0

    def key(self, shape: ConvShape, rank: int, layout: str) -> dict[str, Any]:
        key = timing_key(
            x_shape=shape.x_shape, dtype=shape.dtype, kernel=shape.kernel, in_channels=shape.in_channels,
            out_channels=shape.out_channels, group=shape.group, strides=shape.strides, pads=shape.pads,
            dilations=shape.dilations, auto_pad=shape.auto_pad, bias=shape.bias, rank=rank, layout=layout,
            threads=self.session.threads or 0, opt_level=self.session.opt_level,
            allow_spinning=self.session.spinning, onnxruntime=self.ort_version, cpu=self.cpu,
        )
        if tuple(self.session.providers) != ("CPUExecutionProvider",):
            key["providers"] = list(self.session.providers)
        if self.quantize is not None:
            key["precision"] = "int8: " + self.quantize.describe()
        return key

    def measure(self, shape: ConvShape, decision: Decision) -> Candidate:
        key = self.key(shape, decision.rank, decision.layout)
        hit = self.cache.get(key)
        what = f"at rank {decision.rank} ({decision.layout}){', INT8' if self.quantize is not None else ''}"
        if hit is not None:
            v = verdict(hit.original_ms, hit.replacement_ms, margin=self.latency.margin, what=what, source="cached",
                        rounds=hit.rounds, looks=hit.looks)
            if v.resolved or hit.final:
                return Candidate(decision.layout, decision.rank, v, True)
            self.cache.hits -= 1  # an older entry that does not decide: time it again
            self.cache.misses += 1
        log.info("timing %s %s", decision.layer.name, what)
        original, replacement = (original_model(shape, decision.weight, decision.bias, self.opset),
                                 replacement_model(shape, decision, self.opset))
        if self.quantize is not None:
            from convtool.runtime.quantize import quantize_for_timing

            original, replacement = (quantize_for_timing(original, self.quantize),
                                     quantize_for_timing(replacement, self.quantize))
        timed = time_pair(
            original, replacement, shape, self.session,
            budget_ms=self.latency.budget_ms, min_runs=self.latency.min_runs, max_runs=self.latency.max_runs,
            margin=self.latency.margin,
        )
        a, b = timed
        rounds, looks = getattr(timed, "rounds", None), getattr(timed, "looks", 1)
        self.measured += 1
        self.cache.put(key, a, b, rounds=rounds, looks=looks)
        v = verdict(a, b, margin=self.latency.margin, what=what, source="measured", rounds=rounds, looks=looks)
        return Candidate(decision.layout, decision.rank, v, False)

    def evaluate(self, site: ConvSite, decision: Decision, layout: str, override: Override | None,
                 x_shape: tuple[int, ...] | None, policy) -> LayerChoice:
        """Time every candidate layout of ``site`` and pick one (or none)."""
        if x_shape is None:
            return LayerChoice(None, "input shape unknown, cannot measure latency (fix it with --input-shape)")
        pairs: list[tuple[Decision, Candidate]] = []
        failed = ""
        for candidate in candidate_layouts(site.layer, layout, decision.rank):
            d = decision if candidate == decision.layout else plan_layer(
                site.layer, policy, candidate, Override(rank=decision.rank) if override is None else
                Override(rank=override.rank if override.rank is not None else decision.rank))
            if not isinstance(d, Decision) or any(p[0].layout == d.layout for p in pairs):
                continue  # would not reduce MACs, or the same form as one already timed
            try:
                pairs.append((d, self.measure(conv_shape(site.node, d, x_shape), d)))
            except ConvToolError as exc:  # onnxruntime refused one of the one-layer models
                log.warning("%s: cannot time the %s replacement: %s", site.name, d.layout, exc)
                failed = f"could not be timed: {exc}"
        if not pairs and failed:
            return LayerChoice(None, f"replacement {failed}")
        return choose(pairs)


@dataclass
class Tuning:
    """What :func:`tune` decided: the plan for the conversion step and each layer's choice."""

    overrides: dict[str, Override]
    choices: dict[str, LayerChoice]
    tuner: LayerTuner
    warnings: list[str]


def tune(model: onnx.ModelProto, options: ConvertOptions, planned, overrides: Mapping[str, Override] | None = None,
         progress: Callable[[int, int], None] | None = None) -> Tuning:
    """Time every candidate of ``planned`` (a :class:`convtool.convert.Planned`); a plan that
    converts only the layers measured faster, in their fastest layout."""
    lat = options.latency_aware
    assert lat is not None
    from convtool.runtime.session import check_providers

    check_providers(tuple(lat.providers))
    overrides = dict(overrides or {})
    warnings: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    try:
        conv_inputs = [site.node.inputs[0].name for site, _ in planned.candidates()]
        shapes = tensor_shapes(model, options.input_shape_map, conv_inputs)
    except ConvToolError as exc:
        warnings.append(f"--latency-aware: input shapes unknown ({exc}); no layer can be measured")
        shapes = {}
    tuner = LayerTuner(lat, opset, quantize=options.quantize)
    choices: dict[str, LayerChoice] = {}
    todo = planned.candidates()
    for i, (site, decision) in enumerate(todo):
        if progress is not None:
            progress(i, len(todo))
        choice = tuner.evaluate(site, decision, options.layout, overrides.get(site.name),
                                shapes.get(site.node.inputs[0].name), options.rank)
        choices[site.name] = choice
        if choice.decision is None:
            overrides[site.name] = Override(rank=0, reason=choice.reason)
        else:
            overrides[site.name] = Override(rank=choice.decision.rank, layout=choice.decision.layout)
    if progress is not None:
        progress(len(todo), len(todo))
    return Tuning(overrides, choices, tuner, warnings)


def confirm(original: onnx.ModelProto, converted: onnx.ModelProto, latency: LatencyOptions,
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            progress: Callable[[int, int], None] | None = None) -> Verdict:
    """Whole-model interleaved A/B of ``original`` against ``converted`` (margin 0), in rounds of
    fresh sessions until the interval excludes 1 or a cap is reached (module docstring); an
    undecided verdict is ``resolved=False`` and does not convert."""
    feeds = random_feeds(original, input_shapes)
    looks = schedule(latency.confirm_runs, max(latency.confirm_runs, latency.confirm_max_runs))
    timed = time_rounds([lambda m=m: make_session(m, latency.session) for m in (original, converted)],
                        [feeds, feeds], looks=looks, per_round=per_round(looks[0]), warmup=3,
                        stop=_stop(0.0, len(looks)), max_seconds=latency.confirm_budget_ms / 1000.0, progress=progress)
    a, b = timed.stats
    return verdict(a.samples, b.samples, margin=0.0, what="end to end", rounds=timed.rounds, looks=timed.looks)


def summary(tuning: Tuning, latency: LatencyOptions, v: Verdict | None, reverted: bool) -> LatencySummary:
    return summary_of(tuning.tuner, latency, v, reverted)


def end_to_end(v: Verdict) -> EndToEnd:
    """The record of a whole-model A/B verdict."""
    return EndToEnd(v.original_ms, v.replacement_ms, v.speedup, v.ci_low, v.ci_high, v.runs)


def summary_of(tuner: LayerTuner, latency: LatencyOptions, v: Verdict | None, reverted: bool) -> LatencySummary:
    """How ``tuner`` measured (session options, cache) and the end-to-end verdict ``v``."""
    e2e = None if v is None else end_to_end(v)
    return LatencySummary(
        threads=latency.threads, opt_level=latency.opt_level, allow_spinning=False, onnxruntime=tuner.ort_version,
        cpu=tuner.cpu, margin=latency.margin, layers_measured=tuner.measured, cache_hits=tuner.cache.hits,
        cache_dir=str(tuner.cache.root) if tuner.cache.enabled else None, end_to_end=e2e, reverted=reverted,
        providers=tuple(latency.providers))


def apply_choices(layers: Sequence[LayerChange], choices: Mapping[str, LayerChoice]) -> None:
    """Copy each measured layer's timing fields into its record entry."""
    for layer in layers:
        choice = choices.get(layer.name)
        if choice is not None:
            for k, v in choice.layer_fields().items():
                setattr(layer, k, v)
