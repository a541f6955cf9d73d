"""Shapes observed by running the model once with onnxruntime: the fallback of the cost step
when ONNX shape inference gives up.

Static shape inference (:mod:`convtool.analysis.shapes`) cannot follow shapes computed at run
time from values it does not propagate - typically ``Pad`` amounts built by ``Shape ->
ConstantOfShape -> Concat`` in converted third-party models: every tensor downstream is left
with ``unk__N`` dims, even at a fully static input shape.  Such a model still runs, and one run
tells every shape.

:func:`model_costs` is the cost step the callers use (``convert``'s MAC totals, the report,
the latency tuner's layer shapes through :func:`known_shapes`):

1. count from static shapes (:func:`convtool.analysis.costs.costs_from_shapes`); when every
   counted op (Conv, ConvTranspose, Gemm, MatMul, ...) is resolved, that is the answer and
   onnxruntime is never imported;
2. otherwise observe exactly the tensors those ops still need (``Costs.unknown``) and count
   again with the observed dims filling the gaps (``Costs.shapes == "observed"``);
3. what stays unknown is ``None`` with a one-line reason - never 0.

How a shape is observed (:func:`observe_shapes`):

* feeds: one seeded batch from :func:`convtool.runtime.inputs.random_feeds` at the given (or
  default: symbolic first dim 1) static input shapes - floats standard normal, integers from
  {0, 1} (valid indices, ids and masks), booleans random; an input type it cannot fill (e.g.
  strings) means nothing is observed, with that reason;
* probes: a ``Shape(T)`` node per wanted tensor ``T``, whose int64 output replaces the model's
  own outputs.  A probe is a few integers whatever ``T``'s type and size, so no activation is
  copied out of the session (exposing ``T`` itself would copy whole feature maps, and
  onnxruntime refuses an exposed tensor whose stale ``value_info`` declares another type);
  dropping the model's outputs lets onnxruntime skip what the probes do not need;
* one CPU session (basic graph optimisations, every core), one run;
* failures are results, not errors.  When the probed model fails, the plain model is tried: if
  it cannot run either, nothing is observed and the reason says why; if it runs, the probes are
  bisected (at most :data:`MAX_EXTRA_SESSIONS` more sessions) to keep every tensor that can be
  observed;
* an observed shape with a 0 dim (an empty tensor: a data-dependent shape that came out empty
  on random inputs) is not used - it would count a false 0.

Observed shapes are those of one run: exact for shapes that follow from the input shapes (the
run-time padding above, reshapes computed from ``Shape``); a data-dependent shape (after
``NonZero``, NMS) gives the count for that random input, which the record says by naming the
source ("MACs from shapes observed with onnxruntime").  Large models: the caller's model is
copied once to add the probes (never mutated) and serialised for onnxruntime, like every
in-memory session of convtool (protobuf's 2 GB limit applies; failing, the reason says so).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import helper

from convtool.analysis.costs import Costs, costs_from_shapes
from convtool.analysis.shapes import Shape, static_shapes
from convtool.errors import ConvToolError
from convtool.options import SessionOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.session import make_session

__all__ = ["OBSERVE", "OBSERVED_NOTE", "MAX_EXTRA_SESSIONS", "Observation", "observe_shapes", "model_costs",
           "known_shapes"]

log = logging.getLogger(__name__)

#: The observing session: CPU, every core, basic optimisations (cheap to build, still folds).
OBSERVE = SessionOptions(threads=None, opt_level="basic", spinning=False)
#: What records say when MACs were counted from observed shapes.
OBSERVED_NOTE = ("MACs from shapes observed with onnxruntime (ONNX shape inference could not resolve them; "
                 "the model ran once on seeded random inputs at the input shapes)")
#: Sessions the bisection of refused probes may add after the plain model ran.
MAX_EXTRA_SESSIONS = 8


@dataclass(frozen=True)
class Observation:
    """Dims of the requested tensors seen in one onnxruntime run.

    ``shapes``: tensor name -> dims, for each tensor observed (none with a 0 dim).
    ``reason``: why some requested tensors are missing, ``None`` when all were observed.
    """

    shapes: dict[str, Shape] = field(default_factory=dict)
    reason: str | None = None


class _Failed(Exception):
    """A session could not be built or run (message: onnxruntime's first line)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _probed(model: onnx.ModelProto, tensors: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose only outputs are ``Shape(t)`` of each of ``tensors``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    g = probe.graph
    taken = {n for node in g.node for n in (node.name, *node.input, *node.output)}
    taken |= {vi.name for vi in (*g.input, *g.output, *g.value_info)} | {t.name for t in g.initializer}
    names = []
    for t in tensors:
        name, k = f"{t}.observed_shape", 1
        while name in taken:
            name, k = f"{t}.observed_shape_{k}", k + 1
        taken.add(name)
        names.append(name)
        g.node.append(helper.make_node("Shape", [t], [name], name=name))
    del g.output[:]
    g.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.INT64, [None]) for n in names)
    return probe, names


def _session(model: onnx.ModelProto):
    try:
        return make_session(model, OBSERVE)
    except ConvToolError as exc:  # ModelLoadError: "model: onnxruntime cannot run it: ..."
        raise _Failed(str(exc).removeprefix("model: onnxruntime cannot run it: ")) from None
    except Exception as exc:  # noqa: BLE001 - e.g. serialising a model over protobuf's 2 GB limit
        raise _Failed(_first_line(exc)) from None


def _run(model: onnx.ModelProto, tensors: Sequence[str], feeds: Mapping[str, np.ndarray]) -> dict[str, Shape]:
    """Observed dims of ``tensors`` in one run (raises :class:`_Failed`)."""
    probe, names = _probed(model, tensors)
    session = _session(probe)
    try:
        values = session.run(names, dict(feeds))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/RuntimeException types
        raise _Failed(_first_line(exc)) from None
    return {t: tuple(int(d) for d in np.asarray(v).reshape(-1)) for t, v in zip(tensors, values)}


def _run_plain(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> None:
    session = _session(model)
    try:
        session.run(None, dict(feeds))
    except Exception as exc:  # noqa: BLE001
        raise _Failed(_first_line(exc)) from None


def _bisect(run: Callable[[Sequence[str]], dict[str, Shape]], tensors: Sequence[str],
            budget: int) -> tuple[dict[str, Shape], list[str], str | None]:
    """Observe what can be: halve failing groups, at most ``budget`` runs; the shapes, the
    tensors left out and the last error."""
    shapes: dict[str, Shape] = {}
    left: list[str] = []
    error = None
    mid = len(tensors) // 2
    queue = [list(tensors[:mid]), list(tensors[mid:])]
    runs = 0
    while queue:
        part = queue.pop(0)
        if not part:
            continue
        if runs >= budget:
            left += part
            continue
        runs += 1
        try:
            shapes.update(run(part))
        except _Failed as exc:
            error = str(exc)
            if len(part) == 1:
                left += part
            else:
                queue += [part[: len(part) // 2], part[len(part) // 2:]]
    order = {t: i for i, t in enumerate(tensors)}
    return shapes, sorted(left, key=order.__getitem__), error


def observe_shapes(model: onnx.ModelProto, tensors: Sequence[str],
                   input_shapes: Mapping[str, Sequence[int]] | None = None, *, seed: int = 0) -> Observation:
    """Run ``model`` once on seeded random inputs at ``input_shapes`` (default: the model's,
    symbolic first dim 1) and return the dims of ``tensors`` (top-level tensor names).

    Never raises for a model onnxruntime cannot run: the :class:`Observation` then has no
    shapes and says why (see the module docstring for the probes and the fallbacks).
    """
    tensors = list(dict.fromkeys(t for t in tensors if t))
    if not tensors:
        return Observation()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return Observation(reason="onnxruntime is not installed")
    try:
        feeds = random_feeds(model, input_shapes, seed=seed)
    except ConvToolError as exc:
        return Observation(reason=f"no inputs to run the model with onnxruntime ({exc})")
    left: list[str] = []
    error = None
    try:
        shapes = _run(model, tensors, feeds)
    except _Failed as exc:
        try:
            _run_plain(model, feeds)
        except _Failed as plain:
            return Observation(reason=f"onnxruntime cannot run the model ({plain})")
        log.info("onnxruntime refused some shape probes (%s); bisecting", exc)
        shapes, left, error = _bisect(lambda part: _run(model, part, feeds), tensors, MAX_EXTRA_SESSIONS)
    empty = [t for t, s in shapes.items() if math.prod(s) == 0]
    for t in empty:
        del shapes[t]
    reasons = []
    if left:
        reasons.append(f"onnxruntime could not observe {len(left)} tensor(s) (e.g. {left[0]}: {error})")
    if empty:
        reasons.append(f"{len(empty)} tensor(s) were empty on random inputs (e.g. {empty[0]}), "
                       "a data-dependent shape")
    return Observation(shapes, "; ".join(reasons) or None)


def model_costs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None, *,
                observe: bool = True, seed: int = 0) -> Costs:
    """Per-node params and MACs: static shapes first, observed shapes (one onnxruntime run)
    for the tensors counted ops need that static inference left unknown.

    ``observe=False`` never runs the model (the unknown ops stay ``None`` with a reason).
    Raises :class:`~convtool.errors.OptionError` when an input has symbolic dims the user must
    fix (``--input-shape``): without them there is nothing to infer or run at.
    """
    table = static_shapes(model, input_shapes)
    costs = costs_from_shapes(model, table)
    if not costs.unknown or not observe:
        return costs
    seen = observe_shapes(model, costs.unknown, input_shapes, seed=seed)
    if seen.shapes:
        costs = costs_from_shapes(model, {**table, **seen.shapes}, source="observed")
    if costs.reason is not None and seen.reason is not None:
        costs = replace(costs, reason=f"{costs.reason}; {seen.reason}")
    return costs


def known_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 needed: Sequence[str] = (), *, seed: int = 0) -> dict[str, Shape]:
    """Every tensor's dims that static inference resolves (no 0 dims, no scalars), plus those
    of ``needed`` tensors it does not, observed with onnxruntime (only when some are missing).

    Raises :class:`~convtool.errors.OptionError` like :func:`model_costs`.
    """
    table = static_shapes(model, input_shapes)
    missing = [t for t in needed if t and table.get(t) is None]
    if missing:
        seen = observe_shapes(model, missing, input_shapes, seed=seed)
        table.update(seen.shapes)
        if seen.reason is not None:
            log.info("shapes of %d tensor(s) unknown: %s", len(missing) - len(seen.shapes), seen.reason)
    return {k: v for k, v in table.items() if v and all(d > 0 for d in v)}
