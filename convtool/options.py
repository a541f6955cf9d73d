"""The user's choices, as frozen objects passed down the pipeline.

Depends on nothing above it (only :mod:`convtool.errors`): the CLI builds these objects from
its flags, the library validates them at construction, every module below reads them.  No
flag names live here except in error messages, which name the flag a CLI user would change.

* :class:`RankPolicy`: how each layer's rank is chosen.
* :class:`ConvertOptions`: one conversion, including the optional drivers (calibration refit,
  drift-budget search, latency tuning), each ``None`` when off.
* :class:`SessionOptions`: onnxruntime session settings shared by every timing and run.
* :class:`CalibrationOptions` / :class:`ImagePreprocess`: calibration data and refit.
* :class:`FinetuneOptions`: ``--finetune`` distillation.
* :class:`LatencyOptions`: ``--latency-aware`` timing (and every other measurement).
* :class:`SweepOptions`: ``convtool sweep``'s budgets and timing runs.
* :class:`QuantizeOptions`: ``--quantize int8`` (onnxruntime's static INT8 quantization).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from convtool.errors import OptionError

RankKind = Literal["fixed", "full", "energy"]
RANK_KINDS: tuple[str, ...] = ("fixed", "full", "energy")
Layout = Literal["multiplier", "repeat", "branches", "pointwise_first", "auto"]
LAYOUTS: tuple[str, ...] = ("multiplier", "repeat", "branches", "pointwise_first", "auto")
OptLevel = Literal["disable", "basic", "extended", "all"]
OPT_LEVELS: tuple[str, ...] = ("disable", "basic", "extended", "all")
DriftMetric = Literal["rel_l2", "top1"]
DRIFT_METRICS: tuple[str, ...] = ("rel_l2", "top1")
Objective = Literal["latency", "macs", "params"]
OBJECTIVES: tuple[str, ...] = ("latency", "macs", "params")
CPU_PROVIDER = "CPUExecutionProvider"
QuantTypeName = Literal["uint8", "int8"]
QUANT_TYPES: tuple[str, ...] = ("uint8", "int8")
CalibrationMethodName = Literal["minmax", "percentile", "entropy"]
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class RankPolicy:
    """How each layer's rank is chosen, validated at construction.

    ``RankPolicy("fixed", r)``: rank ``r`` (a positive integer; capped at the layer's full
    rank, and the record says so); ``RankPolicy("full")``: exact factorisation;
    ``RankPolicy("energy", e)``: the smallest rank keeping at least ``e`` (0 < e <= 1) of the
    spectral energy, averaged over the layer's input channels.  ``RankPolicy.fixed(2)`` etc.
    say the same more briefly.
    """

    kind: RankKind = "fixed"
    value: float = 1

    def __post_init__(self) -> None:
        if self.kind not in RANK_KINDS:
            hint = f"; for rank {self.kind} write RankPolicy('fixed', {self.kind})" if isinstance(self.kind, int) else ""
            raise OptionError(f"RankPolicy kind must be one of {', '.join(RANK_KINDS)}, got {self.kind!r}{hint}")
        if self.kind == "fixed":
            if isinstance(self.value, bool) or float(self.value) != int(self.value) or int(self.value) < 1:
                raise OptionError(f"rank must be a positive integer, got {self.value!r}")
        elif self.kind == "energy" and not 0.0 < float(self.value) <= 1.0:
            raise OptionError(f"energy must be in (0, 1], got {self.value!r}")

    @classmethod
    def fixed(cls, rank: int) -> RankPolicy:
        return cls("fixed", rank)

    @classmethod
    def full(cls) -> RankPolicy:
        return cls("full", 0)

    @classmethod
    def energy(cls, fraction: float) -> RankPolicy:
        return cls("energy", fraction)

    def describe(self) -> str:
        if self.kind == "full":
            return "full rank (exact)"
        if self.kind == "energy":
            return f"energy >= {self.value:g}"
        return f"rank {int(self.value)}"


@dataclass(frozen=True)
class SessionOptions:
    """onnxruntime session settings for timing and for running models.

    ``threads``: intra-op threads (``None``: onnxruntime's default, every core - used for
    calibration runs, never for timing); ``opt_level``: graph optimisation; ``spinning``:
    let intra-op threads spin (off: spinning sessions in one process disturb each other, and
    numpy work between runs would lose its cores); ``providers``: execution providers in
    fallback order (an unavailable one is an error, never a silent CPU fallback).
    """

    threads: int | None = 1
    opt_level: OptLevel = "all"
    spinning: bool = False
    providers: tuple[str, ...] = (CPU_PROVIDER,)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}")
        if self.opt_level not in OPT_LEVELS:
            raise OptionError(f"--opt-level must be one of {', '.join(OPT_LEVELS)}, got {self.opt_level!r}")
        if not self.providers:
            raise OptionError("at least one execution provider is needed")


@dataclass(frozen=True)
class ImagePreprocess:
    """How a folder of images becomes one model input.

    Each image is opened with Pillow, converted to ``channel_order`` (``L`` = greyscale, one
    channel), resized to ``size`` = (height, width) with bilinear filtering, scaled to [0, 1]
    (``pixel / 255``), normalised per channel as ``(x - mean) / std`` (one value applies to every
    channel) and laid out as ``layout`` with the samples stacked on the first axis.
    """

    size: tuple[int, int] | None = None  # None: taken from the model input's static shape
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR", "L"] = "RGB"

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise OptionError(f"--image-size must be HEIGHT,WIDTH with positive values, got {self.size}")
        if self.layout not in ("NCHW", "NHWC"):
            raise OptionError(f"--image-layout must be NCHW or NHWC, got {self.layout!r}")
        if self.channel_order not in ("RGB", "BGR", "L"):
            raise OptionError(f"--channel-order must be RGB, BGR or L, got {self.channel_order!r}")
        if not self.mean or not self.std:
            raise OptionError("--image-mean and --image-std need at least one value")
        if any(s <= 0 for s in self.std):
            raise OptionError(f"--image-std values must be > 0, got {self.std}")


@dataclass(frozen=True)
class CalibrationOptions:
    """Settings of the least-squares refit (see :mod:`convtool.core.refit`).

    ``source``: an ``.npz`` (one array per model input, samples on axis 0) or a folder of
    images / ``.npy`` samples; ``None`` when the caller passes arrays.  ``holdout``: fraction
    of samples kept aside to choose the ridge strength, to accept a refit only when it lowers
    the held-out error, and to measure drift on data no fit saw.  ``max_samples``: use at most
    this many samples (seeded choice).  ``batch_size``: samples per onnxruntime run.
    ``max_positions``: per layer and batch, at most this many spatial positions enter the
    least squares (seeded subsampling; 0 = all).  ``factors``: ``"data-aware"`` fits both
    factors to the data (alternating least squares on input-patch moments, kept only where it
    lowers the held-out error, see :mod:`convtool.core.als`); ``"pointwise"`` refits only the
    pointwise weights.  ``iterations``: at most this many alternating rounds per layer (0: the
    whitened-SVD start and the pointwise solve only).
    """

    source: str | None = None
    holdout: float = 0.2
    max_samples: int = 512
    batch_size: int = 32
    max_positions: int = 65536
    seed: int = 0
    image: ImagePreprocess | None = None
    factors: Literal["data-aware", "pointwise"] = "data-aware"
    iterations: int = 10

    def __post_init__(self) -> None:
        if self.factors not in ("data-aware", "pointwise"):
            raise OptionError(f"--refit must be data-aware or pointwise, got {self.factors!r}")
        if self.iterations < 0:
            raise OptionError(f"ALS iterations must be >= 0, got {self.iterations}")
        if not 0.0 <= self.holdout < 1.0:
            raise OptionError(f"--holdout must be in [0, 1), got {self.holdout}")
        if self.max_samples < 1:
            raise OptionError(f"--calibration-samples must be >= 1, got {self.max_samples}")
        if self.batch_size < 1:
            raise OptionError(f"calibration batch size must be >= 1, got {self.batch_size}")
        if self.max_positions < 0:
            raise OptionError(f"max_positions must be >= 0, got {self.max_positions}")


@dataclass(frozen=True)
class LatencyOptions:
    """``--latency-aware``: time each candidate layer against its replacement and keep only
    replacements measurably faster (see :mod:`convtool.search.latency`).

    ``threads`` / ``opt_level`` are the onnxruntime session options the model will be deployed
    with; ``cache_dir`` holds per-shape timings (``None``: ``~/.cache/convtool``);
    ``margin``: the smallest speedup worth a conversion (0.05 = 5 %).  A layer pair is timed
    until its interval decides (:mod:`convtool.search.latency`): looks at ``min_runs``, doubling
    up to ``max_runs`` paired runs, at most ``budget_ms`` of wall time.  ``confirm``: time the
    whole model before/after the same way (``confirm_runs`` doubling up to ``confirm_max_runs``,
    at most ``confirm_budget_ms``) and keep the original model unless the converted one is
    faster beyond noise.
    """

    threads: int = 1
    opt_level: OptLevel = "all"
    cache_dir: str | None = None
    use_cache: bool = True
    margin: float = 0.05
    budget_ms: float = 400.0
    min_runs: int = 20
    max_runs: int = 320
    confirm: bool = True
    confirm_runs: int = 40
    confirm_max_runs: int = 320
    confirm_budget_ms: float = 5000.0
    providers: tuple[str, ...] = (CPU_PROVIDER,)

    def __post_init__(self) -> None:
        self.session  # validates threads, opt level and providers  # noqa: B018
        if not 0.0 <= self.margin < 1.0:
            raise OptionError(f"latency margin must be in [0, 1), got {self.margin}")
        if self.min_runs < 3 or self.max_runs < self.min_runs or self.confirm_runs < 3:
            raise OptionError("latency-aware runs must be >= 3 (and max_runs >= min_runs)")
        if self.confirm_max_runs < self.confirm_runs or self.budget_ms <= 0 or self.confirm_budget_ms <= 0:
            raise OptionError("latency-aware caps must be positive (and confirm_max_runs >= confirm_runs)")

    @property
    def session(self) -> SessionOptions:
        """Timing sessions: the deployment's threads and opt level, spinning off."""
        return SessionOptions(threads=self.threads, opt_level=self.opt_level, spinning=False,
                              providers=self.providers)


@dataclass(frozen=True)
class SweepOptions:
    """``convtool sweep``: the drift budgets to search, and how the results are timed.

    ``budgets``: one greedy selection per value (ascending, duplicates dropped); ``runs``: the
    first look of the timing of each point's model against the original (as ``convtool report``
    times a pair: interleaved, in rounds of fresh sessions), which goes on, doubling, until the
    point's interval excludes 1, ``max_runs`` (``None``: 8 x ``runs``) or ``max_seconds`` per
    point; ``warmup``: untimed runs per session and round; ``save_models``: keep each point's
    model (the caller writes them); ``int8_baseline``: add the INT8-quantized original as a
    reference point, every point timed against it too (always under ``--quantize int8``;
    needs calibration data).
    """

    budgets: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1)
    runs: int = 50
    warmup: int = 5
    save_models: bool = False
    max_runs: int | None = None
    max_seconds: float = 30.0
    int8_baseline: bool = False

    @property
    def run_cap(self) -> int:
        return max(self.runs, self.max_runs if self.max_runs is not None else 8 * self.runs)

    def __post_init__(self) -> None:
        if not self.budgets:
            raise OptionError("--budgets needs at least one value")
        if any(not math.isfinite(b) for b in self.budgets):  # nan is not "< 0", and inf is no budget
            raise OptionError(f"--budgets must be finite numbers, got {','.join(f'{b:g}' for b in self.budgets)}")
        if any(not b >= 0.0 for b in self.budgets):
            raise OptionError(f"--budgets must be >= 0, got {','.join(f'{b:g}' for b in self.budgets)}")
        if self.runs < 3:
            raise OptionError(f"--runs must be >= 3, got {self.runs}")
        if self.warmup < 0:
            raise OptionError(f"--warmup must be >= 0, got {self.warmup}")
        if self.max_seconds <= 0:
            raise OptionError(f"the sweep's timing cap must be > 0 s, got {self.max_seconds}")

    @property
    def sorted_budgets(self) -> tuple[float, ...]:
        return tuple(sorted(set(float(b) for b in self.budgets)))


@dataclass(frozen=True)
class FinetuneOptions:
    """``--finetune``: distil the original model into the converted one (see
    :mod:`convtool.search.finetune`; needs the ``[finetune]`` extra, torch).

    Training stops after ``steps`` optimiser steps or ``seconds`` of training, whichever comes
    first (``seconds=None``: steps only).  ``lr``: each trained tensor's Adam step size as a
    fraction of its scale (a weight's RMS; a bias: the RMS of its conv's output).
    ``feature_weight``: weight of the converted layers' outputs in the loss, beside the model
    outputs; ``temperature``: of the KL term on class-score outputs (0 turns it off).
    ``noise`` / ``shift``: augmentation (Gaussian noise as a fraction of each input channel's
    std; random shifts up to this fraction of each spatial size); ``crop``: train on random
    ``crop``-sized spatial crops (models whose spatial dims are symbolic).  ``batch_size``:
    samples per step; ``threads``: torch intra-op threads while training (``None``: torch's
    default, every core; the default 1 because on a busy 2-core machine a digits-CNN training
    step took 1.1-1.4 s on one thread and 4.2 s on two).  With ``--max-drift`` the configuration the search chose (by refitted
    drift) is fine-tuned.
    """

    steps: int = 600
    seconds: float | None = 180.0
    batch_size: int = 32
    lr: float = 1e-2
    feature_weight: float = 0.1
    temperature: float = 4.0
    noise: float = 0.05
    shift: float = 0.0625
    crop: int | None = None
    threads: int | None = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise OptionError(f"--finetune-steps must be >= 1, got {self.steps}")
        if self.seconds is not None and not self.seconds > 0:
            raise OptionError(f"--finetune-seconds must be > 0, got {self.seconds}")
        if self.batch_size < 1:
            raise OptionError(f"fine-tune batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0 or self.feature_weight < 0 or self.temperature < 0:
            raise OptionError("fine-tune lr must be > 0, feature weight and temperature >= 0")
        if self.noise < 0 or not 0 <= self.shift < 0.5:
            raise OptionError("fine-tune noise must be >= 0 and shift in [0, 0.5)")
        if self.crop is not None and self.crop < 1:
            raise OptionError(f"fine-tune crop must be >= 1, got {self.crop}")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"fine-tune threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class SelectRules:
    """What :func:`convtool.graph.select.find_convs` needs: which Convs may be converted."""

    min_in_channels: int = 8
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    fold_batchnorm: bool = True


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that shapes a conversion. Defaults match the CLI's defaults.

    The pure conversion step reads the rank policy, selection, layout, shapes and ``check``;
    the drivers above it read ``calibration`` (refit), ``max_drift`` / ``metric`` /
    ``search_ranks`` / ``objective`` (drift-budget search) and ``latency_aware`` (timing), each
    off when ``None``.  ``objective`` is what the search maximises: ``latency`` (measured time
    saved, the default), ``macs`` or ``params``.  ``timing`` holds the session options and cache
    of measurements taken without ``--latency-aware`` (the latency objective, the end-to-end
    check); :attr:`timing_options` is the one to read.
    """

    rank: RankPolicy = field(default_factory=RankPolicy)
    min_in_channels: int = 8
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    fold_batchnorm: bool = True
    layout: Layout = "auto"
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    check: bool = True
    latency_aware: LatencyOptions | None = None
    calibration: CalibrationOptions | None = None
    max_drift: float | None = None
    metric: DriftMetric = "rel_l2"
    search_ranks: tuple[int, ...] = (1, 2, 4)
    finetune: FinetuneOptions | None = None  # --finetune (needs calibration data)
    objective: Objective = "latency"
    timing: LatencyOptions | None = None
    quantize: QuantizeOptions | None = None  # --quantize int8 (needs calibration data)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise OptionError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not isinstance(self.rank, RankPolicy):
            raise OptionError(f"rank must be a RankPolicy, got {self.rank!r}")
        if self.max_drift is not None and not self.max_drift >= 0.0:
            raise OptionError(f"--max-drift must be >= 0, got {self.max_drift}")
        if self.metric not in DRIFT_METRICS:
            raise OptionError(f"--metric must be one of {', '.join(DRIFT_METRICS)}, got {self.metric!r}")
        if not self.search_ranks or any(int(r) < 1 for r in self.search_ranks):
            raise OptionError(f"search ranks must be positive integers, got {self.search_ranks}")
        if self.min_in_channels < 1:
            raise OptionError(f"--min-in-channels must be >= 1, got {self.min_in_channels}")
        if self.layout not in LAYOUTS:
            raise OptionError(f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise OptionError(f"invalid regular expression {pattern!r}: {exc}") from None

    @property
    def input_shape_map(self) -> dict[str, tuple[int, ...]]:
        return dict(self.input_shapes)

    @property
    def select_rules(self) -> SelectRules:
        return SelectRules(self.min_in_channels, self.include, self.exclude, self.fold_batchnorm)

    @property
    def calibration_or_default(self) -> CalibrationOptions:
        return self.calibration or CalibrationOptions()

    @property
    def timing_options(self) -> LatencyOptions:
        """How every measurement of this conversion is taken (``--latency-aware``'s options when
        on, else ``timing``, else the defaults): threads, opt level, providers, cache."""
        return self.latency_aware or self.timing or LatencyOptions()


@dataclass(frozen=True)
class QuantizeOptions:
    """Static INT8 quantization with onnxruntime's tools (see :mod:`convtool.runtime.quantize`,
    whose docstring has the measurements behind these defaults).

    ``activations`` / ``weights``: the integer types (QDQ format); ``per_channel``: one weight
    scale per output channel; ``method``: how activation ranges are calibrated (``minmax``,
    ``percentile``, ``entropy``); ``op_types``: the op types to quantize (empty: every op type
    onnxruntime quantizes); ``equalize``: cross-layer equalization of converted depthwise ->
    pointwise pairs first (:mod:`convtool.core.equalize`); ``samples``: at most this many
    calibration samples (seeded choice); ``batch_size``: samples per calibration run.
    """

    activations: QuantTypeName = "uint8"
    weights: QuantTypeName = "int8"
    per_channel: bool = True
    method: CalibrationMethodName = "minmax"
    op_types: tuple[str, ...] = ()
    float_tail: bool = True
    equalize: bool = True
    samples: int = 64
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for what, value in (("activation", self.activations), ("weight", self.weights)):
            if value not in QUANT_TYPES:
                raise OptionError(f"{what} type must be one of {', '.join(QUANT_TYPES)}, got {value!r}")
        if self.method not in CALIBRATION_METHODS:
            raise OptionError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                              f"got {self.method!r}")
        if self.samples < 1:
            raise OptionError(f"quantization calibration samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise OptionError(f"quantization batch size must be >= 1, got {self.batch_size}")

    def describe(self) -> str:
        """e.g. ``QDQ, uint8 activations (minmax), int8 weights per channel``."""
        weights = f"{self.weights} weights {'per channel' if self.per_channel else 'per tensor'}"
        ops = f", ops {'/'.join(self.op_types)}" if self.op_types else ""
        tail = ", float output tail" if self.float_tail else ""
        return f"QDQ, {self.activations} activations ({self.method}), {weights}{ops}{tail}"


#: Gate name -> (option flag, direction). ``min`` passes when value >= threshold.
GATES: dict[str, tuple[str, str]] = {
    "min_speedup": ("--min-speedup", "min"),
    "max_drift": ("--max-drift", "max"),
    "min_top1_agreement": ("--min-top1-agreement", "min"),
    "max_accuracy_drop": ("--max-accuracy-drop", "max"),
    "min_param_reduction": ("--min-param-reduction", "min"),
    "min_mac_reduction": ("--min-mac-reduction", "min"),
}


@dataclass(frozen=True)
class ReportOptions:
    """Everything that shapes a report. Defaults match the CLI's.

    ``input_shapes``: ``(name, dims)`` pairs (``--input-shape``). ``runs``: timed runs per model
    of a single model, and the *first look* of a pair's timing, which goes on (doubling) until
    the speedup's interval excludes 1, ``max_runs`` runs (``None``: 8 x ``runs``; equal to
    ``runs`` for a fixed count) or ``max_seconds`` of timing; ``warmup``: untimed runs per
    session and round. ``threads``/``opt_level``/``allow_spinning``: onnxruntime session
    options. ``latency``: time the models at all. ``aa_check``: add an A/A control session.
    ``profile``: per-node profiler times. ``inputs``: an ``.npz`` of samples (and ``labels``).
    ``seed``: random inputs. ``int8_calibration``: an ``.npz`` or folder of ``.npy`` samples to
    quantize the original on; set, the report adds the INT8-quantized original
    (:class:`~convtool.report.Int8Baseline`; needs a converted model). Gates are ``None`` when not requested.
    """

    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    runs: int = 100
    warmup: int = 10
    max_runs: int | None = None
    max_seconds: float = 30.0
    threads: int = 1
    opt_level: str = "all"
    allow_spinning: bool = False
    providers: tuple[str, ...] = (CPU_PROVIDER,)
    latency: bool = True
    aa_check: bool = False
    profile: bool = False
    inputs: str | None = None
    seed: int = 0
    int8_calibration: str | None = None
    min_speedup: float | None = None
    max_drift: float | None = None
    min_top1_agreement: float | None = None
    max_accuracy_drop: float | None = None
    min_param_reduction: float | None = None
    min_mac_reduction: float | None = None

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise OptionError(f"--runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            raise OptionError(f"--warmup must be >= 0, got {self.warmup}")
        if self.max_runs is not None and self.max_runs < self.runs:
            raise OptionError(f"max_runs must be >= --runs ({self.runs}), got {self.max_runs}")
        if not self.max_seconds > 0:
            raise OptionError(f"the timing cap must be > 0 s, got {self.max_seconds}")
        self.session  # validates threads, opt level, providers  # noqa: B018
        for name, (flag, _) in GATES.items():
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise OptionError(f"{flag} must be a finite number, got {value}")
        if self.min_speedup is not None and self.min_speedup <= 0:
            raise OptionError(f"--min-speedup must be > 0, got {self.min_speedup}")
        if self.max_drift is not None and self.max_drift < 0:
            raise OptionError(f"--max-drift must be >= 0, got {self.max_drift}")
        if self.min_top1_agreement is not None and not 0 <= self.min_top1_agreement <= 1:
            raise OptionError(f"--min-top1-agreement must be in [0, 1], got {self.min_top1_agreement}")
        if self.max_accuracy_drop is not None and not -1 <= self.max_accuracy_drop <= 1:
            raise OptionError(f"--max-accuracy-drop must be in [-1, 1], got {self.max_accuracy_drop}")
        for name in ("min_param_reduction", "min_mac_reduction"):
            value = getattr(self, name)
            if value is not None and value > 1:
                raise OptionError(f"{GATES[name][0]} must be <= 1 (a fraction), got {value}")

    @property
    def input_shape_map(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v) for k, v in self.input_shapes}

    @property
    def run_cap(self) -> int:
        return self.max_runs if self.max_runs is not None else 8 * self.runs

    @property
    def session(self) -> SessionOptions:
        return SessionOptions(threads=self.threads, opt_level=self.opt_level,  # type: ignore[arg-type]
                              spinning=self.allow_spinning, providers=tuple(self.providers))

    def requested_gates(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in GATES if getattr(self, name) is not None}
