"""Typed results of a conversion and their JSON form.

Plain data: the pure conversion step (:mod:`convtool.convert`) creates the record, each driver
returns its own summary (:class:`CalibrationSummary`, :class:`SearchSummary`,
:class:`LatencySummary`, :class:`FinetuneSummary`, :class:`QuantizationSummary`) which :mod:`convtool.api` attaches in one place, ``render/`` draws
them, ``--json`` writes ``ConversionRecord.to_dict()``.  The JSON keys are a contract with
deployment pipelines: add keys freely, never rename or remove one.  Unknown numbers are
``None`` (``null``), never 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["converted", "skipped"]


@dataclass
class LayerChange:
    """What happened to one Conv node."""

    name: str
    status: Status
    reason: str | None
    kernel: list[int]
    in_channels: int
    out_channels: int
    group: int
    rank: int | None = None
    params_before: int = 0
    params_after: int = 0
    macs_before: int | None = None
    macs_after: int | None = None
    weight_error: float | None = None
    layout: str | None = None
    folded_batchnorm: str | None = None
    new_nodes: list[str] = field(default_factory=list)
    note: str | None = None  # e.g. "rank capped at 9 (kernel taps)"
    # filled by calibration: relative output error of the layer before/after the refit
    output_error_before: float | None = None
    output_error_after: float | None = None
    # filled by --latency-aware: medians (ms) of the original conv and of its (best) replacement
    # at the layer's input shape, the speedup (median of paired ratios) with its interval, the
    # decision and every timed candidate layout
    latency_original_ms: float | None = None
    latency_replacement_ms: float | None = None
    latency_speedup: float | None = None
    latency_decision: str | None = None
    latency_candidates: list[dict[str, Any]] = field(default_factory=list)
    latency_ci_low: float | None = None  # the speedup's ~95 % interval (same statistic)
    latency_ci_high: float | None = None
    latency_resolved: bool | None = None  # False: the interval did not decide by the cap (kept)
    # filled by --max-drift: why the search chose this layer (rank, layout, gain per drift) or left it
    search_decision: str | None = None

    @property
    def converted(self) -> bool:
        return self.status == "converted"

    def skip(self, reason: str) -> None:
        """Turn a converted entry back into a skipped one (a driver undid it)."""
        self.status, self.reason = "skipped", reason
        self.params_after, self.new_nodes, self.rank, self.layout = self.params_before, [], None, None
        self.weight_error = None
        self.macs_after = self.macs_before


@dataclass
class Totals:
    conv_nodes: int
    converted: int
    skipped: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    macs_unknown_reason: str | None = None
    # where the counted ops' dims came from: "inferred" (ONNX shape inference) or "observed" (one
    # onnxruntime run, where inference gave up; convtool.runtime.observe); None when not counted
    macs_shapes: str | None = None

    @property
    def param_reduction(self) -> float | None:
        return 1.0 - self.params_after / self.params_before if self.params_before else None

    @property
    def mac_reduction(self) -> float | None:
        if not self.macs_before or self.macs_after is None:
            return None
        return 1.0 - self.macs_after / self.macs_before


@dataclass(frozen=True)
class LayerRefit:
    """One layer's calibration refit (errors: relative L2 of the layer output)."""

    name: str
    refitted: bool
    reason: str | None = None
    alpha: float | None = None
    output_error_before: float | None = None  # held-out, data-free weights
    output_error_after: float | None = None  # held-out, kept weights
    all_samples_error_before: float | None = None
    all_samples_error_after: float | None = None
    fit_positions: int = 0
    held_out_positions: int = 0
    method: str = "pointwise"  # what was kept: "als" (both factors), "pointwise" or "data-free"
    pointwise_error: float | None = None  # held-out error of the pointwise-only refit (for comparison)
    als_error: float | None = None  # held-out error of the data-aware factors
    moments: str | None = None  # "full" / "subspace" input-patch moments (data-aware only)
    iterations: int = 0


@dataclass(frozen=True)
class CalibrationSummary:
    """The sequential refit of a conversion."""

    source: str
    samples: int
    fit_samples: int
    held_out_samples: int
    method: str
    layers_refitted: int
    layers_kept_data_free: int
    sessions: int
    layers_reused: int
    seconds: float
    layers: tuple[LayerRefit, ...] = ()


@dataclass(frozen=True)
class Sensitivity:
    """One (layer, rank, layout) converted alone: its drift, the MACs it saves and, under the
    latency objective, the layer's measured time before and after (medians, ms); ``gain`` is
    what it saves in the objective's unit (ms, MACs or params)."""

    name: str
    rank: int
    drift: float
    rel_l2: float
    top1_agreement: float | None
    macs_saved: int
    layout: str | None = None
    gain: float | None = None
    original_ms: float | None = None
    replacement_ms: float | None = None


@dataclass(frozen=True)
class EndToEnd:
    """Whole original vs whole converted model, timed interleaved."""

    original_ms: float
    converted_ms: float
    speedup: float
    ci_low: float
    ci_high: float
    runs: int


@dataclass(frozen=True)
class SearchSummary:
    """The ``--max-drift`` search: what it promised, what it measured, how long it took."""

    metric: str
    max_drift: float
    drift: float
    rel_l2: float
    plain_rel_l2: float
    top1_agreement: float | None
    data: str
    samples: int
    refit: bool
    evaluations: int
    seconds: float
    ranks: dict[str, int]
    sensitivity: tuple[Sensitivity, ...] = ()
    held_out_drift: float | None = None  # the same as ``drift`` when data was held out
    held_out_samples: int = 0
    fitted_drift: float | None = None  # drift on the samples the refits used
    factors: str | None = None  # refit of the final model: "data-aware" / "pointwise" (trials: pointwise)
    objective: str = "latency"  # what the search maximised: latency (ms saved), macs or params
    layouts: dict[str, str] = field(default_factory=dict)  # chosen layers' layouts
    timed_candidates: int = 0  # (layer, rank, layout) candidates timed (latency objective)
    end_to_end: EndToEnd | None = None  # the final model against the original, interleaved
    dropped: tuple[str, ...] = ()  # layers dropped after the search so the whole model is faster
    slower: bool = False  # written although measured slower (only for --objective macs/params)
    bound: float | None = None  # 95 % upper confidence bound of the held-out drift (None: too few samples)
    certified: bool = False  # the bound keeps the budget
    attempts: tuple[dict, ...] = ()  # the verifications: internal budget, layers, drift, bound, kept, gain
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase
    capture_bytes: int = 0  # memory held by the cached activations and moments
    local_drift: float | None = None  # held-out drift of the plan with the local (sensitivity) fits
    finetune_attempts: tuple[dict, ...] = ()  # --finetune: each plan fine-tuned inside the search
    quantization_attempts: tuple[dict, ...] = ()  # --quantize int8: each quantized plan, its drift and speed


@dataclass(frozen=True)
class LatencySummary:
    """``--latency-aware``: how layers were timed and the end-to-end check."""

    threads: int
    opt_level: str
    allow_spinning: bool
    onnxruntime: str
    cpu: str
    margin: float
    layers_measured: int
    cache_hits: int
    cache_dir: str | None
    end_to_end: EndToEnd | None = None
    reverted: bool = False
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class FinetuneSummary:
    """``--finetune``: the distillation of the original model into the converted one.

    Drifts are :func:`convtool.analysis.drift.compare_outputs` ``.drift`` against the original
    model, measured with onnxruntime: ``*_before`` on the model as calibrated (the starting
    point), ``*_after`` on the fine-tuned weights.  ``kept``: the fine-tuned weights were kept
    (held-out drift dropped and onnxruntime reproduced the trained student); ``decision`` says
    why in words.  ``ort_error``: relative L2 between onnxruntime's outputs of the written-back
    model and the trained torch student's on the held-out samples.
    """

    kept: bool
    decision: str
    held_out_drift_before: float | None
    held_out_drift_after: float | None
    fit_drift_before: float | None = None
    fit_drift_after: float | None = None
    top1_agreement_before: float | None = None
    top1_agreement_after: float | None = None
    steps: int = 0
    stopped_by: str = ""  # "steps" | "time" | "not run"
    seconds: float = 0.0
    fit_samples: int = 0
    held_out_samples: int = 0
    layers: int = 0
    tensors: int = 0
    parameters: int = 0
    loss_first: float | None = None
    loss_last: float | None = None
    augmentation: str = ""
    loss: str = ""
    ort_error: float | None = None
    search: str | None = None  # how it composed with --max-drift
    torch_version: str | None = None


@dataclass(frozen=True)
class EqualizedPair:
    """One depthwise -> pointwise (or 1x1 -> depthwise) pair rescaled by cross-layer equalization
    (:mod:`convtool.core.equalize`): the two conv nodes, how many channels, the smallest and
    largest scale ``c`` applied to the first conv's channels, and the spread of the per-channel
    range ratios ``max(r1/r2, r2/r1)`` (geometric mean over channels) before and after (1 after
    a perfect balance)."""

    layer: str
    first: str
    second: str
    channels: int
    scale_min: float
    scale_max: float
    imbalance_before: float
    imbalance_after: float


@dataclass(frozen=True)
class QuantizationSummary:
    """``--quantize int8``: onnxruntime's static quantization of the written model.

    ``options``: the settings in words (format, types, calibration method); ``preprocess``:
    what onnxruntime's pre-processing step did (``"done"``, or why it was skipped);
    ``quantized_nodes``: the nodes with quantized inputs (DequantizeLinear consumers);
    ``equalized``: the pairs rescaled first; ``drift`` / ``drift_samples``: the quantized model
    against the *original* model (conversion and quantization together), on held-out
    calibration samples the quantizer did not see (``None`` when none were held out);
    ``size_before`` / ``size_after``: bytes of the serialised float and quantized models.
    """

    options: str
    activations: str
    weights: str
    per_channel: bool
    method: str
    op_types: tuple[str, ...]
    calibration: str
    samples: int
    preprocess: str
    quantized_nodes: int
    float_nodes: int  # the output tail left in float (QuantizeOptions.float_tail)
    onnxruntime: str
    seconds: float
    size_before: int
    size_after: int
    equalized: tuple[EqualizedPair, ...] = ()
    drift: float | None = None
    drift_samples: int = 0


@dataclass
class ConversionRecord:
    """The whole conversion: per-layer changes, whole-model totals, warnings, driver summaries."""

    input: str
    output: str | None
    layers: list[LayerChange]
    totals: Totals
    rank_policy: str = ""
    warnings: list[str] = field(default_factory=list)
    calibration: CalibrationSummary | None = None
    search: SearchSummary | None = None
    latency: LatencySummary | None = None
    finetune: FinetuneSummary | None = None
    quantization: QuantizationSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` record (non-finite floats become ``null``)."""
        calibration: dict[str, Any] | None = None
        if self.calibration is not None or self.search is not None:
            calibration = asdict(self.calibration) if self.calibration is not None else {}
            if self.search is not None:
                calibration["search"] = asdict(self.search)
        data = {
            "input": self.input,
            "output": self.output,
            "rank_policy": self.rank_policy,
            "layers": [asdict(layer) for layer in self.layers],
            "totals": {
                **asdict(self.totals),
                "param_reduction": self.totals.param_reduction,
                "mac_reduction": self.totals.mac_reduction,
            },
            "warnings": list(self.warnings),
            "calibration": calibration,
            "latency": None if self.latency is None else asdict(self.latency),
            "finetune": None if self.finetune is None else asdict(self.finetune),
            "quantization": None if self.quantization is None else asdict(self.quantization),
        }
        return finite(data)


@dataclass(frozen=True)
class SweepPoint:
    """One budget of ``convtool sweep``: what the search chose, measured on the evaluation data.

    ``search_drift`` is the search's own drift (on its held-out calibration split); ``drift``,
    ``rel_l2``, ``top1_agreement`` and ``accuracy`` (with labels) are measured on the evaluation
    data no fit or search saw.  ``speedup`` is ``exp(median(ln(original_i / point_i)))`` over the
    paired runs of one interleaved loop over the original and every point (rounds of fresh
    sessions), ``ci_low`` / ``ci_high`` its ~95 % interval from the same statistic
    (:func:`convtool.core.decide.speedup`); ``runs`` paired runs; ``resolved``: the interval
    excludes 1 (``False``: not resolved when the timing's cap was reached).
    ``pareto``: no other point is at least as fast and at least as accurate (on the sweep's
    x axis), and better in one.
    """

    budget: float
    search_drift: float
    drift: float
    rel_l2: float
    top1_agreement: float | None
    accuracy: float | None
    macs: int | None
    params: int
    converted: int
    ranks: dict[str, int]
    layouts: dict[str, str]
    latency_ms: float | None = None
    speedup: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    dropped: tuple[str, ...] = ()
    pareto: bool = False
    model: str | None = None  # the file written with --save-models
    finetuned: bool | None = None  # --finetune: its weights were kept (held-out drift dropped); None: not asked
    runs: int | None = None  # paired timed runs behind the speedup
    resolved: bool | None = None  # False: the interval still includes 1 at the timing's cap
    vs_int8: PairSpeed | None = None  # with the INT8 original: this point against it (INT8 original / point)


@dataclass(frozen=True)
class PairSpeed:
    """A speedup of B over A from one pair timing (``convtool report``'s protocol): ``speedup``
    with its ~95 % interval ``ci_low`` / ``ci_high``, ``runs`` paired runs, ``resolved``: the
    interval excludes 1 (``None`` when not timed: a model against itself)."""

    speedup: float
    ci_low: float
    ci_high: float
    runs: int | None = None
    resolved: bool | None = None


@dataclass(frozen=True)
class SweepInt8:
    """``convtool sweep``'s reference point: the original quantized to INT8 by onnxruntime
    (:func:`convtool.runtime.quantize.quantize_model`, on the search's fit samples, the
    options of ``--quantize int8``), measured like every point: on the evaluation data, and
    timed against the original (``speedup``, ``ci_low``, ``ci_high``, ``runs``, ``resolved``)."""

    calibration: str
    samples: int
    macs: int | None
    params: int
    size_bytes: int
    latency_ms: float | None
    speedup: float | None
    ci_low: float | None
    ci_high: float | None
    runs: int | None
    resolved: bool | None
    drift: float
    rel_l2: float
    top1_agreement: float | None
    accuracy: float | None


@dataclass(frozen=True)
class SweepBaseline:
    """The original model, measured like every point."""

    macs: int | None
    params: int
    latency_ms: float | None
    accuracy: float | None
    convs: int


@dataclass
class SweepRecord:
    """``convtool sweep``: one sensitivity analysis, one greedy selection per budget, every
    result measured on held-out evaluation data.  ``x_axis`` names the quality measure the
    picture and the Pareto front use: ``accuracy`` (labels given), ``top1_agreement`` (class
    scores) or ``drift``."""

    input: str
    calibration: str
    evaluation: str
    eval_samples: int
    objective: str
    metric: str
    x_axis: str
    original: SweepBaseline
    points: list[SweepPoint]
    environment: dict[str, Any]
    sensitivity: tuple[Sensitivity, ...] = ()
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    evaluations: int = 0
    int8: SweepInt8 | None = None  # --int8-baseline / --quantize int8: the INT8-quantized original
    quantize: str | None = None  # --quantize int8: every point is the quantized model

    def to_dict(self) -> dict[str, Any]:
        """``DIR/sweep.json`` (non-finite floats become ``null``)."""
        data = asdict(self)
        for point in data["points"]:
            point["mac_reduction"] = (1.0 - point["macs"] / self.original.macs
                                      if point["macs"] is not None and self.original.macs else None)
            point["param_reduction"] = 1.0 - point["params"] / self.original.params if self.original.params else None
        return finite(data)


def finite(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by ``None`` and tuples by lists (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
