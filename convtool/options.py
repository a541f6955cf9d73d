"""The user's choices for a conversion, as one frozen object passed down the pipeline."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from convtool.calibrate.config import CalibrationOptions
from convtool.errors import OptionError

RankKind = Literal["fixed", "full", "energy"]
Layout = Literal["multiplier", "repeat", "branches", "pointwise_first", "auto"]
LAYOUTS: tuple[str, ...] = ("multiplier", "repeat", "branches", "pointwise_first", "auto")
OPT_LEVELS: tuple[str, ...] = ("disable", "basic", "extended", "all")
DriftMetric = Literal["rel_l2", "top1"]
DRIFT_METRICS: tuple[str, ...] = ("rel_l2", "top1")


@dataclass(frozen=True)
class RankPolicy:
    """How each layer's rank is chosen.

    ``fixed``: rank ``value`` (clamped to the layer's full rank); ``full``: exact
    factorisation; ``energy``: the smallest rank keeping at least ``value`` of the spectral
    energy, averaged over the layer's input channels.
    """

    kind: RankKind = "fixed"
    value: float = 1

    @staticmethod
    def parse(rank: str | None, energy: float | None) -> RankPolicy:
        """Build the policy from ``--rank`` / ``--energy``; raises OptionError when invalid."""
        if rank is not None and energy is not None:
            raise OptionError("--rank and --energy are mutually exclusive")
        if energy is not None:
            if not 0.0 < energy <= 1.0:
                raise OptionError(f"--energy must be in (0, 1], got {energy}")
            return RankPolicy("energy", float(energy))
        if rank is None:
            return RankPolicy("fixed", 1)
        text = str(rank).strip().lower()
        if text == "full":
            return RankPolicy("full", 0)
        try:
            value = int(text)
        except ValueError:
            raise OptionError(f"--rank must be a positive integer or 'full', got {rank!r}") from None
        if value < 1:
            raise OptionError(f"--rank must be >= 1, got {value}")
        return RankPolicy("fixed", value)

    def describe(self) -> str:
        if self.kind == "full":
            return "full rank (exact)"
        if self.kind == "energy":
            return f"energy >= {self.value:g}"
        return f"rank {int(self.value)}"


@dataclass(frozen=True)
class LatencyOptions:
    """``--latency-aware``: time each candidate layer against its replacement and keep only
    replacements measurably faster (see :mod:`convtool.tune`).

    ``threads`` / ``opt_level`` are the onnxruntime session options the model will be deployed
    with; ``cache_dir`` holds per-shape timings (``None``: ``~/.cache/convtool``);
    ``margin``: the smallest speedup worth a conversion (0.05 = 5 %); ``budget_ms``: timing
    budget per measured pair; ``confirm``: time the whole model before/after (interleaved A/B)
    and keep the original model when the converted one is slower beyond noise.
    """

    threads: int = 1
    opt_level: str = "all"
    cache_dir: str | None = None
    use_cache: bool = True
    margin: float = 0.05
    budget_ms: float = 400.0
    min_runs: int = 15
    max_runs: int = 300
    confirm: bool = True
    confirm_runs: int = 40

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}")
        if self.opt_level not in OPT_LEVELS:
            raise OptionError(f"--opt-level must be one of {', '.join(OPT_LEVELS)}, got {self.opt_level!r}")
        if not 0.0 <= self.margin < 1.0:
            raise OptionError(f"latency margin must be in [0, 1), got {self.margin}")
        if self.min_runs < 3 or self.max_runs < self.min_runs or self.confirm_runs < 3:
            raise OptionError("latency-aware runs must be >= 3 (and max_runs >= min_runs)")


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that shapes a conversion. Defaults match the CLI's defaults."""

    rank: RankPolicy = field(default_factory=RankPolicy)
    min_in_channels: int = 8
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    fold_batchnorm: bool = True
    layout: Layout = "multiplier"
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    check: bool = True
    latency_aware: LatencyOptions | None = None
    # calibration (convtool.calibrate): refit with data, per-layer ranks, drift-budgeted search
    calibration: CalibrationOptions | None = None
    layer_ranks: tuple[tuple[str, int], ...] = ()  # (layer name, rank); rank 0 = leave unconverted
    max_drift: float | None = None
    metric: DriftMetric = "rel_l2"
    search_ranks: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self) -> None:
        if self.max_drift is not None and not self.max_drift >= 0.0:
            raise OptionError(f"--max-drift must be >= 0, got {self.max_drift}")
        if self.metric not in DRIFT_METRICS:
            raise OptionError(f"--metric must be one of {', '.join(DRIFT_METRICS)}, got {self.metric!r}")
        if not self.search_ranks or any(int(r) < 1 for r in self.search_ranks):
            raise OptionError(f"search ranks must be positive integers, got {self.search_ranks}")
        if any(int(r) < 0 for _, r in self.layer_ranks):
            raise OptionError("per-layer ranks must be >= 0 (0 leaves the layer unconverted)")
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
