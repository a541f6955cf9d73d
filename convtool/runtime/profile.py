"""Per-node latency from onnxruntime's profiler, and mapping converted layers to originals.

Profiling: a session with ``SessionOptions.enable_profiling`` runs the model ``runs`` times
after ``warmup`` runs; the JSON trace's ``cat == "Node"`` events named
``<node name>_kernel_time`` give each node's kernel time (``dur``, microseconds). The first
``warmup`` runs are dropped; each node's time is its mean over the remaining runs (ms per
inference).

Optimisation level: the profiler reports the nodes *onnxruntime* executes. Up to the
``extended`` level those keep the graph's node names (a Conv with a folded BatchNormalization
and a fused Relu is reported under the Conv's name, which is exactly the per-layer cost we
want). The ``all`` level rewrites convolutions to the NCHWc layout and renames them after
their output tensors, so the profiler session is capped at ``extended``; the cap is recorded
in :class:`NodeProfile`. Names that still match no graph node are kept as they are.

Unnamed graph nodes are named ``<op_type>_<index>`` (the same rule as
:func:`convtool.analysis.costs.node_costs`) in a copy of the model before profiling.

Layer mapping: the converter names the nodes that replace an original Conv ``X``
``X.dw`` and ``X.pw`` (and possibly further ``X.*`` helpers). :func:`map_converted_layers`
treats every original node name that is absent from the converted graph as *replaced*, and
assigns each new node of the converted graph to the longest replaced name ``X`` with
``new_name.startswith(X + ".")``. A layer is flagged *slower* when its converted time exceeds
the original's by more than :data:`SLOWER_TOLERANCE` (profiler noise on tiny kernels).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx

from convtool.options import OPT_LEVELS, SessionOptions
from convtool.runtime.session import make_session

__all__ = [
    "NodeProfile",
    "LayerMapping",
    "SLOWER_TOLERANCE",
    "named_nodes",
    "profile_nodes",
    "parse_profile",
    "map_converted_layers",
]

#: A converted layer is "slower" when after > before * (1 + SLOWER_TOLERANCE).
SLOWER_TOLERANCE = 0.05

_PROFILE_CAP = "extended"


@dataclass(frozen=True)
class NodeProfile:
    """Mean kernel time per inference of each executed node, in milliseconds."""

    times_ms: dict[str, float]
    runs: int
    opt_level: str

    def time_of(self, names: list[str] | tuple[str, ...]) -> float | None:
        """Sum of the listed nodes' times; ``None`` when none of them was seen."""
        seen = [self.times_ms[n] for n in names if n in self.times_ms]
        return float(sum(seen)) if seen else None


@dataclass(frozen=True)
class LayerMapping:
    """An original node and the converted-graph nodes that replace it."""

    original: str
    replacements: tuple[str, ...]


def named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself when every node has a name, else a copy with ``<op_type>_<index>`` names."""
    if all(n.name for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, node in enumerate(out.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    return out


def parse_profile(trace: list[dict], *, warmup: int, runs: int) -> dict[str, float]:
    """Kernel time per node, ms per inference, from an onnxruntime profile trace of
    ``warmup + runs`` inferences.

    A top-level node runs once per inference, so its events are in run order: the first
    ``warmup`` are dropped and the rest averaged. A node with another event count (inside a
    loop) gets its total over all inferences divided by ``warmup + runs``.
    """
    per_node: dict[str, list[float]] = {}
    for event in trace:
        if event.get("cat") != "Node":
            continue
        name = str(event.get("name", ""))
        if name.endswith("_kernel_time"):
            per_node.setdefault(name[: -len("_kernel_time")], []).append(float(event.get("dur", 0)) / 1000.0)
    out: dict[str, float] = {}
    for node, durs in per_node.items():
        if len(durs) == warmup + runs and runs > 0:
            out[node] = float(np.mean(durs[warmup:]))
        else:
            out[node] = float(sum(durs)) / max(warmup + runs, 1)
    return out


def profile_nodes(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    config: SessionOptions,
    *,
    runs: int = 10,
    warmup: int = 3,
    path: str | os.PathLike[str] | None = None,
) -> NodeProfile:
    """Profile ``model`` (from ``path`` when given and all nodes are named) and return
    per-node times. The session's optimisation level is capped at ``extended``."""
    level = config.opt_level
    if OPT_LEVELS.index(level) > OPT_LEVELS.index(_PROFILE_CAP):
        level = _PROFILE_CAP
    cfg = replace(config, opt_level=level)
    named = named_nodes(model)
    source = path if (path is not None and named is model) else named
    with tempfile.TemporaryDirectory(prefix="convtool-profile-") as tmp:
        session = make_session(source, cfg, profile_prefix=os.path.join(tmp, "ort"))
        fed = dict(feeds)
        for _ in range(warmup + runs):
            session.run(None, fed)
        trace_path = session.end_profiling()
        with open(trace_path, encoding="utf-8") as f:
            trace = json.load(f)
    times = parse_profile(trace, warmup=warmup, runs=runs)
    return NodeProfile(times_ms=times, runs=runs, opt_level=level)


def map_converted_layers(original: onnx.ModelProto, converted: onnx.ModelProto) -> list[LayerMapping]:
    """Original nodes replaced in ``converted`` and their replacement nodes (graph order of
    the original). Only originals with at least one replacement are returned."""
    orig_names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(original.graph.node)]
    conv_names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(converted.graph.node)]
    orig_set, conv_set = set(orig_names), set(conv_names)
    replaced = [n for n in orig_names if n not in conv_set]
    by_len = sorted(replaced, key=len, reverse=True)
    children: dict[str, list[str]] = {n: [] for n in replaced}
    for name in conv_names:
        if name in orig_set:
            continue
        for cand in by_len:
            if name.startswith(cand + "."):
                children[cand].append(name)
                break
    return [LayerMapping(n, tuple(children[n])) for n in replaced if children[n]]
