"""--max-drift: the greedy per-layer rank search keeps the whole model within its budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from test_calibrate_pipeline import _data, _model

from convtool.api import convert_model
from convtool.analysis.drift import compare_outputs
from convtool.runtime.run import run_outputs
from convtool.options import CalibrationOptions
from convtool.runtime.inputs import Dataset
from convtool.errors import OptionError
from convtool.options import ConvertOptions

MODELS = Path(__file__).resolve().parent.parent / "sample_models"
DIGITS = MODELS / "digits_cnn.onnx"


def test_drift_value_normalises_each_output_and_takes_the_worst():
    ref = {"boxes": np.full((4, 2), 100.0), "scores": np.eye(4)[:, :3]}
    cand = {"boxes": ref["boxes"] * 1.01, "scores": ref["scores"] + 0.5}
    d = compare_outputs(ref, cand)
    assert d.value("rel_l2") == pytest.approx(np.linalg.norm(np.full((4, 3), 0.5)) / np.linalg.norm(ref["scores"]))
    assert compare_outputs(ref, ref).value("top1") == 0.0
    with pytest.raises(ValueError, match="class scores"):
        compare_outputs({"y": np.zeros((2, 3, 4))}, {"y": np.zeros((2, 3, 4))}).value("top1")


def test_top1_budget_without_class_scores_is_an_option_error():
    model = _model()
    with pytest.raises(OptionError, match="class scores"):
        convert_model(model, ConvertOptions(max_drift=0.1, metric="top1", search_ranks=(1,)))


@pytest.mark.parametrize("budget", [0.0, 0.3, 10.0])
def test_budget_respected_without_calibration_data(budget):
    model = _model()
    res = convert_model(model, ConvertOptions(max_drift=budget, search_ranks=(1, 2)))
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
    model = _model()
    data = _data(n=16)
    budget = 0.45
    res = convert_model(model, ConvertOptions(max_drift=budget, search_ranks=(1, 2), calibration=CalibrationOptions()),
                        calibration_data=data)
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


@pytest.mark.skipif(not DIGITS.exists(), reason="digits sample model not built yet")
def test_digits_top1_budget_respected():
    model = onnx.load(str(DIGITS))
    with np.load(MODELS / "digits_calib.npz") as f:
        calib = {"input": f["input"][:96]}
    budget = 0.02
    res = convert_model(model, ConvertOptions(max_drift=budget, metric="top1", search_ranks=(1, 2),
                                              calibration=CalibrationOptions()), calibration_data=calib)
    search = res.record.search
    assert search.drift <= budget and search.refit
    _, held = Dataset(calib).split(CalibrationOptions().holdout, CalibrationOptions().seed + 1)
    ref = run_outputs(model, held)["logits"].argmax(1)
    got = run_outputs(res.model, held)["logits"].argmax(1)
    assert np.mean(ref == got) >= 1 - budget
    assert search.top1_agreement == pytest.approx(np.mean(ref == got))
    assert res.record.totals.converted >= 1


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


def test_search_reuses_prefix_refits_without_changing_the_result():
    from convtool.options import RankPolicy
    from convtool.search.calibrate import RefitCache, refit_layers

    model = _model()
    data = Dataset(_data(n=16))
    converted = convert_model(model, ConvertOptions(rank=RankPolicy("fixed", 1)))
    layers = converted.record.layers
    cache = RefitCache()
    fresh = refit_layers(model, converted.model, layers, data, CalibrationOptions())
    first = refit_layers(model, converted.model, layers, data, CalibrationOptions(), cache)
    again = refit_layers(model, converted.model, layers, data, CalibrationOptions(), cache)
    n = sum(layer.converted for layer in layers)
    assert first[1].layers_reused == 0 and again[1].layers_reused == n
    assert again[1].sessions == 0
    for a, b in ((fresh, first), (fresh, again)):
        wa = {t.name: onnx.numpy_helper.to_array(t) for t in a[0].graph.initializer}
        wb = {t.name: onnx.numpy_helper.to_array(t) for t in b[0].graph.initializer}
        assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
