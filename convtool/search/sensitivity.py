"""Sensitivity from cached activations: every candidate's drift alone, in one pass of the model.

The budget search needs, for every candidate (layer, rank, layout), the factors it would get
and the drift it causes alone.  Converting and refitting a whole model per candidate costs
``candidates x model``; this module makes it ``model + candidates x suffix``:

1. **Capture** (:func:`capture`): ONE pass of the ORIGINAL model over the calibration samples,
   with every candidate layer's input ``X`` and output ``Y`` exposed.  On the fit samples each
   layer's input-patch moments are streamed (:class:`convtool.core.als.PatchMoments`, an inner
   fit / held-out split of them to choose the regulariser, as the refit does); on the search's
   held-out samples ``X`` and every *boundary* tensor a suffix needs are kept in memory (the
   bound: :attr:`Capture.nbytes`, recorded), together with the reference outputs.
2. **Fit** (:func:`fit_candidate`): each candidate's factors from its layer's moments alone -
   the data-aware fit of :mod:`convtool.core.als` (best of data-free, pointwise refit and ALS
   on the inner held-out positions) or, with ``factors="pointwise"``, the pointwise refit.
   These are *local* fits: from the original model's activations, not the converted
   predecessors' (the final plan gets the sequential refit; the search verifies it).
3. **Suffix** (:class:`SuffixRunner`): the layer's new output on the held-out samples (its
   one-layer replacement model run on the cached ``X``), fed with the cached boundary tensors
   into the part of the graph downstream of the layer (:func:`convtool.graph.suffix.suffix_model`,
   one onnxruntime session per layer, reused for all of its candidates); model outputs that do
   not depend on the layer are the reference's.  The drift against the reference outputs is
   the candidate's sensitivity.

Graphs with control-flow subgraphs have no suffix models; there each candidate's drift is
measured by running the whole model with that one layer converted (same fits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from convtool.analysis.drift import Drift, compare_outputs
from convtool.core.als import PatchMoments, fit_depthwise_first, fit_pointwise_first
from convtool.core.conv import explicit_pads
from convtool.core.factorize import Factors
from convtool.core.plan import Decision
from convtool.core.refit import few_blas_threads
from convtool.graph.prefix import prefix_model
from convtool.graph.select import ConvSite
from convtool.graph.single import batch_free, conv_shape, replacement_model, window_attrs
from convtool.graph.suffix import downstream, has_subgraphs, suffix_model, value_infos
from convtool.options import CalibrationOptions
from convtool.records import CalibrationSummary, LayerRefit
from convtool.runtime.inputs import Dataset, batches, fixed_batch
from convtool.runtime.run import COMPUTE
from convtool.runtime.session import make_session

log = logging.getLogger(__name__)

__all__ = ["Capture", "Fitted", "LayerIO", "SuffixRunner", "capture", "fit_candidate", "fit_all", "layer_io", "local_summary"]

#: Per batch and layer at most this many positions per moment dimension (as the refit).
MOMENT_POSITIONS_PER_DIM = 32
#: Depthwise steps up to this many unknowns are solved densely (as the refit).
DENSE_LIMIT = 1536
METHOD_LOCAL = ("local data-aware factors: each layer fitted from the original model's activations "
                "(whitened SVD and pointwise solve), kept where the held-out error drops")


@dataclass(frozen=True)
class LayerIO:
    """Where a candidate layer reads and writes in the original graph."""

    name: str
    x: str  # the Conv's input
    y: str  # the tensor the converted layer writes (the folded BatchNormalization's output)
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    auto_pad: str


def layer_io(site: ConvSite) -> LayerIO:
    end = site.batchnorm_node if site.batchnorm_node is not None else site.node
    return LayerIO(site.name, site.node.inputs[0].name, end.outputs[0].name,
                   *window_attrs(site.node, len(site.geometry.kernel)))


@dataclass
class Capture:
    """What one pass of the original model left behind (module docstring, step 1)."""

    layers: dict[str, LayerIO]
    moments: dict[str, tuple[PatchMoments, PatchMoments | None]]  # fit, inner held-out
    held: list[dict[str, np.ndarray]]  # per held-out batch: every kept tensor
    reference: dict[str, np.ndarray]  # held-out outputs, concatenated
    output_names: tuple[str, ...]
    samples: int  # held-out samples
    suffixes: bool  # False: whole-model fallback
    seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        """Memory held by the cached tensors and moments."""
        arrays = sum(a.nbytes for batch in self.held for a in batch.values())
        moms = sum(f.nbytes + (h.nbytes if h is not None else 0) for f, h in self.moments.values())
        return int(arrays + moms)


def _boundary(model: onnx.ModelProto, ys: Sequence[str]) -> set[str]:
    """Every tensor a suffix from one of ``ys`` reads from outside itself."""
    return {name for y in ys for name in downstream(model, y)[1]}


def capture(model: onnx.ModelProto, sites: Sequence[ConvSite], decisions: Mapping[str, Decision],
            fit: Dataset, held: Dataset, cal: CalibrationOptions, *, moments: bool = True,
            progress: Callable[[int, int], None] | None = None) -> Capture:
    """Step 1 of the module docstring; ``decisions``: one per site (its BN-folded kernel).
    ``moments=False``: only the held-out pass (no data to fit on: data-free factors)."""
    import time

    start = time.perf_counter()
    layers = {s.name: layer_io(s) for s in sites}
    suffixes = not has_subgraphs(model)
    outputs = [o.name for o in model.graph.output]
    xs = {io.x for io in layers.values()}
    ys = {io.y for io in layers.values()}
    keep_held = set(xs) | (_boundary(model, sorted(ys)) if suffixes else set())
    graph_inputs = {i.name for i in model.graph.input}
    exposed = sorted((xs | ys | keep_held | set(outputs)) - graph_inputs)
    sess = make_session(prefix_model(model, exposed), COMPUTE)
    inner_fit, inner_held = fit.split(cal.holdout, cal.seed, fixed_batch(model) or 1)
    moments: dict[str, tuple[PatchMoments, PatchMoments | None]] = {}
    for s in sites:
        m = PatchMoments.for_layer(decisions[s.name].weight, s.geometry.group)
        moments[s.name] = (m, m.empty_like() if inner_held is not None else None)
    rng = np.random.default_rng(cal.seed)
    parts = [(inner_fit, 0)] + ([(inner_held, 1)] if inner_held is not None else [])
    feeds = [(f, slot) for data, slot in parts for f in batches(data, model, cal.batch_size)] if moments else []
    held_feeds = list(batches(held, model, cal.batch_size))
    total = len(feeds) + len(held_feeds)
    with few_blas_threads():
        for i, (feed, slot) in enumerate(feeds):
            if progress is not None:
                progress(i, total)
            values = {**feed, **dict(zip(exposed, sess.run(exposed, feed)))}
            for s in sites:
                mom = moments[s.name][slot]
                if mom is not None:
                    _update(mom, layers[s.name], values, rng, cal)
    kept: list[dict[str, np.ndarray]] = []
    refs: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
    for j, feed in enumerate(held_feeds):
        if progress is not None:
            progress(len(feeds) + j, total)
        values = {**feed, **dict(zip(exposed, sess.run(exposed, feed)))}
        kept.append({k: np.asarray(values[k]) for k in keep_held if k in values})
        for o in outputs:
            refs[o].append(np.asarray(values[o]))
    if progress is not None:
        progress(total, total)
    reference = {o: np.concatenate(v, axis=0) for o, v in refs.items()}
    return Capture(layers, moments, kept, reference, tuple(outputs), held.count, suffixes,
                   round(time.perf_counter() - start, 3))


def _update(mom: PatchMoments, io: LayerIO, values: Mapping[str, np.ndarray], rng: np.random.Generator,
            cal: CalibrationOptions) -> None:
    x, y = values[io.x], values[io.y]
    k = mom.kernel_shape
    pads = explicit_pads(x.shape[2:], k, io.strides, io.dilations, io.auto_pad, io.pads)
    total = y.shape[0] * int(np.prod(y.shape[2:], dtype=np.int64))
    cap = min(cal.max_positions or total, MOMENT_POSITIONS_PER_DIM * (mom.dim + 1))
    positions = None if total <= cap else np.sort(rng.choice(total, cap, replace=False))
    mom.update_conv(x, y, io.strides, pads, io.dilations, positions)


@dataclass(frozen=True)
class Fitted:
    """A candidate's local fit: the factors to write and how they were chosen."""

    factors: Factors
    bias: np.ndarray | None
    method: str  # "als", "pointwise", "data-free"
    error: float | None = None  # held-out relative output error of the layer (inner split)
    error_before: float | None = None  # the same with the data-free factors


def fit_candidate(decision: Decision, moments: tuple[PatchMoments, PatchMoments | None],
                  cal: CalibrationOptions, iterations: int | None = None) -> Fitted:
    """Step 2: ``decision``'s factors fitted from its layer's moments (module docstring);
    ``iterations``: alternating rounds (default ``cal.iterations``; 0: the whitened-SVD start
    and the pointwise solve only)."""
    rounds = cal.iterations if iterations is None else iterations
    fit_m, held_m = moments
    if fit_m.count == 0:
        return Fitted(decision.factors, decision.bias, "data-free")
    orientation = decision.factors.orientation
    with few_blas_threads():
        if orientation == "pointwise_first":
            res = fit_pointwise_first(decision.weight, decision.bias, fit_m, held_m, decision.rank,
                                      iterations=rounds, final_on_all=True)
        else:
            res = fit_depthwise_first(decision.weight, decision.bias, fit_m, held_m, decision.rank,
                                      iterations=rounds, final_on_all=True, dense_limit=DENSE_LIMIT)
    best = res.best
    if cal.factors == "pointwise" and best == "als":  # the pointwise refit, or data-free when that is worse
        pw, df = res.pointwise, res.data_free
        score = (lambda e: e.held if e.held is not None else e.fit)
        best = "pointwise" if np.isfinite(score(pw)) and score(pw) < score(df) else "data-free"
    if best == "data-free" or res.mode not in ("full", "subspace"):
        return Fitted(decision.factors, decision.bias, "data-free")
    first, second, bias = ((res.first, res.second, res.bias) if best == "als"
                           else (res.refit_first, res.refit_second, res.refit_bias))
    err = {"als": res.als, "pointwise": res.pointwise}[best]
    return Fitted(Factors(first, second, res.rank, res.orientation), bias, best,
                  err.held if err.held is not None else err.fit,
                  res.data_free.held if res.data_free.held is not None else res.data_free.fit)


def fit_all(jobs: Sequence[tuple[object, Decision, tuple[PatchMoments, PatchMoments | None]]],
            cal: CalibrationOptions, iterations: int | None = None, *, fit: bool = True, workers: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """:func:`fit_candidate` for every ``(key, decision, moments)``, on ``workers`` threads (default:
    the CPU count, at most 4; numpy's solvers release the GIL and BLAS is held to one thread
    per solve); ``fit=False`` gives every candidate its data-free factors.  ``{key: Fitted}``."""
    if not fit:
        return {key: Fitted(d.factors, d.bias, "data-free") for key, d, _ in jobs}
    import os
    from concurrent.futures import ThreadPoolExecutor, as_completed

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    out: dict = {}
    with few_blas_threads(), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(fit_candidate, d, m, cal, iterations): key for key, d, m in jobs}
        for i, future in enumerate(as_completed(futures)):
            out[futures[future]] = future.result()
            if progress is not None:
                progress(i + 1, len(jobs))
    return out


class SuffixRunner:
    """Step 3: a candidate's drift alone, from the capture (one suffix session per layer)."""

    def __init__(self, model: onnx.ModelProto, cap: Capture):
        self.model, self.cap = model, cap
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self._infos = None
        self._sessions: dict[str, tuple[object, tuple[str, ...], tuple[str, ...]]] = {}
        self.runs = 0

    def _value_infos(self) -> dict:
        if self._infos is None:
            self._infos = value_infos(self.model)
            for vi in self._infos.values():  # batch sizes differ between held-out batches
                dims = vi.type.tensor_type.shape.dim
                if len(dims):
                    dims[0].dim_param = "N"
        return self._infos

    def _session(self, y: str):
        if y not in self._sessions:
            suf = suffix_model(self.model, y, self._value_infos())
            self._sessions[y] = (make_session(suf.model, COMPUTE), suf.inputs, suf.outputs)
        return self._sessions[y]

    def layer_outputs(self, site: ConvSite, decision: Decision, fitted: Fitted) -> list[np.ndarray]:
        """The converted layer's output on each held-out batch."""
        io = self.cap.layers[site.name]
        d = replace(decision, factors=fitted.factors, bias=fitted.bias)
        first = self.cap.held[0][io.x]
        one = batch_free(replacement_model(conv_shape(site.node, d, tuple(first.shape)), d, self.opset))
        sess = make_session(one, COMPUTE)
        return [np.asarray(sess.run(None, {"x": batch[io.x]})[0]) for batch in self.cap.held]

    def drift(self, site: ConvSite, decision: Decision, fitted: Fitted) -> tuple[Drift, dict[str, np.ndarray]]:
        """Drift of the whole model's outputs with this one layer converted (held-out samples)."""
        io = self.cap.layers[site.name]
        ys = self.layer_outputs(site, decision, fitted)
        sess, inputs, outs = self._session(io.y)
        parts: dict[str, list[np.ndarray]] = {o: [] for o in outs}
        for batch, y in zip(self.cap.held, ys):
            feed = {name: (y if name == io.y else batch[name]) for name in inputs}
            for o, v in zip(outs, sess.run(list(outs), feed)):
                parts[o].append(np.asarray(v))
            self.runs += 1
        got = dict(self.cap.reference)
        for o, v in parts.items():
            got[o] = np.concatenate(v, axis=0)
        return compare_outputs(self.cap.reference, got), got


def local_summary(fits: Mapping[str, Fitted], source: str, samples: int, fit_samples: int, held_samples: int,
                  seconds: float) -> CalibrationSummary:
    """The record of a model whose layers carry their local fits (no sequential refit)."""
    layers = tuple(LayerRefit(name, f.method != "data-free",
                              None if f.method != "data-free" else "no fit lowered the held-out error; data-free kept",
                              output_error_before=f.error_before, output_error_after=f.error, method=f.method)
                   for name, f in fits.items())
    return CalibrationSummary(source, samples, fit_samples, held_samples, METHOD_LOCAL,
                              sum(1 for r in layers if r.refitted), sum(1 for r in layers if not r.refitted), 0, 0,
                              round(seconds, 3), layers)
