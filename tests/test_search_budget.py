"""--max-drift: the greedy per-layer search keeps the whole model within its budget and, under
``--objective latency`` (the default), picks only layers measured faster, by time saved per unit
of drift, and never hands out a model that is not faster end to end.

Every timing is injected (``time_pair`` and ``confirm`` of :mod:`convtool.search.latency` are
replaced for every test of this file); no test asserts that anything is faster.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import SAMPLES, smooth_inputs, three_conv_model

from convtool.api import convert_model
from convtool.analysis.drift import compare_outputs
from convtool.runtime.run import run_outputs
from convtool.options import CalibrationOptions
from convtool.runtime.inputs import Dataset
from convtool.errors import CalibrationDataError, OptionError
from convtool.options import ConvertOptions, LatencyOptions
from convtool.core.decide import verdict
from convtool.search import latency as latency_mod

DIGITS = SAMPLES / "digits_cnn.onnx"


def noisy(median: float, n: int = 30, spread: float = 0.02, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median * (1 + spread * rng.standard_normal(n)))


def replacement_form(model: onnx.ModelProto) -> tuple[str, int]:
    """(layout, rank) of a one-layer replacement model, read from its graph."""
    nodes = list(model.graph.node)
    ops = [n.op_type for n in nodes]
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    convs = [n for n in nodes if n.op_type == "Conv"]
    if "Concat" in ops:
        return "repeat", len(next(n for n in nodes if n.op_type == "Concat").input)
    if "Sum" in ops:
        return "branches", len(next(n for n in nodes if n.op_type == "Sum").input)
    kernel = next(a.ints for a in convs[0].attribute if a.name == "kernel_shape")
    if all(k == 1 for k in kernel):
        return "pointwise_first", dims[convs[1].input[1]][1]
    group = next(a.i for a in convs[0].attribute if a.name == "group")
    return "multiplier", dims[convs[0].input[1]][0] // group


class Timings:
    """Injected timings: ``layer(shape, layout, rank) -> (original ms, replacement ms)`` for the
    one-layer pairs, and a queue of end-to-end speedups for the whole-model checks."""

    def __init__(self, layer=None, e2e=(1.0,)):
        self.layer = layer or (lambda shape, layout, rank: (1.0, 1.0))
        self.e2e = list(e2e)
        self.pairs: list[tuple[int, int, int, str, int]] = []  # (in, out, group, layout, rank)
        self.confirms = 0

    def time_pair(self, original, replacement, shape, session, **kw):
        layout, rank = replacement_form(replacement)
        self.pairs.append((shape.in_channels, shape.out_channels, shape.group, layout, rank))
        a, b = self.layer(shape, layout, rank)
        return noisy(a, seed=len(self.pairs)), noisy(b, seed=1000 + len(self.pairs))

    def confirm(self, original, converted, lat, input_shapes=None, progress=None):
        s = self.e2e[min(self.confirms, len(self.e2e) - 1)]
        self.confirms += 1
        return verdict(noisy(2.0, n=40), noisy(2.0 / s, n=40, seed=9), margin=0.0, what="end to end")


@pytest.fixture(autouse=True)
def timings(monkeypatch):
    """No test of this file times anything for real (and none writes the user's cache)."""
    t = Timings()
    monkeypatch.setattr(latency_mod, "time_pair", t.time_pair)
    monkeypatch.setattr(latency_mod, "confirm", t.confirm)
    return t


def _timing(tmp_path, **kw) -> LatencyOptions:
    return LatencyOptions(cache_dir=str(tmp_path / "cache"), **kw)


def test_drift_value_normalises_each_output_and_takes_the_worst():
    ref = {"boxes": np.full((4, 2), 100.0), "scores": np.eye(4)[:, :3]}
    cand = {"boxes": ref["boxes"] * 1.01, "scores": ref["scores"] + 0.5}
    d = compare_outputs(ref, cand)
    assert d.value("rel_l2") == pytest.approx(np.linalg.norm(np.full((4, 3), 0.5)) / np.linalg.norm(ref["scores"]))
    assert compare_outputs(ref, ref).value("top1") == 0.0
    with pytest.raises(ValueError, match="class scores"):
        compare_outputs({"y": np.zeros((2, 3, 4))}, {"y": np.zeros((2, 3, 4))}).value("top1")


def test_top1_budget_without_class_scores_is_an_option_error():
    model = three_conv_model()
    with pytest.raises(OptionError, match="class scores"):
        convert_model(model, ConvertOptions(max_drift=0.1, metric="top1", search_ranks=(1,), objective="macs"))


@pytest.mark.parametrize("budget", [0.0, 0.3, 10.0])
def test_budget_respected_without_calibration_data(budget):
    model = three_conv_model()
    res = convert_model(model, ConvertOptions(max_drift=budget, search_ranks=(1, 2), objective="macs"))
    search = res.record.search
    assert search.refit is False and search.drift <= budget
    assert any("seeded random inputs" in w for w in res.record.warnings)
    if budget == 0.0:
        assert res.record.totals.converted == 0
        assert all("left unconverted by --max-drift" in layer.reason for layer in res.record.layers)
        assert any("no layer fits the drift budget" in w for w in res.record.warnings)
        assert not any("no Conv qualified" in w for w in res.record.warnings)
    if budget == 10.0:
        assert res.record.totals.converted == 3 and {layer.rank for layer in res.record.layers} == {1}
    assert search.evaluations <= 2 * 3 * 2


def test_budget_respected_with_calibration_data():
    model = three_conv_model()
    data = smooth_inputs(n=16)
    budget = 0.45
    res = convert_model(model, ConvertOptions(max_drift=budget, search_ranks=(1, 2), calibration=CalibrationOptions(),
                                              objective="macs"), calibration_data=data)
    search = res.record.search
    assert search.refit is True and search.samples == 16
    # the promise is about samples no refit saw: the held-out split of the search
    fit, held = Dataset(data).split(CalibrationOptions().holdout, CalibrationOptions().seed + 1)
    assert search.held_out_samples == held.count and fit.count + held.count == 16
    measured = compare_outputs(run_outputs(model, held), run_outputs(res.model, held)).value("rel_l2")
    assert measured == pytest.approx(search.drift) and measured <= budget
    assert search.fitted_drift is not None
    assert res.record.totals.converted >= 1
    assert res.record.calibration.samples == fit.count  # the final refit used only the fit split
    assert all(layer.output_error_after is not None for layer in res.record.layers if layer.converted)
    assert len(search.sensitivity) == 3 * 2


def test_budget_with_calibration_data_on_a_fixed_batch_model():
    res = convert_model(three_conv_model(batch=4), ConvertOptions(
        max_drift=0.5, search_ranks=(1, 2), calibration=CalibrationOptions(), objective="macs"),
        calibration_data=smooth_inputs(n=10))
    search = res.record.search
    assert search.drift <= 0.5
    assert search.held_out_samples > 0 and search.held_out_samples % 4 == 0  # whole batches, so they ran


def test_digits_top1_budget_respected_and_certified():
    model = onnx.load(str(DIGITS))
    with np.load(SAMPLES / "digits_calib.npz") as f:
        calib = {"input": f["input"][:96]}
    budget = 0.16  # 19 held-out samples: 0 disagreements bound the rate at 14.6 % (95 %)
    res = convert_model(model, ConvertOptions(max_drift=budget, metric="top1", search_ranks=(1, 2),
                                              calibration=CalibrationOptions(factors="pointwise"), objective="macs"),
                        calibration_data=calib)
    search = res.record.search
    assert search.drift <= budget and search.refit
    assert search.bound is not None and search.bound <= budget and search.certified
    _, held = Dataset(calib).split(CalibrationOptions().holdout, CalibrationOptions().seed + 1)
    ref = run_outputs(model, held)["logits"].argmax(1)
    got = run_outputs(res.model, held)["logits"].argmax(1)
    assert np.mean(ref == got) >= 1 - budget
    assert search.top1_agreement == pytest.approx(np.mean(ref == got))
    assert res.record.totals.converted >= 1


def test_a_top1_budget_too_small_for_the_held_out_set_is_refused_with_the_samples_it_needs():
    model = onnx.load(str(DIGITS))
    with np.load(SAMPLES / "digits_calib.npz") as f:
        calib = {"input": f["input"][:96]}
    with pytest.raises(CalibrationDataError, match=r"19 held-out samples.*14\.6%.*>= 149 held-out samples"):
        convert_model(model, ConvertOptions(max_drift=0.02, metric="top1", search_ranks=(1,), objective="macs"),
                      calibration_data=calib)


def test_channel_normalised_drift_sees_small_channels():
    """A detector output [N, 4 boxes + K scores, anchors]: box coordinates are ~100x larger than
    scores; a score-only change must still show up at full size."""
    from convtool.analysis.drift import channel_rel_l2

    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 320, (2, 4, 50)), rng.uniform(0, 1, (2, 3, 50))], axis=1)
    cand = ref.copy()
    cand[:, 4:] *= 1.5  # every score 50% off
    plain = np.linalg.norm(cand - ref) / np.linalg.norm(ref)
    assert plain < 0.01
    assert channel_rel_l2(ref, cand) == pytest.approx(np.sqrt(3 / 7) * 0.5)
    assert channel_rel_l2(ref[:, :, 0], cand[:, :, 0]) == pytest.approx(
        np.linalg.norm(cand[:, :, 0] - ref[:, :, 0]) / np.linalg.norm(ref[:, :, 0]))
    silent = np.zeros((2, 2, 5))
    silent[:, 0] = 1.0
    assert np.isfinite(channel_rel_l2(silent, silent + 0.01))


# --- the latency objective, with injected timings ----------------------------------------------

def _by_name(result):
    return {layer.name: layer for layer in result.record.layers}


def test_latency_objective_converts_only_layers_measured_faster(tmp_path, timings):
    # conv3 (16 -> 8) is slower in every form; conv1 and conv2 are twice as fast
    timings.layer = lambda shape, layout, rank: (1.0, 1.5 if shape.out_channels == 8 else 0.5)
    timings.e2e = [1.6]
    res = convert_model(three_conv_model(),
                        ConvertOptions(max_drift=10.0, search_ranks=(1, 2), timing=_timing(tmp_path)))
    layers = _by_name(res)
    assert layers["conv1"].converted and layers["conv2"].converted and not layers["conv3"].converted
    assert "no rank measurably faster" in layers["conv3"].reason and "slower" in layers["conv3"].reason
    for name in ("conv1", "conv2"):
        layer = layers[name]
        assert layer.latency_original_ms == pytest.approx(1.0, rel=0.05)
        assert layer.latency_replacement_ms == pytest.approx(0.5, rel=0.05)
        assert layer.search_decision.startswith(f"chosen at rank {layer.rank} ({layer.layout}): saves 0.5")
    search = res.record.search
    assert search.objective == "latency" and search.timed_candidates == len(timings.pairs)
    assert {s.name for s in search.sensitivity} == {"conv1", "conv2"}  # slower forms are never trialled
    assert all(s.gain == pytest.approx(0.5, rel=0.1) and s.original_ms for s in search.sensitivity)
    assert search.end_to_end.speedup == pytest.approx(1.6, rel=0.05) and search.dropped == ()
    assert res.record.latency is not None and res.record.latency.end_to_end.speedup == pytest.approx(1.6, rel=0.05)
    data = res.record.to_dict()
    assert data["calibration"]["search"]["objective"] == "latency"
    assert data["layers"][0]["search_decision"].startswith("chosen")


def test_latency_objective_takes_the_largest_time_saving_and_its_layout(tmp_path, timings):
    def layer(shape, layout, rank):
        if rank == 2 and layout == "repeat":
            return 1.0, 0.3
        return 1.0, 0.8
    timings.layer = layer
    timings.e2e = [1.5]
    res = convert_model(three_conv_model(),
                        ConvertOptions(max_drift=10.0, search_ranks=(1, 2), timing=_timing(tmp_path)))
    layers = _by_name(res)
    assert (layers["conv1"].rank, layers["conv1"].layout) == (2, "repeat")
    assert res.record.search.layouts["conv1"] == "repeat"
    # every form of every rank was timed (auto: the tuner's candidates), and the record lists them
    assert {(c["rank"], c["layout"]) for c in layers["conv1"].latency_candidates} >= {
        (1, "multiplier"), (2, "repeat"), (2, "branches"), (2, "multiplier")}


def test_explicit_layout_is_the_only_form_timed(tmp_path, timings):
    timings.layer = lambda shape, layout, rank: (1.0, 0.5)
    timings.e2e = [2.0]
    res = convert_model(three_conv_model(), ConvertOptions(max_drift=10.0, search_ranks=(1, 2), layout="multiplier",
                                                 timing=_timing(tmp_path)))
    assert {p[3] for p in timings.pairs} == {"multiplier"}
    assert all(layer.layout == "multiplier" for layer in res.record.layers if layer.converted)


def test_layers_are_ordered_by_time_saved_per_unit_of_drift(tmp_path, timings):
    from convtool.search.budget import BudgetSearch

    saved = {16: 0.1, 8: 0.6}  # by input channels: conv1 (8 in) saves most, conv2/conv3 (16 in) little
    timings.layer = lambda shape, layout, rank: (1.0, 1.0 - saved[shape.in_channels])
    s = BudgetSearch(three_conv_model(), ConvertOptions(max_drift=1.0, search_ranks=(1,), timing=_timing(tmp_path)),
                     Dataset(smooth_inputs(n=16))).analyse()
    for name, cands in s.candidates.items():
        assert all(c.gain("latency") == pytest.approx(c.original_ms - c.replacement_ms) for c in cands)
    best = {n: max(c.gain("latency") / max(s.alone[c.key][1].drift, 1e-9) for c in cs) for n, cs in s.candidates.items()}
    assert s.order == sorted(best, key=lambda n: -best[n])


def test_not_faster_end_to_end_drops_least_time_per_drift_first(tmp_path, timings):
    from convtool.search.budget import BudgetSearch

    timings.layer = lambda shape, layout, rank: (1.0, 0.5)
    timings.e2e = [0.8, 0.95, 1.4]  # slower, still not faster, then faster
    options = ConvertOptions(max_drift=10.0, search_ranks=(1,), layout="multiplier", timing=_timing(tmp_path))
    s = BudgetSearch(three_conv_model(), options, None).analyse()
    selection = s.select(10.0)
    assert len(selection.dropped) == 2 and timings.confirms == 3
    ratios = {n: s.ratio(c) for n, c in {**selection.chosen, **{d: next(iter(s.candidates[d])) for d in selection.dropped}}.items()}
    assert ratios[selection.dropped[0]] <= ratios[selection.dropped[1]] <= min(ratios[n] for n in selection.chosen)
    assert selection.end_to_end.speedup == pytest.approx(1.4, rel=0.05)
    assert all(selection.notes[d].startswith("dropped after the search (whole model") for d in selection.dropped)
    assert any("dropped 2 chosen layer(s)" in w for w in selection.warnings)

    timings.confirms = 0
    res = convert_model(three_conv_model(), options)
    search = res.record.search
    assert search.dropped == selection.dropped and res.record.totals.converted == 1
    for name in search.dropped:
        layer = _by_name(res)[name]
        assert not layer.converted and "dropped after the search" in layer.reason


def test_never_faster_keeps_the_original(tmp_path, timings):
    timings.layer = lambda shape, layout, rank: (1.0, 0.5)
    timings.e2e = [0.9]
    model = three_conv_model()
    res = convert_model(model, ConvertOptions(max_drift=10.0, search_ranks=(1,), timing=_timing(tmp_path)))
    assert res.record.totals.converted == 0 and res.model.graph == model.graph
    assert any("made the whole model faster" in w for w in res.record.warnings)
    assert res.record.latency.reverted is True and len(res.record.search.dropped) == 3


def test_macs_objective_keeps_a_slower_model_with_a_warning(tmp_path, timings):
    timings.e2e = [0.7]
    res = convert_model(three_conv_model(), ConvertOptions(max_drift=10.0, search_ranks=(1,), objective="macs",
                                                 timing=_timing(tmp_path)))
    assert res.record.totals.converted == 3 and timings.pairs == []  # no layer is timed for MACs
    assert res.record.search.slower is True and res.record.search.end_to_end.speedup == pytest.approx(0.7, rel=0.05)
    assert any("SLOWER" in w and "--objective macs" in w for w in res.record.warnings)
    assert res.record.latency is None


def test_params_objective_gain_is_parameters(tmp_path, timings):
    res = convert_model(three_conv_model(), ConvertOptions(max_drift=10.0, search_ranks=(1, 2), objective="params",
                                                 timing=_timing(tmp_path, confirm=False)))
    search = res.record.search
    assert timings.confirms == 0 and search.end_to_end is None
    by = {(s.name, s.rank): s for s in search.sensitivity}
    assert by[("conv1", 1)].gain > by[("conv1", 2)].gain > 0
    assert all(layer.search_decision.split(": ")[1].startswith("saves") and "params" in layer.search_decision
               for layer in res.record.layers if layer.converted)


def test_latency_aware_with_max_drift_times_each_form_once(tmp_path, timings, monkeypatch):
    timings.layer = lambda shape, layout, rank: (1.0, 0.5)
    timings.e2e = [2.0]

    def no_tune(*a, **k):
        raise AssertionError("the search timed the layers; --latency-aware must not time them again")

    monkeypatch.setattr(latency_mod, "tune", no_tune)
    res = convert_model(three_conv_model(),
                        ConvertOptions(max_drift=10.0, search_ranks=(1,), latency_aware=_timing(tmp_path)))
    assert res.record.totals.converted == 3 and timings.confirms == 1
    assert len(timings.pairs) == len(set(timings.pairs))
    # a second run takes every layer timing from the cache
    before = len(timings.pairs)
    again = convert_model(three_conv_model(),
                          ConvertOptions(max_drift=10.0, search_ranks=(1,), latency_aware=_timing(tmp_path)))
    assert len(timings.pairs) == before and again.record.latency.cache_hits >= before


def test_objective_is_validated():
    with pytest.raises(OptionError, match="--objective must be one of"):
        ConvertOptions(objective="speed")  # type: ignore[arg-type]
