"""Result records of a conversion and their JSON form.

These are plain data: the pipeline fills them, ``render.py`` draws them, ``--json`` writes
``ConversionRecord.to_json()``.  The JSON keys are a contract with deployment pipelines:
add keys freely, never rename or remove one.
"""

from __future__ import annotations

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
    # filled by calibration: relative output error of the layer before/after the refit
    output_error_before: float | None = None
    output_error_after: float | None = None
    # filled by --latency-aware: medians (ms) of the original conv and of its (best) replacement
    # at the layer's input shape, their ratio, the decision and every timed candidate layout
    latency_original_ms: float | None = None
    latency_replacement_ms: float | None = None
    latency_speedup: float | None = None
    latency_decision: str | None = None
    latency_candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def converted(self) -> bool:
        return self.status == "converted"


@dataclass
class Totals:
    conv_nodes: int
    converted: int
    skipped: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None

    @property
    def param_reduction(self) -> float | None:
        return 1.0 - self.params_after / self.params_before if self.params_before else None

    @property
    def mac_reduction(self) -> float | None:
        if not self.macs_before or self.macs_after is None:
            return None
        return 1.0 - self.macs_after / self.macs_before


@dataclass
class ConversionRecord:
    """The whole conversion: per-layer changes, whole-model totals, warnings."""

    input: str
    output: str | None
    layers: list[LayerChange]
    totals: Totals
    rank_policy: str = ""
    warnings: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None  # --latency-aware: session options, end-to-end A/B

    def to_json(self) -> dict[str, Any]:
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
            "calibration": self.calibration,
            "latency": self.latency,
        }
        return data
