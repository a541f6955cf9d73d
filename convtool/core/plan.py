"""Deciding each candidate's rank and layout, or why it is skipped after all (pure numpy).

Works on :class:`~convtool.core.conv.ConvLayer` values; no graph edits.  A BatchNormalization
that follows the Conv is folded into the kernel first, so the factorised kernel, the reported
weight error and the savings are those of the layer that actually runs.

The layout rule (one place, used by the planner and by the latency tuner's candidates):

* ``auto`` at rank 1: ``pointwise_first`` when the layer has more input than output channels
  and stride 1 (its 1x1 conv runs at input resolution), else ``multiplier``;
* ``auto`` at rank >= 2: ``branches`` - every depthwise Conv at channel multiplier 1, which
  onnxruntime's fast depthwise kernel needs (``branches`` was faster than ``repeat`` in 7 of 10
  rank-2 geometries of ``benchmarks/layouts.py``);
* ``repeat`` and ``branches`` are ``multiplier`` at rank 1 (nothing to repeat).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from convtool.core.conv import ConvLayer
from convtool.core.factorize import Decomposition, Factors, Orientation, decompose, factors, mac_ratio, rank_for_energy, relative_error
from convtool.core.skip import Skip
from convtool.options import RankPolicy

#: The layouts built from depthwise-first factors, and the one built from pointwise-first.
MULTIPLIER_ONE = ("repeat", "branches")


@dataclass(frozen=True)
class Override:
    """A driver's per-layer choice: ``rank`` 0 leaves the layer unconverted (``reason`` says
    why); ``layout`` ``None`` follows the options."""

    rank: int | None = None
    layout: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """A layer that will be converted, with everything the rewrite and the record need."""

    layer: ConvLayer
    weight: np.ndarray  # after BN folding
    bias: np.ndarray | None
    factors: Factors
    weight_error: float
    layout: str
    note: str | None = None  # e.g. "rank capped at 9 (kernel taps)"

    @property
    def rank(self) -> int:
        return self.factors.rank

    @property
    def params_after(self) -> int:
        f = self.factors
        return int(f.first.size + f.second.size + (self.bias.size if self.bias is not None else 0))


def effective_layout(layout: str, rank: int) -> str:
    """The layout actually emitted: the multiplier-1 forms degenerate to ``multiplier`` at r=1."""
    if layout in MULTIPLIER_ONE and rank <= 1:
        return "multiplier"
    return layout


def pointwise_first_pays(layer: ConvLayer) -> bool:
    """More inputs than outputs at stride 1: the 1x1-first form is cheaper."""
    geo = layer.geometry
    return geo.in_channels > geo.out_channels and geo.unit_stride


def candidate_layouts(layer: ConvLayer, layout: str, rank: int) -> list[str]:
    """The layouts worth timing for ``layer`` (``auto``), or the one asked for."""
    if layout != "auto":
        return [layout]
    layouts = ["multiplier"] if rank <= 1 else ["repeat", "branches", "multiplier"]
    if pointwise_first_pays(layer):
        layouts.append("pointwise_first")
    return layouts


def choose_rank(dec: Decomposition, policy: RankPolicy) -> int:
    if policy.kind == "full":
        return dec.full_rank
    if policy.kind == "energy":
        return rank_for_energy(dec, policy.value)
    return int(policy.value)


def _orientation(layer: ConvLayer, layout: str) -> Orientation:
    if layout == "pointwise_first" or (layout == "auto" and pointwise_first_pays(layer)):
        return "pointwise_first"
    return "depthwise_first"


def _emitted(requested: str, orientation: Orientation, rank: int) -> str:
    if orientation == "pointwise_first":
        return "pointwise_first"
    if requested == "auto":
        requested = "branches"
    return effective_layout(requested, rank) if requested in MULTIPLIER_ONE else "multiplier"


def _cap_note(asked: int, dec: Decomposition) -> str | None:
    if asked <= dec.full_rank:
        return None
    k = int(np.prod(dec.kernel_shape))
    what = "kernel taps" if dec.full_rank == k else (
        "output channels per group" if dec.orientation == "depthwise_first" else "input channels per group")
    return f"rank capped at {dec.full_rank} ({what})"


def plan_layer(layer: ConvLayer, policy: RankPolicy, layout: str, override: Override | None = None) -> Decision | Skip:
    """A :class:`Decision`, or a :class:`Skip` saying why the layer stays as it is."""
    if override is not None and override.rank == 0:
        return Skip(override.reason or "left unconverted (per-layer rank 0)")
    weight, bias = layer.folded()
    geo = layer.geometry
    if override is not None and override.layout is not None:
        layout = override.layout

    def decompose_and_rank(orientation: Orientation) -> tuple[Decomposition, int]:
        dec = decompose(weight, geo.group, orientation)
        asked = choose_rank(dec, policy) if override is None or override.rank is None else int(override.rank)
        return dec, asked

    orientation = _orientation(layer, layout)
    dec, asked = decompose_and_rank(orientation)
    if orientation == "pointwise_first" and layout == "auto" and min(asked, dec.full_rank) >= 2:
        # at r >= 2 the pointwise-first second conv is grouped (r inputs per group), not depthwise,
        # and it measured slower than the multiplier-1 depthwise-first forms (benchmarks/layouts.py)
        orientation = "depthwise_first"
        dec, asked = decompose_and_rank(orientation)
    rank = min(asked, dec.full_rank)
    cout_g, cin_g = geo.out_channels // geo.group, geo.in_channels // geo.group
    ratio = mac_ratio(cout_g, cin_g, geo.kernel_size, rank, orientation)
    if ratio >= 1.0 and policy.kind != "full":
        cap = _cap_note(asked, dec)  # a capped rank is always full: say why it is not the one asked
        return Skip(f"rank {rank} would not reduce MACs (x{ratio:.2f})" + (f"; {cap}" if cap else ""))
    f = factors(dec, rank)
    return Decision(layer, weight, bias, f, relative_error(dec, rank), _emitted(layout, orientation, f.rank),
                    _cap_note(asked, dec))


def plan_layers(layers: Mapping[str, ConvLayer], policy: RankPolicy, layout: str,
                overrides: Mapping[str, Override] | None = None) -> dict[str, Decision | Skip]:
    """:func:`plan_layer` for every layer, by name."""
    overrides = overrides or {}
    return {name: plan_layer(layer, policy, layout, overrides.get(name)) for name, layer in layers.items()}
