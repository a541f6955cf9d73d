"""Automatic per-layer ranks under a whole-model drift budget (``--max-drift D``).

The search
----------
Candidates are the layers that qualify for conversion (selection rules and filters as usual)
at each rank of ``options.search_ranks`` (default 1, 2, 4) that reduces MACs, plus "leave
unconverted".  The drift of a configuration is measured on the whole model's outputs against
the original's, on the calibration data (with ``--calibration``; the refit runs inside every
evaluation, so the search sees the refitted accuracy) or on seeded random inputs (without it;
no refit, and the record says so):

* ``rel_l2`` (default): for each output ``||y' - y|| / ||y||``, then the worst output, so
  every output is normalised by its own norm before combining.  Outputs with a channel axis
  (3-D and more, channels on axis 1) are normalised *per channel*: the root mean square over
  channels of ``||y'_c - y_c|| / ||y_c||``.  A detector that packs boxes and class scores in
  one tensor needs it: on YOLOv8n (``[N, 4 + 18, anchors]``) a whole-tensor relative L2 of
  0.05, dominated by pixel-sized box coordinates, hid a class-score drift of 0.57 and the
  search converted layers that changed 20% of the detections.  2-D outputs (class scores
  ``[N, C]``) keep the whole-tensor form.
* ``top1``: ``1 - top-1 agreement`` on every output shaped like class scores ``[N, C]``
  (the worst one); the budget ``D`` then means "at least ``1 - D`` of predictions unchanged".

1. Sensitivity: each (layer, rank) is converted alone and its drift measured.
2. Greedy: layers are ordered by MACs saved per unit of drift (their best rank alone; rel-L2
   drift orders even when the budget is on top-1, because top-1 is too coarse to rank by).
   Each layer in turn tries its ranks from the cheapest; a rank is kept when the whole model
   with every layer accepted so far plus this one stays within the budget (re-checked, with
   the refit redone, since errors compound); otherwise the next rank, else the layer stays
   unconverted.

Cost: with ``L`` candidate layers and ``R`` ranks, at most ``2 L R`` evaluations (``L R``
sensitivity runs, at most ``L R`` greedy checks; ranks over budget alone are not re-tried),
plus ``R`` data-free plans and the final conversion.  An evaluation is one conversion, one
run of the converted model over the data and, with calibration, the sequential refit of the
layers it converts (two onnxruntime sessions per refitted layer).  On the digits sample CNN
(5 candidate layers, ranks 1/2/4, 300 calibration images) that is about 30 evaluations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx

from convtool.calibrate.capture import run_outputs
from convtool.calibrate.data import CalibrationData, model_inputs
from convtool.calibrate.pipeline import calibration_options, prepare
from convtool.errors import OptionError

log = logging.getLogger(__name__)

RANDOM_SAMPLES = 16
RANDOM_WARNING = ("--max-drift without --calibration: drift measured on {n} seeded random inputs, "
                  "which say little about real data; pass --calibration data.npz")


@dataclass(frozen=True)
class Drift:
    """Whole-model drift: the budgeted ``value``, the per-channel-normalised relative L2 the
    search uses, the plain whole-tensor relative L2 (as ``convtool report`` shows it) and the
    top-1 agreement of class-score outputs."""

    value: float
    rel_l2: float
    top1_agreement: float | None
    plain_rel_l2: float = 0.0


def channel_rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Relative L2 of one output; per channel (axis 1, RMS over channels) for 3-D and more.

    A channel whose reference is (near) zero is measured against the whole output's RMS
    channel norm instead, so silent channels neither vanish nor explode.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.ndim < 3:
        norm = float(np.linalg.norm(a))
        diff = float(np.linalg.norm(b - a))
        return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))
    axes = (0, *range(2, a.ndim))
    norms = np.sqrt(np.sum(a * a, axis=axes))
    diffs = np.sqrt(np.sum((b - a) ** 2, axis=axes))
    floor = 1e-3 * float(np.sqrt(np.mean(norms ** 2)))
    if floor == 0.0:
        return 0.0 if not diffs.any() else float("inf")
    return float(np.sqrt(np.mean((diffs / np.maximum(norms, floor)) ** 2)))


def measure_drift(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], metric: str) -> Drift:
    """Worst (per-channel) relative L2 over outputs, top-1 agreement over class-score outputs;
    ``value`` is the one ``metric`` budgets."""
    from convtool.analysis.drift import compare_outputs

    d = compare_outputs(reference, candidate)
    rel = max(channel_rel_l2(reference[n], candidate[n]) for n in reference)
    if metric == "top1":
        if d.top1_agreement is None:
            raise OptionError("--metric top1 needs an output shaped like class scores [N, C]; use --metric rel_l2")
        return Drift(1.0 - d.top1_agreement, rel, d.top1_agreement, d.rel_l2)
    return Drift(rel, rel, d.top1_agreement, d.rel_l2)


def random_inputs(model: onnx.ModelProto, options, count: int = RANDOM_SAMPLES, seed: int = 0) -> CalibrationData:
    """Seeded standard-normal samples shaped like the model's inputs (symbolic dims from
    ``--input-shape``, else 1 for the batch axis)."""
    rng = np.random.default_rng(seed)
    given = options.input_shape_map
    arrays = {}
    for spec in model_inputs(model):
        if not np.issubdtype(spec.dtype, np.floating):
            raise OptionError(f"input {spec.name!r} is {spec.dtype}: --max-drift needs --calibration data for it")
        dims = given.get(spec.name, spec.dims)
        if dims is None:
            raise OptionError(f"input {spec.name!r} has an unknown rank; give --input-shape or --calibration")
        rest = list(dims[1:])
        if any(d is None or d == 0 for d in rest):
            raise OptionError(f"input {spec.name!r} has symbolic dims {list(dims)}; give --input-shape "
                              f"{spec.name}=1,... or --calibration data")
        arrays[spec.name] = rng.standard_normal((count, *rest)).astype(spec.dtype)
    return CalibrationData(arrays, f"{count} seeded random inputs")


@dataclass
class Trial:
    ranks: dict[str, int]
    drift: Drift
    macs_after: int | None


def convert_within_budget(model: onnx.ModelProto, options, source: str,
                          calibration_data: Mapping[str, np.ndarray] | CalibrationData | None):
    """Search per-layer ranks (see the module docstring) and return the final conversion."""
    from convtool.api import convert_model
    from convtool.options import RankPolicy

    start = time.perf_counter()
    budget = float(options.max_drift)
    # trials never time layers: --latency-aware applies once, to the final conversion
    base = replace(options, max_drift=None, layer_ranks=(), latency_aware=None)
    base, data = prepare(model, base, calibration_data)
    refit = data is not None
    if refit:  # trials sharing a prefix of converted layers reuse its refits (capture._calibrate)
        data = replace(data, memo={})
    warnings: list[str] = []
    if data is None:
        data = random_inputs(model, base, seed=calibration_options(base).seed)
        warnings.append(RANDOM_WARNING.format(n=data.count))
    batch = calibration_options(base).batch_size
    reference = run_outputs(model, data, batch)
    evaluations = 0

    def convert(ranks: dict[str, int], final: bool = False):
        opts = replace(base, layer_ranks=tuple(sorted(ranks.items())), check=base.check if final else False,
                       latency_aware=options.latency_aware if final else None)
        if not refit:
            opts = replace(opts, calibration=None)
        return convert_model(model, opts, source, calibration_data=data if refit else None)

    def evaluate(ranks: dict[str, int]) -> Trial:
        nonlocal evaluations
        evaluations += 1
        result = convert(ranks)
        drift = measure_drift(reference, run_outputs(result.model, data, batch), options.metric)
        return Trial(dict(ranks), drift, result.record.totals.macs_after)

    # candidates: which layers convert at which (effective) rank, and the MACs each saves
    saved: dict[str, dict[int, int]] = {}
    names: list[str] = []
    for r in sorted(set(int(x) for x in options.search_ranks)):
        plan = convert_model(model, replace(base, rank=RankPolicy("fixed", r), calibration=None, check=False), source)
        for layer in plan.record.layers:
            if not layer.converted:
                continue
            if layer.name not in saved:
                saved[layer.name] = {}
                names.append(layer.name)
            gain = (layer.macs_before or 0) - (layer.macs_after or 0)
            saved[layer.name].setdefault(int(layer.rank), gain)
    everything_off = {name: 0 for name in names}

    # 1. sensitivity of each (layer, rank) alone
    alone: dict[tuple[str, int], Drift] = {}
    for name in names:
        for r in saved[name]:
            alone[(name, r)] = evaluate({**everything_off, name: r}).drift
    order = sorted(names, key=lambda n: -max(saved[n][r] / max(alone[(n, r)].rel_l2, 1e-9) for r in saved[n]))

    # 2. greedy, re-checking the whole model
    chosen = dict(everything_off)
    notes: dict[str, str] = {}
    for name in order:
        fits = [r for r in sorted(saved[name]) if alone[(name, r)].value <= budget]
        if not fits:
            best = min(alone[(name, r)].value for r in saved[name])
            notes[name] = f"alone it drifts {best:.4g} > budget {budget:g}"
            continue
        for r in fits:
            trial = evaluate({**chosen, name: r})
            if trial.drift.value <= budget:
                chosen = trial.ranks
                break
        else:
            notes[name] = f"with the layers already chosen every rank exceeds budget {budget:g}"

    result = convert(chosen, final=True)
    final = measure_drift(reference, run_outputs(result.model, data, batch), options.metric)
    record = result.record
    for layer in record.layers:
        if layer.name in notes and not layer.converted:
            layer.reason = f"left unconverted by --max-drift: {notes[layer.name]}"
    if record.totals.converted == 0 and not any("no Conv qualified" in w for w in record.warnings):
        warnings.append(f"no layer fits the drift budget {budget:g}; the model is unchanged")
    record.warnings = list(record.warnings) + warnings
    record.rank_policy = f"max drift {budget:g} ({options.metric}), ranks {'/'.join(str(r) for r in options.search_ranks)}"
    search = {
        "metric": options.metric,
        "max_drift": budget,
        "drift": final.value,
        "rel_l2": final.rel_l2,
        "plain_rel_l2": final.plain_rel_l2,
        "top1_agreement": final.top1_agreement,
        "data": data.source,
        "samples": data.count,
        "refit": refit,
        "evaluations": evaluations,
        "seconds": round(time.perf_counter() - start, 3),
        "ranks": {name: chosen.get(name, 0) for name in names},
        "sensitivity": [
            {"name": n, "rank": r, "drift": d.value, "rel_l2": d.rel_l2, "top1_agreement": d.top1_agreement,
             "macs_saved": saved[n][r]}
            for (n, r), d in alone.items()
        ],
    }
    record.calibration = {**(record.calibration or {}), "search": search}
    log.info("max-drift search: %d evaluations, drift %.4g (budget %g)", evaluations, final.value, budget)
    return result
