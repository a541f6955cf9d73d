"""Activation capture with onnxruntime and the sequential refit of converted layers.

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
3. :mod:`convtool.calibrate.refit` accumulates the normal equations batch by batch (only one
   batch of one layer's ``Z`` and ``Y`` is alive at a time), solves the ridge least squares per
   group, keeps the solution only if it lowers the held-out error, and the new pointwise
   weight and bias are written into the converted model before the next layer.

Cost: per converted layer two onnxruntime sessions are built, each on the prefix of the graph
that the exposed tensor needs (nodes after it are pruned), and every calibration sample runs
once through both prefixes: about ``L`` full-model forward passes (``L`` layers) plus ``2 L``
session builds, and per layer ``O(samples x positions x (Cin_g r)^2)`` flops for the sums.
Positions are subsampled (seeded) above ``CalibrationOptions.max_positions`` per batch.

Layers that end with 1x1 Convs are refitted: ``multiplier`` and ``repeat`` end with one,
``branches`` with a Sum of one per branch (solved jointly, as one map of the concatenated
branch inputs; the bias goes to branch 0).  ``pointwise_first`` ends with the spatial Conv and
is left as factorised, which the record says.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from convtool.calibrate.config import CalibrationOptions
from convtool.calibrate.data import CalibrationData, model_inputs
from convtool.calibrate.refit import NormalEquations, RefitResult, augment, few_blas_threads, refit, split_augmented

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# onnxruntime helpers


def _session(model: onnx.ModelProto, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    # numpy works between runs: spinning onnxruntime threads would steal its cores
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def prefix_model(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``outputs``, keeping only the nodes they need.

    Graph inputs are all kept (the caller feeds them all).  Graphs with control-flow subgraphs
    are not pruned, only given the extra outputs.
    """
    graph = model.graph
    producers = {o: i for i, n in enumerate(graph.node) for o in n.output}
    has_subgraphs = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for n in graph.node for a in n.attribute)
    if has_subgraphs:
        keep = set(range(len(graph.node)))
    else:
        keep: set[int] = set()
        stack = list(outputs)
        while stack:
            idx = producers.get(stack.pop())
            if idx is None or idx in keep:
                continue
            keep.add(idx)
            stack.extend(graph.node[idx].input)
    needed = {i for k in keep for i in graph.node[k].input}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend(graph.node[k] for k in sorted(keep))
    inits = [t for t in graph.initializer if t.name in needed or has_subgraphs]
    del g.initializer[:]
    g.initializer.extend(inits)
    known = {vi.name: vi for vi in (*graph.value_info, *graph.output)}
    del g.output[:]
    for name in outputs:
        vi = known.get(name) or onnx.helper.make_tensor_value_info(name, _elem_type(model, name), None)
        g.output.append(vi)
    return out


def _elem_type(model: onnx.ModelProto, tensor: str) -> int:
    """The element type of ``tensor``: that of the first float initializer feeding its producer."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        if tensor in node.output:
            for name in node.input:
                if name in inits:
                    return inits[name]
    return onnx.TensorProto.FLOAT


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The model's fixed batch size (static first dim shared by all inputs), if any."""
    firsts = {s.dims[0] for s in model_inputs(model) if s.dims}
    firsts.discard(None)
    firsts.discard(0)
    return int(firsts.pop()) if len(firsts) == 1 else None


def batches(data: CalibrationData, model: onnx.ModelProto, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of ``batch_size`` samples; a model with a fixed batch ``b`` gets exactly ``b``
    samples per run (a remainder smaller than ``b`` is dropped)."""
    fixed = fixed_batch(model)
    size = fixed or batch_size
    for feed in data.batches(size):
        if fixed and next(iter(feed.values())).shape[0] != fixed:
            return
        yield feed


def run_outputs(model: onnx.ModelProto, data: CalibrationData, batch_size: int = 32,
                outputs: Sequence[str] | None = None, session=None) -> dict[str, np.ndarray]:
    """Run ``model`` on every sample; returns each requested output concatenated on axis 0."""
    sess = session or _session(model)
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in batches(data, model, batch_size):
        for n, v in zip(names, sess.run(names, feed)):
            parts[n].append(np.asarray(v))
    return {n: np.concatenate(v) for n, v in parts.items()}


# ---------------------------------------------------------------------------------------------
# the sequential refit


@dataclass(frozen=True)
class LayerTarget:
    """What the refit needs to find a converted layer in the converted graph."""

    name: str  # the original Conv's label
    final_node: str  # the node writing the original output tensor
    layout: str  # "multiplier" or "pointwise_first"


@dataclass
class LayerRefit:
    name: str
    result: RefitResult | None
    skipped: str | None = None

    def to_json(self) -> dict:
        if self.result is None:
            return {"name": self.name, "refitted": False, "reason": self.skipped}
        r = self.result
        return {
            "name": self.name, "refitted": r.accepted,
            "reason": None if r.accepted else "refit did not lower the held-out error; data-free weights kept",
            "alpha": r.alpha, "output_error_before": r.error_before, "output_error_after": r.error_after,
            "all_samples_error_before": r.fit_error_before, "all_samples_error_after": r.fit_error_after,
            "fit_positions": r.fit_positions, "held_out_positions": r.held_positions,
        }


@dataclass
class CalibrationOutcome:
    model: onnx.ModelProto
    layers: list[LayerRefit]
    info: dict = field(default_factory=dict)

    def by_name(self) -> dict[str, LayerRefit]:
        return {layer.name: layer for layer in self.layers}


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


def _accumulate(original_sess, converted_sess, y_name: str, z_names: list[str], data: CalibrationData | None,
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


def _set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return
    raise KeyError(name)


def _unique(model: onnx.ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    taken |= {o for n in model.graph.node for o in (*n.output, *n.input)}
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _pointwise_convs(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto],
                     inits: dict[str, onnx.TensorProto]) -> list[onnx.NodeProto] | str:
    """The 1x1 Convs whose (summed) outputs form the layer output, or why there are none.

    ``multiplier``/``repeat`` end with one 1x1 Conv; ``branches`` ends with a ``Sum`` of one
    1x1 Conv per branch, which together are one linear map of the concatenated branch inputs.
    """
    def is_pointwise(n: onnx.NodeProto | None) -> bool:
        return (n is not None and n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits
                and all(k == 1 for k in inits[n.input[1]].dims[2:]))

    if is_pointwise(node):
        return [node]
    if node.op_type in ("Sum", "Add"):
        convs = [producers.get(i) for i in node.input]
        if convs and all(is_pointwise(c) for c in convs):
            groups = {next((int(a.i) for a in c.attribute if a.name == "group"), 1) for c in convs}
            if len(groups) == 1:
                return convs  # type: ignore[return-value]
    return f"refit needs the layer to end with 1x1 Convs; it ends with {node.op_type}"


def _write_pointwise(model: onnx.ModelProto, node: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None) -> None:
    _set_initializer(model, node.input[1], weight)
    if bias is None:
        if len(node.input) > 2 and node.input[2]:
            _set_initializer(model, node.input[2], np.zeros(weight.shape[0], weight.dtype))
        return
    if len(node.input) > 2 and node.input[2]:
        _set_initializer(model, node.input[2], bias)
    else:
        name = _unique(model, f"{node.input[1]}.bias")
        model.graph.initializer.append(numpy_helper.from_array(bias, name))
        if len(node.input) == 2:
            node.input.append(name)
        else:
            node.input[2] = name


def calibrate_model(original: onnx.ModelProto, converted: onnx.ModelProto, targets: Sequence[LayerTarget],
                    data: CalibrationData, options: CalibrationOptions) -> CalibrationOutcome:
    """Refit the pointwise weights of ``targets`` in a copy of ``converted`` (sequentially)."""
    with few_blas_threads():
        return _calibrate(original, converted, targets, data, options)


def _calibrate(original: onnx.ModelProto, converted: onnx.ModelProto, targets: Sequence[LayerTarget],
               data: CalibrationData, options: CalibrationOptions) -> CalibrationOutcome:
    start = time.perf_counter()
    model = onnx.ModelProto()
    model.CopyFrom(converted)
    fit_data, held_data = data.split(options.holdout, options.seed)
    rng = np.random.default_rng(options.seed)
    inits = {t.name: t for t in model.graph.initializer}
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    todo = sorted(targets, key=lambda t: order.get(t.final_node, len(order)))
    results: list[LayerRefit] = []
    sessions = 0
    # A layer's refit depends only on the converted layers up to it (in graph order) and their
    # data-free weights; with data.memo set, a prefix seen before is not solved again.
    memo = data.memo
    prefix: list[tuple[str, str]] = []
    reused = 0
    for target in todo:
        node = next((n for n in model.graph.node if n.name == target.final_node), None)
        if node is None:
            results.append(LayerRefit(target.name, None, f"node {target.final_node!r} not found"))
            memo = None  # an unrefitted converted layer is not in the key: stop reusing
            continue
        producers = {o: n for n in model.graph.node for o in n.output}
        convs = _pointwise_convs(node, producers, inits)
        if isinstance(convs, str):
            results.append(LayerRefit(target.name, None, f"{convs} ({target.layout} layout)"))
            memo = None
            continue
        group = next((int(a.i) for a in convs[0].attribute if a.name == "group"), 1)
        weights = [numpy_helper.to_array(inits[c.input[1]]) for c in convs]
        bias = None
        for c in convs:
            if len(c.input) > 2 and c.input[2] in inits:
                b = numpy_helper.to_array(inits[c.input[2]]).astype(np.float64)
                bias = b if bias is None else bias + b
        widths = [w.shape[1] for w in weights]
        a0 = augment(np.concatenate(weights, axis=1) if len(weights) > 1 else weights[0], bias, group)
        prefix.append((target.name, _digest(weights, bias)))
        key = tuple(prefix)
        if memo is not None and key in memo:
            res, solved = memo[key]
            if solved is not None:
                for c, w, b in solved:
                    _write_pointwise(model, _node_named(model, c), w, b)
                inits = {t.name: t for t in model.graph.initializer}
            results.append(LayerRefit(target.name, res))
            reused += 1
            continue
        y_name, z_names = node.output[0], [c.input[0] for c in convs]
        orig_sess = _session(prefix_model(original, [y_name]))
        conv_sess = _session(prefix_model(model, z_names))
        sessions += 2
        fit_eq = _accumulate(orig_sess, conv_sess, y_name, z_names, fit_data, model, group, options, rng)
        held_eq = _accumulate(orig_sess, conv_sess, y_name, z_names, held_data, model, group, options, rng)
        del orig_sess, conv_sess
        if fit_eq is None or fit_eq.count == 0:
            results.append(LayerRefit(target.name, None, "no calibration batch ran (fixed batch larger than the data)"))
            continue
        res = refit(fit_eq, held_eq, a0)
        solved = None
        if res.accepted:
            merged = np.concatenate(weights, axis=1) if len(weights) > 1 else weights[0]
            new_w, new_b = split_augmented(res.weights, merged)
            solved = []
            for k, (c, w) in enumerate(zip(convs, np.split(new_w, np.cumsum(widths)[:-1], axis=1))):
                solved.append((c.name, np.ascontiguousarray(w), new_b if k == 0 else None))
                _write_pointwise(model, c, solved[-1][1], solved[-1][2])
            inits = {t.name: t for t in model.graph.initializer}
        if memo is not None:
            memo[key] = (res, solved)
        log.info("refit %s: held-out error %.4f -> %.4f (alpha %s)", target.name, res.error_before,
                 res.error_after, res.alpha)
        results.append(LayerRefit(target.name, res))
    info = {
        "source": data.source,
        "samples": data.count,
        "fit_samples": fit_data.count,
        "held_out_samples": held_data.count if held_data is not None else 0,
        "method": "sequential ridge least squares of the pointwise weights and bias (towards the data-free factors)",
        "layers_refitted": sum(1 for r in results if r.result is not None and r.result.accepted),
        "layers_kept_data_free": sum(1 for r in results if r.result is None or not r.result.accepted),
        "sessions": sessions,
        "layers_reused": reused,
        "seconds": round(time.perf_counter() - start, 3),
        "layers": [r.to_json() for r in results],
    }
    return CalibrationOutcome(model, results, info)


def _digest(weights: Sequence[np.ndarray], bias: np.ndarray | None) -> str:
    h = hashlib.sha1()
    for arr in (*weights, *(() if bias is None else (bias,))):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _node_named(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def targets_from_layers(layers: Sequence) -> list[LayerTarget]:
    """LayerTargets for the converted entries of a record's ``layers`` (LayerChange objects)."""
    out = []
    for layer in layers:
        if getattr(layer, "converted", False) and layer.new_nodes:
            out.append(LayerTarget(layer.name, layer.new_nodes[-1], layer.layout or "multiplier"))
    return out


__all__ = ["CalibrationOutcome", "LayerRefit", "LayerTarget", "batches", "calibrate_model", "fixed_batch",
           "prefix_model", "run_outputs", "targets_from_layers"]
