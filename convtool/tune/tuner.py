"""Latency-aware selection: per layer, which replacement (if any) is measurably faster.

For each candidate Conv the planner's decision is turned into the candidate layouts worth
timing (:func:`candidate_layouts`), each candidate is timed against the original conv at the
layer's real input shape (:mod:`convtool.tune.layer`, cached by :mod:`convtool.tune.cache`),
and :func:`convtool.tune.decide.verdict` decides.  Among the candidates that pass, the fastest
wins; when none passes the layer keeps its original conv, and the reason quotes the best
candidate's measurement.  :func:`confirm` then times the whole original and converted models
(interleaved A/B) with the same session options.

Candidates (``--layout auto``): depthwise-first ``multiplier`` at rank 1; at rank >= 2 the
multiplier-1 forms ``repeat`` and ``branches`` as well as ``multiplier``; plus
``pointwise_first`` for stride-1 layers with more input than output channels.  An explicit
``--layout`` is the only candidate.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from convtool.bench.latency import SessionConfig, cpu_model, make_session, random_feeds, time_models
from convtool.errors import ConvToolError
from convtool.graph.select import ConvSite
from convtool.options import ConvertOptions, LatencyOptions
from convtool.plan import Decision, plan_site
from convtool.tune.cache import TimingCache, timing_key
from convtool.tune.decide import Verdict, verdict
from convtool.tune.layer import ConvShape, conv_shape, original_model, replacement_model, time_pair

__all__ = ["Candidate", "LayerChoice", "LayerTuner", "candidate_layouts", "choose", "confirm", "conv_input_shapes"]

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

    @property
    def best(self) -> Candidate | None:
        chosen = [c for c in self.candidates if self.decision is not None and c.layout == self.decision.layout]
        if chosen:
            return chosen[0]
        return max(self.candidates, key=lambda c: c.verdict.speedup, default=None)


def candidate_layouts(site: ConvSite, options: ConvertOptions, rank: int) -> list[str]:
    """The layouts worth timing for ``site`` (see the module docstring)."""
    if options.layout != "auto":
        return [options.layout]
    layouts = ["multiplier"] if rank <= 1 else ["repeat", "branches", "multiplier"]
    geo = site.geometry
    strides = site.node.attrs.get("strides", [1] * len(geo.kernel))
    if geo.in_channels > geo.out_channels and all(int(s) == 1 for s in strides):
        layouts.append("pointwise_first")
    return layouts


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


def conv_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor shape inference can resolve (name -> dims)."""
    from convtool.analysis.shapes import infer_skeleton

    inferred = infer_skeleton(model, input_shapes)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.WhichOneof("value") == "dim_value" else 0 for d in t.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = tuple(dims)
    return shapes


class LayerTuner:
    """Times candidate replacements of single layers, with an on-disk cache."""

    def __init__(self, latency: LatencyOptions, opset: int, cache: TimingCache | None = None,
                 progress: Callable[[str], None] | None = None):
        import onnxruntime as ort

        self.latency = latency
        self.opset = opset
        self.config = SessionConfig(threads=latency.threads, opt_level=latency.opt_level,  # type: ignore[arg-type]
                                    allow_spinning=False)
        self.cache = cache if cache is not None else TimingCache(latency.cache_dir, enabled=latency.use_cache)
        self.ort_version = ort.__version__
        self.cpu = cpu_model()
        self.progress = progress
        self.measured = 0

    def key(self, shape: ConvShape, rank: int, layout: str) -> dict[str, Any]:
        return timing_key(
            x_shape=shape.x_shape, dtype=shape.dtype, kernel=shape.kernel, in_channels=shape.in_channels,
            out_channels=shape.out_channels, group=shape.group, strides=shape.strides, pads=shape.pads,
            dilations=shape.dilations, auto_pad=shape.auto_pad, bias=shape.bias, rank=rank, layout=layout,
            threads=self.config.threads, opt_level=self.config.opt_level,
            allow_spinning=self.config.allow_spinning, onnxruntime=self.ort_version, cpu=self.cpu,
        )

    def measure(self, shape: ConvShape, decision: Decision) -> Candidate:
        key = self.key(shape, decision.rank, decision.layout)
        hit = self.cache.get(key)
        what = f"at rank {decision.rank} ({decision.layout})"
        if hit is not None:
            v = verdict(hit.original_ms, hit.replacement_ms, margin=self.latency.margin, what=what, source="cached")
            return Candidate(decision.layout, decision.rank, v, True)
        if self.progress is not None:
            self.progress(f"timing {decision.site.name} {what}")
        a, b = time_pair(
            original_model(shape, decision.weight, decision.bias, self.opset),
            replacement_model(shape, decision, self.opset), shape, self.config,
            budget_ms=self.latency.budget_ms, min_runs=self.latency.min_runs, max_runs=self.latency.max_runs,
        )
        self.measured += 1
        self.cache.put(key, a, b)
        v = verdict(a, b, margin=self.latency.margin, what=what, source="measured")
        return Candidate(decision.layout, decision.rank, v, False)

    def evaluate(self, site: ConvSite, decision: Decision, options: ConvertOptions,
                 x_shape: tuple[int, ...] | None) -> LayerChoice:
        """Time every candidate layout of ``site`` and pick one (or none)."""
        if x_shape is None:
            return LayerChoice(None, "input shape unknown, cannot measure latency (fix it with --input-shape)")
        pairs: list[tuple[Decision, Candidate]] = []
        failed = ""
        for layout in candidate_layouts(site, options, decision.rank):
            d = decision if layout == decision.layout else plan_site(site, dataclasses.replace(options, layout=layout))
            if isinstance(d, str) or any(p[0].layout == d.layout for p in pairs):
                continue  # would not reduce MACs, or the same form as one already timed
            shape = conv_shape(site, x_shape, d.bias is not None)
            try:
                pairs.append((d, self.measure(shape, d)))
            except ConvToolError as exc:  # onnxruntime refused one of the one-layer models
                log.warning("%s: cannot time the %s replacement: %s", site.name, d.layout, exc)
                failed = f"could not be timed: {exc}"
        if not pairs and failed:
            return LayerChoice(None, f"replacement {failed}")
        return choose(pairs)


def confirm(original: onnx.ModelProto, converted: onnx.ModelProto, latency: LatencyOptions,
            input_shapes: Mapping[str, Sequence[int]] | None = None) -> Verdict:
    """Whole-model interleaved A/B of ``original`` against ``converted`` (margin 0)."""
    config = SessionConfig(threads=latency.threads, opt_level=latency.opt_level,  # type: ignore[arg-type]
                           allow_spinning=False)
    feeds = random_feeds(original, input_shapes)
    sessions = [make_session(original, config), make_session(converted, config)]
    a, b = time_models(sessions, [feeds, feeds], runs=latency.confirm_runs, warmup=3)
    return verdict(a.samples, b.samples, margin=0.0, what="end to end")
