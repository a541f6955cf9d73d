"""Deciding each candidate's rank and layout, or why it is skipped after all.

Works on numpy arrays taken from :class:`~convtool.graph.select.ConvSite`; no graph edits.
A BatchNormalization that follows the Conv is folded into the kernel first, so the
factorised kernel, the reported weight error and the savings are those of the layer that
actually runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convtool.bnfold import fold_batchnorm
from convtool.factorize import Decomposition, Factors, Orientation, decompose, factors, mac_ratio, rank_for_energy, relative_error
from convtool.graph.layouts import effective_layout
from convtool.graph.select import ConvSite
from convtool.options import ConvertOptions, RankPolicy


@dataclass
class Decision:
    """A site that will be converted, with everything the rewrite and the record need."""

    site: ConvSite
    weight: np.ndarray  # after BN folding
    bias: np.ndarray | None
    factors: Factors
    weight_error: float
    chosen_layout: str | None = None  # emission form (convtool.graph.layouts); None: from orientation

    @property
    def rank(self) -> int:
        return self.factors.rank

    @property
    def layout(self) -> str:
        if self.chosen_layout is not None:
            return self.chosen_layout
        return "multiplier" if self.factors.orientation == "depthwise_first" else "pointwise_first"


def folded_kernel(site: ConvSite) -> tuple[np.ndarray, np.ndarray | None]:
    """The site's weight and bias with a following BatchNormalization folded in."""
    if site.batchnorm is None:
        return site.weight, site.bias
    bn = site.batchnorm
    return fold_batchnorm(site.weight, site.bias, bn.scale, bn.beta, bn.mean, bn.var, bn.eps)


def choose_rank(dec: Decomposition, policy: RankPolicy) -> int:
    if policy.kind == "full":
        return dec.full_rank
    if policy.kind == "energy":
        return rank_for_energy(dec, policy.value)
    return min(int(policy.value), dec.full_rank)


def _orientation(site: ConvSite, options: ConvertOptions) -> Orientation:
    if options.layout == "pointwise_first":
        return "pointwise_first"
    if options.layout == "auto":
        geo = site.geometry
        strides = site.node.attrs.get("strides", [1] * len(geo.kernel))
        # pointwise-first runs its 1x1 conv at input resolution: only worth it without stride
        if geo.in_channels > geo.out_channels and all(s == 1 for s in strides):
            return "pointwise_first"
    return "depthwise_first"


def _layout(requested: str, orientation: Orientation, rank: int) -> str:
    """The emission form: ``auto`` keeps every depthwise Conv at multiplier 1 (``branches`` for r >= 2),
    because onnxruntime's fast depthwise kernel handles multiplier 1 only.  ``branches`` and
    ``repeat`` are close; ``branches`` was faster in 7 of 10 rank-2 geometries of
    ``benchmarks/layouts.py`` (C = 16..256)."""
    if orientation == "pointwise_first":
        return "pointwise_first"
    if requested == "auto":
        requested = "branches"
    if requested in ("repeat", "branches"):
        return effective_layout(requested, rank)
    return "multiplier"


def plan_site(site: ConvSite, options: ConvertOptions) -> Decision | str:
    """A :class:`Decision`, or the reason the layer stays as it is."""
    override = dict(options.layer_ranks).get(site.name)
    if override == 0:
        return "left unconverted (per-layer rank 0)"
    weight, bias = folded_kernel(site)
    geo = site.geometry

    def decompose_and_rank(orientation: Orientation) -> tuple[Decomposition, int]:
        dec = decompose(weight, geo.group, orientation)
        rank = choose_rank(dec, options.rank) if override is None else min(int(override), dec.full_rank)
        return dec, rank

    orientation = _orientation(site, options)
    dec, rank = decompose_and_rank(orientation)
    if orientation == "pointwise_first" and options.layout == "auto" and rank >= 2:
        # at r >= 2 the pointwise-first second conv is grouped (r inputs per group), not depthwise,
        # and it measured slower than the multiplier-1 depthwise-first forms (benchmarks/layouts.py)
        orientation = "depthwise_first"
        dec, rank = decompose_and_rank(orientation)
    cout_g, cin_g = geo.out_channels // geo.group, geo.in_channels // geo.group
    ratio = mac_ratio(cout_g, cin_g, site.kernel_size, rank, orientation)
    if ratio >= 1.0 and options.rank.kind != "full":
        return f"rank {rank} would not reduce MACs (x{ratio:.2f})"
    f = factors(dec, rank)
    return Decision(site, weight, bias, f, relative_error(dec, rank), _layout(options.layout, orientation, f.rank))
