"""The calibration driver: capture activations with onnxruntime, refit each converted layer.

How it works
------------
For each converted layer, in the converted graph's topological order:

1. ``Y``: the ORIGINAL model runs with the layer's output tensor exposed (the tensor the
   pointwise conv writes: the Conv's output, or the folded BatchNormalization's output - the
   same name exists in both models).  When a BatchNormalization was *not* folded
   (``--no-fold-bn``) that tensor is the pre-BatchNorm output, which is what the pointwise conv
   must reproduce.
2. ``Z``: the CONVERTED model - in which every earlier layer has already been refitted - runs
   with the depthwise output (the input of ``<layer>.pw``) exposed.  Fitting ``Y`` from this
   ``Z`` makes each layer compensate the errors of the layers before it instead of
   accumulating them (on a digits CNN at rank 1 this "sequential" form kept 99.4% top-1 where
   refitting from the original model's activations, the "local" form, gave 87%).
3. :mod:`convtool.core.refit` accumulates the normal equations batch by batch (only one batch
   of one layer's ``Z`` and ``Y`` is alive at a time), solves the ridge least squares per
   group, keeps the solution only if it lowers the held-out error, and the new pointwise
   weight and bias are written into the converted model (:mod:`convtool.graph.weights`) before
   the next layer.

Cost: per converted layer two onnxruntime sessions are built, each on the prefix of the graph
that the exposed tensor needs (:func:`convtool.graph.prefix.prefix_model`), and every
calibration sample runs once through both prefixes.  Positions are subsampled (seeded) above
``CalibrationOptions.max_positions`` per batch.

Data-aware factors (the default, ``CalibrationOptions.factors == "data-aware"``): instead of
``Z``, the layer's INPUT ``X`` in the converted model is captured and its input-patch moments
streamed (:class:`convtool.core.als.PatchMoments`, fit and held-out samples apart); both
factors are then fitted by alternating least squares from a whitened-SVD start
(:mod:`convtool.core.als`), which also computes the pointwise-only refit and the data-free
factors on the same moments.  The candidate with the lowest held-out error is written into
the model (:func:`convtool.graph.weights.write_factors`, every layout, ``pointwise_first``
included), so a layer never gets worse on held-out data than its data-free factors.  Layers
whose moments cannot cover the fit (a large layer at a rank above its moment subspace, or a
large ``pointwise_first`` layer) fall back to the pointwise refit below.

Pointwise refit (``"pointwise"``, and the fallback): layers that end with 1x1 Convs are
refitted: ``multiplier`` and ``repeat`` end with one, ``branches`` with a Sum of one per branch
(solved jointly, as one map of the concatenated branch inputs; the bias goes to branch 0).
``pointwise_first`` ends with the spatial Conv and is left as factorised, which the record says.

Reuse: a layer's refit depends only on the converted layers up to it (in graph order) and
their data-free weights.  A :class:`RefitCache` passed in by a caller that converts the same
model many times (the drift-budget search) keys solved refits by that prefix, so trials that
share a prefix do not solve the same layers again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from convtool.core.als import ALSResult, PatchMoments, fit_depthwise_first, fit_pointwise_first
from convtool.core.conv import explicit_pads
from convtool.core.factorize import Factors
from convtool.core.plan import Decision
from convtool.core.refit import NormalEquations, RefitResult, augment, few_blas_threads, refit, split_augmented
from convtool.core.skip import Skip
from convtool.graph import weights
from convtool.graph.export import copy_model
from convtool.graph.prefix import prefix_model
from convtool.options import CalibrationOptions
from convtool.records import CalibrationSummary, LayerChange, LayerRefit
from convtool.runtime.inputs import Dataset, batches, fixed_batch
from convtool.runtime.run import COMPUTE
from convtool.runtime.session import make_session

log = logging.getLogger(__name__)

__all__ = ["LayerTarget", "RefitCache", "refit_layers", "targets"]

METHOD = "sequential ridge least squares of the pointwise weights and bias (towards the data-free factors)"
#: Per batch, at most this many positions per moment dimension enter the patch moments: their
#: cost is ``(D + 1)^2`` per position, and ~32 positions per dimension and batch (a few hundred
#: over a calibration set) estimate them well; the held-out check guards the rest.
MOMENT_POSITIONS_PER_DIM = 32
#: Depthwise steps up to this many unknowns are solved densely (a 1536-unknown solve is ~1 s of
#: float64 at one thread per alpha and round); above, preconditioned CG.
DENSE_LIMIT = 1536
METHOD_ALS = ("sequential data-aware factors: alternating least squares of the depthwise and pointwise weights "
              "on input-patch moments, from a whitened SVD, kept per layer only where the held-out error drops")


@dataclass(frozen=True)
class LayerTarget:
    """What the refit needs to find a converted layer in the converted graph."""

    name: str  # the original Conv's label
    final_node: str  # the node writing the original output tensor
    layout: str
    nodes: tuple[str, ...] = ()  # every node the layer was emitted as, in emission order


def targets(layers: Sequence[LayerChange]) -> list[LayerTarget]:
    """The converted entries of a record's layers, as refit targets."""
    return [LayerTarget(layer.name, layer.new_nodes[-1], layer.layout or "multiplier", tuple(layer.new_nodes))
            for layer in layers if layer.converted and layer.new_nodes]


@dataclass
class RefitCache:
    """Solved refits keyed by the converted-layer prefix (see the module docstring)."""

    solved: dict[tuple, tuple[LayerRefit, object]] = field(default_factory=dict)  # record, what to write
    reused: int = 0


def _positions(total: int, cap: int, rng: np.random.Generator) -> np.ndarray | None:
    if not cap or total <= cap:
        return None
    return np.sort(rng.choice(total, cap, replace=False))


def _concat_groups(parts: list[np.ndarray], group: int) -> np.ndarray:
    """Branch inputs ``(N, g * d_j, *sp)`` -> ``(N, g * sum d_j, *sp)``, group-major, so that
    group ``gi`` of the result holds group ``gi`` of every branch, in branch order."""
    if len(parts) == 1:
        return parts[0]
    n, sp = parts[0].shape[0], parts[0].shape[2:]
    split = [p.reshape(n, group, p.shape[1] // group, *sp) for p in parts]
    return np.concatenate(split, axis=2).reshape(n, -1, *sp)


def _accumulate(original_sess, converted_sess, y_name: str, z_names: list[str], data: Dataset | None,
                model: onnx.ModelProto, group: int, options: CalibrationOptions,
                rng: np.random.Generator) -> NormalEquations | None:
    if data is None:
        return None
    eq: NormalEquations | None = None
    for feed in batches(data, model, options.batch_size):
        (y,) = original_sess.run([y_name], feed)
        z = _concat_groups(converted_sess.run(z_names, feed), group)
        if eq is None:
            eq = NormalEquations.empty(group, z.shape[1], y.shape[1])
        total = y.shape[0] * int(np.prod(y.shape[2:], dtype=np.int64))
        eq.update(z, y, _positions(total, options.max_positions, rng))
    return eq


def _digest(arrays: Sequence[np.ndarray | None]) -> str:
    h = hashlib.sha1()
    for arr in arrays:
        if arr is not None:
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _record(name: str, res: RefitResult) -> LayerRefit:
    return LayerRefit(
        name=name, refitted=res.accepted,
        reason=None if res.accepted else "refit did not lower the held-out error; data-free weights kept",
        alpha=res.alpha, output_error_before=res.error_before, output_error_after=res.error_after,
        all_samples_error_before=res.fit_error_before, all_samples_error_after=res.fit_error_after,
        fit_positions=res.fit_positions, held_out_positions=res.held_positions)


def refit_layers(original: onnx.ModelProto, converted: onnx.ModelProto, layers: Sequence[LayerChange],
                 data: Dataset, options: CalibrationOptions, cache: RefitCache | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 decisions: Mapping[str, Decision] | None = None) -> tuple[onnx.ModelProto, CalibrationSummary]:
    """Refit the converted ``layers`` in a copy of ``converted``, sequentially; returns the
    refitted model and the summary (``progress(done, total)`` per layer).  ``decisions`` (the
    conversion's, by layer name: the folded kernels) enable the data-aware factors."""
    with few_blas_threads():
        return _refit_layers(original, converted, targets(layers), data, options, cache, progress, decisions or {})


def _data_aware(original: onnx.ModelProto, model: onnx.ModelProto, target: LayerTarget, decision: Decision,
                fit_data: Dataset, held_data: Dataset | None, options: CalibrationOptions,
                rng: np.random.Generator) -> tuple[ALSResult, Factors | None, np.ndarray | None] | Skip:
    """Patch moments of the layer, then the ALS fit; the factors to write (``None``: keep the
    data-free ones), or why this layer needs the pointwise fallback."""
    spatial = weights.spatial_conv(model, list(target.nodes))
    first = weights.node_named(model, target.nodes[0]) if target.nodes else None
    final = weights.node_named(model, target.final_node)
    if spatial is None or first is None or final is None:
        return Skip("the emitted layer has no spatial Conv")
    geo = decision.layer.geometry
    kernel = tuple(int(k) for k in geo.kernel)
    attrs = weights.conv_attrs(spatial)
    d = len(kernel)
    strides, dilations = attrs.get("strides", (1,) * d), attrs.get("dilations", (1,) * d)
    x_name, y_name = first.input[0], final.output[0]
    fit_m = PatchMoments.for_layer(decision.weight, geo.group)
    if fit_m.mode != "full" and (decision.factors.orientation == "pointwise_first" or decision.rank > fit_m.taps):
        return Skip("layer too large for data-aware moments at this rank")
    held_m = fit_m.empty_like()
    orig_sess = make_session(prefix_model(original, [y_name]), COMPUTE)
    conv_sess = make_session(prefix_model(model, [x_name]), COMPUTE)
    for data, mom in ((fit_data, fit_m), (held_data, held_m)):
        if data is None:
            continue
        for feed in batches(data, model, options.batch_size):
            (y,) = orig_sess.run([y_name], feed)
            (x,) = conv_sess.run([x_name], feed)
            pads = explicit_pads(x.shape[2:], kernel, strides, dilations, attrs["auto_pad"],
                                 attrs.get("pads", (0,) * (2 * d)))
            total = y.shape[0] * int(np.prod(y.shape[2:], dtype=np.int64))
            cap = min(options.max_positions or total, MOMENT_POSITIONS_PER_DIM * (fit_m.dim + 1))
            mom.update_conv(x, y, strides, pads, dilations, _positions(total, cap, rng))
    if fit_m.count == 0:
        return Skip("no calibration batch ran (fixed batch larger than the data)")
    fit = fit_depthwise_first if decision.factors.orientation == "depthwise_first" else fit_pointwise_first
    extra = {"dense_limit": DENSE_LIMIT} if fit is fit_depthwise_first else {}
    res = fit(decision.weight, decision.bias, fit_m, held_m if held_m.count else None, decision.rank,
              iterations=options.iterations, final_on_all=True, **extra)
    if res.mode not in ("full", "subspace"):
        return Skip(res.mode)
    best = res.best
    if best == "data-free":
        return res, None, None
    chosen = (res.first, res.second, res.bias) if best == "als" else (res.refit_first, res.refit_second, res.refit_bias)
    return res, Factors(chosen[0], chosen[1], res.rank, res.orientation), chosen[2]


def _als_record(name: str, res: ALSResult) -> LayerRefit:
    best = res.best
    chosen = {"als": res.als, "pointwise": res.pointwise, "data-free": res.data_free}[best]

    def held(e) -> float | None:
        return e.held if e.held is not None else e.fit

    return LayerRefit(
        name=name, refitted=best != "data-free",
        reason=None if best != "data-free" else "no fit lowered the held-out error; data-free weights kept",
        alpha=res.alpha if best == "als" else res.refit_alpha if best == "pointwise" else None,
        output_error_before=held(res.data_free), output_error_after=held(chosen),
        all_samples_error_before=res.data_free.fit, all_samples_error_after=chosen.fit,
        fit_positions=res.fit_positions, held_out_positions=res.held_positions, method=best,
        pointwise_error=held(res.pointwise), als_error=held(res.als), moments=res.mode, iterations=res.iterations)


def _reuse(cache: RefitCache | None, key: tuple, apply: Callable[[object], object]) -> LayerRefit | None:
    """A solved refit of the same converted-layer prefix: ``apply`` writes what it solved into the
    model, and its record is returned; ``None`` when there is none (or no cache)."""
    if cache is None or key not in cache.solved:
        return None
    record, solved = cache.solved[key]
    apply(solved)
    cache.reused += 1
    return record


@dataclass
class _Run:
    """One sequential refit in progress: the model being refitted and what was done so far."""

    original: onnx.ModelProto
    model: onnx.ModelProto
    fit: Dataset
    held: Dataset | None
    options: CalibrationOptions
    cache: RefitCache | None  # None: no reuse (no cache, or a layer broke the prefix key)
    rng: np.random.Generator
    prefix: list[tuple[str, str]] = field(default_factory=list)
    results: list[LayerRefit] = field(default_factory=list)
    sessions: int = 0
    reused: int = 0

    def reuse(self, key: tuple, apply: Callable[[object], object]) -> bool:
        hit = _reuse(self.cache, key, apply)
        if hit is not None:
            self.results.append(hit)
            self.reused += 1
        return hit is not None

    def data_aware(self, target: LayerTarget, decision: Decision) -> bool:
        """Both factors from the layer's patch moments; False: the layer needs the pointwise refit."""
        f, group = decision.factors, decision.layer.geometry.group
        self.prefix.append((target.name, "als:" + _digest([f.first, f.second, decision.bias])))
        key = tuple(self.prefix)
        if self.reuse(key, lambda write: write is not None and weights.write_factors(
                self.model, list(target.nodes), target.layout, *write, group)):
            return True
        outcome = _data_aware(self.original, self.model, target, decision, self.fit, self.held, self.options,
                              self.rng)
        self.sessions += 2
        if isinstance(outcome, Skip):
            log.info("%s: %s; refitting the pointwise weights only", target.name, outcome)
            self.prefix.pop()
            return False
        res, factors, bias = outcome
        write = None if factors is None else (factors, bias)
        if write is not None:
            weights.write_factors(self.model, list(target.nodes), target.layout, factors, bias, group)
        record = _als_record(target.name, res)
        if self.cache is not None:
            self.cache.solved[key] = (record, write)
        log.info("data-aware fit %s: held-out error %.4f -> %.4f (%s)", target.name,
                 record.output_error_before or 0.0, record.output_error_after or 0.0, record.method)
        self.results.append(record)
        return True

    def pointwise(self, target: LayerTarget, node: onnx.NodeProto) -> None:
        """Ridge least squares of the 1x1 weights that end the layer."""
        model = self.model
        convs = weights.pointwise_convs(model, node)
        if isinstance(convs, Skip):
            self.results.append(LayerRefit(target.name, False, f"{convs} ({target.layout} layout)"))
            self.cache = None
            return
        group = weights.group_of(convs[0])
        ws, bias = weights.pointwise_weights(model, convs)
        widths = [w.shape[1] for w in ws]
        merged = np.concatenate(ws, axis=1) if len(ws) > 1 else ws[0]
        self.prefix.append((target.name, _digest([*ws, bias])))
        key = tuple(self.prefix)
        if self.reuse(key, lambda solved: [
                weights.write_pointwise(model, weights.node_named(model, name), w, b)  # type: ignore[arg-type]
                for name, w, b in solved or ()]):
            return
        y_name, z_names = node.output[0], [c.input[0] for c in convs]
        orig_sess = make_session(prefix_model(self.original, [y_name]), COMPUTE)
        conv_sess = make_session(prefix_model(model, z_names), COMPUTE)
        self.sessions += 2
        fit_eq = _accumulate(orig_sess, conv_sess, y_name, z_names, self.fit, model, group, self.options, self.rng)
        held_eq = _accumulate(orig_sess, conv_sess, y_name, z_names, self.held, model, group, self.options, self.rng)
        del orig_sess, conv_sess
        if fit_eq is None or fit_eq.count == 0:
            self.results.append(LayerRefit(target.name, False,
                                           "no calibration batch ran (fixed batch larger than the data)"))
            return
        res = refit(fit_eq, held_eq, augment(merged, bias, group))
        solved = None
        if res.accepted:
            new_w, new_b = split_augmented(res.weights, merged)
            solved = []
            for k, (c, w) in enumerate(zip(convs, np.split(new_w, np.cumsum(widths)[:-1], axis=1))):
                solved.append((c.name, np.ascontiguousarray(w), new_b if k == 0 else None))
                weights.write_pointwise(model, c, solved[-1][1], solved[-1][2])
        record = _record(target.name, res)
        if self.cache is not None:
            self.cache.solved[key] = (record, solved)
        log.info("refit %s: held-out error %.4f -> %.4f (alpha %s)", target.name, res.error_before,
                 res.error_after, res.alpha)
        self.results.append(record)


def _refit_layers(original: onnx.ModelProto, converted: onnx.ModelProto, todo_targets: Sequence[LayerTarget],
                  data: Dataset, options: CalibrationOptions, cache: RefitCache | None,
                  progress: Callable[[int, int], None] | None,
                  decisions: Mapping[str, Decision]) -> tuple[onnx.ModelProto, CalibrationSummary]:
    start = time.perf_counter()
    model = copy_model(converted)
    fit_data, held_data = data.split(options.holdout, options.seed, fixed_batch(converted) or 1)
    run = _Run(original, model, fit_data, held_data, options, cache, np.random.default_rng(options.seed))
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    todo = sorted(todo_targets, key=lambda t: order.get(t.final_node, len(order)))
    for done, target in enumerate(todo):
        if progress is not None:
            progress(done, len(todo))
        node = weights.node_named(model, target.final_node)
        if node is None:
            run.results.append(LayerRefit(target.name, False, f"node {target.final_node!r} not found"))
            run.cache = None  # an unrefitted converted layer is not in the key: stop reusing
            continue
        decision = decisions.get(target.name)
        if decision is not None and options.factors == "data-aware" and run.data_aware(target, decision):
            continue
        run.pointwise(target, node)
    if progress is not None:
        progress(len(todo), len(todo))
    results = run.results
    summary = CalibrationSummary(
        source=data.source, samples=data.count, fit_samples=fit_data.count,
        held_out_samples=held_data.count if held_data is not None else 0,
        method=METHOD_ALS if options.factors == "data-aware" and decisions else METHOD,
        layers_refitted=sum(1 for r in results if r.refitted),
        layers_kept_data_free=sum(1 for r in results if not r.refitted),
        sessions=run.sessions, layers_reused=run.reused, seconds=round(time.perf_counter() - start, 3),
        layers=tuple(results))
    return model, summary
