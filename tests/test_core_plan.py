"""core/plan.py: each layer's rank and layout, or the reason it stays (pure numpy, no graph).

Layers are built as :class:`ConvLayer` values directly, so these tests need no ONNX at all.
"""

from __future__ import annotations

import numpy as np
import pytest

from convtool.core.bnfold import fold_batchnorm
from convtool.core.conv import BatchNormParams, ConvLayer, Geometry
from convtool.core.factorize import decompose, rank_for_energy, relative_error
from convtool.core.plan import (
    Decision,
    Override,
    candidate_layouts,
    choose_rank,
    effective_layout,
    plan_layer,
    plan_layers,
    pointwise_first_pays,
)
from convtool.core.skip import Skip
from convtool.options import RankPolicy


def layer(cin: int = 8, cout: int = 12, k: tuple[int, ...] = (3, 3), group: int = 1, stride: int = 1,
          bias: bool = True, batchnorm: bool = False, name: str = "conv", seed: int = 0) -> ConvLayer:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // group, *k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    bn = None
    if batchnorm:
        bn = BatchNormParams("bn", rng.uniform(0.5, 2, cout), rng.standard_normal(cout), rng.standard_normal(cout),
                             rng.uniform(0.5, 2, cout), 1e-5)
    return ConvLayer(name, w, b, Geometry(tuple(k), cin, cout, group, (stride,) * len(k)), bn)


def decided(result) -> Decision:
    assert isinstance(result, Decision), result
    return result


# --- the layout rule -----------------------------------------------------------------------------

@pytest.mark.parametrize("layout,rank,expected", [
    ("repeat", 1, "multiplier"), ("branches", 1, "multiplier"), ("repeat", 2, "repeat"), ("branches", 3, "branches"),
    ("multiplier", 1, "multiplier"), ("multiplier", 4, "multiplier"), ("pointwise_first", 1, "pointwise_first"),
])
def test_effective_layout(layout, rank, expected):
    assert effective_layout(layout, rank) == expected


def test_pointwise_first_pays_with_more_inputs_at_unit_stride():
    assert pointwise_first_pays(layer(cin=32, cout=8))
    assert not pointwise_first_pays(layer(cin=8, cout=32))
    assert not pointwise_first_pays(layer(cin=8, cout=8))
    assert not pointwise_first_pays(layer(cin=32, cout=8, stride=2))


def test_auto_picks_the_multiplier_one_forms():
    def auto(lay, rank):
        return decided(plan_layer(lay, RankPolicy.fixed(rank), "auto")).layout

    assert auto(layer(cin=8, cout=16), 1) == "multiplier"  # more outputs than inputs: depthwise-first
    assert auto(layer(cin=8, cout=16), 2) == "branches"
    assert auto(layer(cin=32, cout=8), 1) == "pointwise_first"
    # at r >= 2 pointwise-first's second conv is not depthwise: auto stays depthwise-first
    wide = decided(plan_layer(layer(cin=32, cout=8), RankPolicy.fixed(2), "auto"))
    assert wide.layout == "branches" and wide.factors.orientation == "depthwise_first"
    assert auto(layer(cin=32, cout=8, stride=2), 1) == "multiplier"


def test_candidate_layouts():
    narrow, wide = layer(cin=8, cout=16), layer(cin=32, cout=8)
    assert candidate_layouts(narrow, "auto", 1) == ["multiplier"]
    assert candidate_layouts(narrow, "auto", 2) == ["repeat", "branches", "multiplier"]
    assert candidate_layouts(wide, "auto", 1) == ["multiplier", "pointwise_first"]
    assert candidate_layouts(wide, "auto", 2) == ["repeat", "branches", "multiplier", "pointwise_first"]
    assert candidate_layouts(wide, "repeat", 2) == ["repeat"]


@pytest.mark.parametrize("layout", ("multiplier", "repeat", "branches", "pointwise_first"))
def test_explicit_layouts_are_kept(layout):
    d = decided(plan_layer(layer(cin=16, cout=16), RankPolicy.fixed(2), layout))
    assert d.layout == layout
    assert d.factors.orientation == ("pointwise_first" if layout == "pointwise_first" else "depthwise_first")


# --- ranks ---------------------------------------------------------------------------------------

def test_choose_rank_per_policy():
    dec = decompose(layer(cin=8, cout=12).weight)
    assert dec.full_rank == 9  # min(Cout_g = 12, K = 9)
    assert choose_rank(dec, RankPolicy.full()) == 9
    assert choose_rank(dec, RankPolicy.fixed(3)) == 3
    assert choose_rank(dec, RankPolicy.energy(0.8)) == rank_for_energy(dec, 0.8)


def test_rank_beyond_full_rank_saves_nothing():
    """At its full rank a factor pair costs at least the original (r / Cout_g + r / K >= 1)."""
    reason = plan_layer(layer(cin=8, cout=12), RankPolicy.fixed(20), "multiplier")
    assert isinstance(reason, Skip) and reason.reason.startswith("rank 9 would not reduce MACs (x1.75)")


@pytest.mark.parametrize("cin,cout,layout,rank,note", [
    (8, 12, "multiplier", 9, "rank capped at 9 (kernel taps)"),
    (8, 4, "multiplier", 4, "rank capped at 4 (output channels per group)"),
    (4, 16, "pointwise_first", 4, "rank capped at 4 (input channels per group)"),
])
def test_a_capped_rank_says_so(cin, cout, layout, rank, note):
    # a driver asking for more than the full rank under the exact policy
    d = decided(plan_layer(layer(cin=cin, cout=cout), RankPolicy.full(), layout, Override(rank=20)))
    assert d.rank == rank and d.note == note and d.weight_error < 1e-6


def test_rank_that_saves_nothing_is_skipped_but_full_rank_converts():
    lay = layer(cin=8, cout=8)
    assert plan_layer(lay, RankPolicy.fixed(8), "multiplier") == Skip("rank 8 would not reduce MACs (x1.89)")
    full = decided(plan_layer(lay, RankPolicy.full(), "multiplier"))
    assert full.rank == 8 and full.note is None and full.weight_error < 1e-6


def test_decision_numbers():
    lay = layer(cin=8, cout=12, group=2, batchnorm=True)
    d = decided(plan_layer(lay, RankPolicy.fixed(2), "multiplier"))
    w, b = fold_batchnorm(lay.weight, lay.bias, lay.batchnorm.scale, lay.batchnorm.beta, lay.batchnorm.mean,
                          lay.batchnorm.var, lay.batchnorm.eps)
    np.testing.assert_array_equal(d.weight, w)
    np.testing.assert_array_equal(d.bias, b)
    assert d.weight_error == pytest.approx(relative_error(decompose(w, 2), 2))
    assert d.params_after == d.factors.first.size + d.factors.second.size + 12
    assert d.factors.first.shape == (8 * 2, 1, 3, 3) and d.factors.second.shape == (12, 4 * 2, 1, 1)
    assert lay.params == 12 * 4 * 9 + 12 + 4 * 12  # BN parameters count before folding


def test_batchnorm_is_folded_before_the_factorisation():
    """The reported weight error is the error of the layer that runs (Conv + BN folded)."""
    with_bn = layer(batchnorm=True)
    d = decided(plan_layer(with_bn, RankPolicy.fixed(1), "multiplier"))
    folded, _ = with_bn.folded()
    assert d.weight_error == pytest.approx(relative_error(decompose(folded), 1))
    assert d.weight_error != pytest.approx(relative_error(decompose(with_bn.weight), 1))


# --- overrides (what the drivers pass) -----------------------------------------------------------

def test_override_rank_zero_leaves_the_layer_with_its_reason():
    assert plan_layer(layer(), RankPolicy.fixed(1), "multiplier", Override(rank=0, reason="too much drift")) == \
        Skip("too much drift")
    assert plan_layer(layer(), RankPolicy.fixed(1), "multiplier", Override(rank=0)) == \
        Skip("left unconverted (per-layer rank 0)")


def test_override_rank_and_layout_win_over_the_options():
    d = decided(plan_layer(layer(cin=16, cout=16), RankPolicy.fixed(1), "multiplier", Override(rank=3)))
    assert d.rank == 3 and d.layout == "multiplier"
    d = decided(plan_layer(layer(cin=16, cout=16), RankPolicy.fixed(2), "multiplier", Override(layout="repeat")))
    assert d.rank == 2 and d.layout == "repeat"
    d = decided(plan_layer(layer(cin=16, cout=16), RankPolicy.energy(0.5), "auto", Override(rank=2, layout="branches")))
    assert (d.rank, d.layout) == (2, "branches")


def test_plan_layers_by_name():
    layers = {"a": layer(name="a"), "b": layer(name="b", seed=1)}
    plans = plan_layers(layers, RankPolicy.fixed(1), "multiplier", {"b": Override(rank=0, reason="kept")})
    assert decided(plans["a"]).rank == 1 and plans["b"] == Skip("kept")


def test_plan_is_pure():
    lay = layer(batchnorm=True)
    before = (lay.weight.copy(), lay.bias.copy())
    plan_layer(lay, RankPolicy.fixed(2), "auto")
    np.testing.assert_array_equal(lay.weight, before[0])
    np.testing.assert_array_equal(lay.bias, before[1])


def test_a_skip_reads_as_its_reason():
    skip = Skip("kernel is 1x1")
    assert str(skip) == "kernel is 1x1" and f"{skip} (multiplier layout)" == "kernel is 1x1 (multiplier layout)"
    assert skip == Skip("kernel is 1x1") and skip != Skip("already depthwise")
