"""search/latency.py: candidate choice and the --latency-aware driver, with injected timings.

``time_pair`` (one layer against its replacement) and ``confirm`` (the whole model) are replaced;
no test times anything for real or asserts that anything is faster.
"""

from __future__ import annotations

import json

import onnx
import pytest
from builders import SAMPLES, conv_model, noisy
from golden import compare
from typer.testing import CliRunner

from convtool.api import convert_model
from convtool.cli import app
from convtool.core.decide import verdict
from convtool.errors import ModelLoadError
from convtool.options import ConvertOptions, LatencyOptions, RankPolicy
from convtool.search import latency as tuner_mod
from convtool.search.latency import Candidate, choose


# --- choosing among candidates ---------------------------------------------------------------

def test_choose_picks_fastest_passing():
    fast = verdict(noisy(2.0), noisy(0.5, seed=1), margin=0.05)
    ok = verdict(noisy(2.0), noisy(1.0, seed=1), margin=0.05)
    slow = verdict(noisy(1.0), noisy(2.0, seed=1), margin=0.05)
    pairs = [("a", Candidate("multiplier", 2, ok, False)), ("b", Candidate("repeat", 2, fast, False)),
             ("c", Candidate("branches", 2, slow, True))]
    choice = choose(pairs)  # type: ignore[arg-type]
    assert choice.decision == "b"
    assert len(choice.candidates) == 3
    assert choice.reason == fast.reason


def test_choose_keeps_original_when_none_passes():
    slow = verdict(noisy(1.0), noisy(1.31, seed=1), margin=0.05, what="at rank 2 (multiplier)")
    slower = verdict(noisy(1.0), noisy(2.0, seed=1), margin=0.05)
    choice = choose([("a", Candidate("multiplier", 2, slow, False)), ("b", Candidate("repeat", 2, slower, False))])  # type: ignore[list-item]
    assert choice.decision is None
    assert choice.reason == slow.reason and "slower at rank 2 (multiplier)" in choice.reason
    assert choose([]).decision is None


# --- the pipeline, with injected timings ---------------------------------------------------------

class FakeTimer:
    """Replaces search.latency.time_pair: speedup per layout, and counts calls."""

    def __init__(self, speedups: dict[str, float]):
        self.speedups = speedups
        self.calls: list[str] = []

    def __call__(self, original, replacement, shape, config, **kw):
        ops = [n.op_type for n in replacement.graph.node]
        if "Concat" in ops:
            layout = "repeat"
        elif "Sum" in ops:
            layout = "branches"
        else:
            first = next(n for n in replacement.graph.node if n.op_type == "Conv")
            k = [a.ints for a in first.attribute if a.name == "kernel_shape"][0]
            layout = "pointwise_first" if all(v == 1 for v in k) else "multiplier"
        self.calls.append(layout)
        s = self.speedups[layout]
        return noisy(1.0, n=30), noisy(1.0 / s, n=30, seed=len(self.calls))


@pytest.fixture
def fake(monkeypatch):
    def install(speedups, e2e: float | None = 2.0):
        timer = FakeTimer(speedups)
        monkeypatch.setattr(tuner_mod, "time_pair", timer)

        def fake_confirm(original, converted, latency, input_shapes=None, progress=None):
            return verdict(noisy(2.0, n=40), noisy(2.0 / e2e, n=40, seed=9), margin=0.0, what="end to end")

        monkeypatch.setattr(tuner_mod, "confirm", fake_confirm)
        return timer
    return install


def _opts(tmp_path, rank=2, layout="auto", **lat):
    return ConvertOptions(rank=RankPolicy.fixed(rank), layout=layout, min_in_channels=1,
                          latency_aware=LatencyOptions(cache_dir=str(tmp_path), **lat))


def test_pipeline_converts_only_faster_layers(tmp_path, fake):
    timer = fake({"repeat": 0.8, "branches": 0.7, "multiplier": 0.5})
    model = onnx.load(SAMPLES / "vgg_style.onnx")
    result = convert_model(model, _opts(tmp_path))
    measured = [layer for layer in result.record.layers if layer.latency_decision]
    assert measured and not any(layer.converted for layer in measured)
    for layer in measured:
        assert "slower at rank 2" in layer.reason
        assert layer.latency_original_ms and layer.latency_replacement_ms
        assert {c["layout"] for c in layer.latency_candidates} >= {"repeat", "branches", "multiplier"}
    assert [n.op_type for n in result.model.graph.node] == [n.op_type for n in model.graph.node]
    assert result.record.latency.end_to_end is None  # nothing converted, nothing to confirm
    assert len(timer.calls) >= 3 * len(measured)


def test_pipeline_picks_fastest_layout_and_records_it(tmp_path, fake):
    fake({"repeat": 1.5, "branches": 3.0, "multiplier": 2.0, "pointwise_first": 0.9})
    model = onnx.load(SAMPLES / "vgg_style.onnx")
    result = convert_model(model, _opts(tmp_path))
    converted = [layer for layer in result.record.layers if layer.converted]
    assert converted and all(layer.layout == "branches" for layer in converted)
    assert all(layer.latency_speedup == pytest.approx(3.0, rel=0.15) for layer in converted)
    data = result.record.to_dict()
    assert data["latency"]["end_to_end"]["speedup"] == pytest.approx(2.0, rel=0.15)
    assert data["layers"][1]["latency_decision"].startswith("replacement")
    assert len(compare(model, result.model)) == 1  # valid and runs


def test_pipeline_uses_the_cache(tmp_path, fake):
    timer = fake({"repeat": 2.0, "branches": 1.5, "multiplier": 1.2})
    model = onnx.load(SAMPLES / "vgg_style.onnx")
    first = convert_model(model, _opts(tmp_path))
    n = len(timer.calls)
    assert n > 0 and first.record.latency.cache_hits == 0
    second = convert_model(model, _opts(tmp_path))
    assert len(timer.calls) == n  # everything came from the cache
    assert second.record.latency.cache_hits == n and second.record.latency.layers_measured == 0
    assert [layer.layout for layer in first.record.layers] == [layer.layout for layer in second.record.layers]
    assert all("(cached:" in layer.latency_decision for layer in second.record.layers if layer.latency_decision)
    # other session options are other keys
    convert_model(model, _opts(tmp_path, threads=2))
    assert len(timer.calls) == 2 * n


def test_an_older_cache_entry_that_does_not_decide_is_timed_again(tmp_path, fake):
    from convtool.search.cache import TimingCache

    timer = fake({"repeat": 2.0, "branches": 1.5, "multiplier": 1.2})
    model = onnx.load(SAMPLES / "vgg_style.onnx")
    convert_model(model, _opts(tmp_path, layout="repeat"))
    n = len(timer.calls)
    files = sorted((tmp_path / "timings").glob("*.json"))
    assert len(files) == n > 0
    for f in files:  # as an older cache wrote them: no rounds, and runs that do not decide
        data = json.loads(f.read_text())
        f.write_text(json.dumps({"key": data["key"], "original_ms": [1.0, 1.2, 0.9], "replacement_ms": [1.1, 1.0, 1.0]}))
    again = convert_model(model, _opts(tmp_path, layout="repeat"))
    assert len(timer.calls) == 2 * n and again.record.latency.cache_hits == 0
    assert all(TimingCache(tmp_path).get(json.loads(f.read_text())["key"]).final for f in files)


def test_a_pair_the_cap_leaves_undecided_keeps_the_original_and_says_so(tmp_path, fake, monkeypatch):
    fake({"repeat": 2.0})
    monkeypatch.setattr(tuner_mod, "time_pair", lambda *a, **kw: (noisy(1.0, n=40, spread=0.3),
                                                                  noisy(1.0, n=40, spread=0.3, seed=4)))
    result = convert_model(onnx.load(SAMPLES / "vgg_style.onnx"), _opts(tmp_path, layout="repeat"))
    measured = [layer for layer in result.record.layers if layer.latency_decision]
    assert measured and not any(layer.converted for layer in measured)
    for layer in measured:
        assert layer.latency_decision.startswith("not resolved at 40 runs") and layer.latency_resolved is False
        assert layer.latency_ci_low <= layer.latency_speedup <= layer.latency_ci_high


def test_explicit_layout_is_the_only_candidate(tmp_path, fake):
    timer = fake({"repeat": 2.0, "branches": 3.0, "multiplier": 2.0, "pointwise_first": 2.0})
    result = convert_model(conv_model(cin=16, cout=16, size=12), _opts(tmp_path, layout="repeat"))
    assert timer.calls == ["repeat"]
    assert result.record.layers[0].layout == "repeat"


@pytest.mark.parametrize("e2e", [0.7, 1.0], ids=["slower", "not-resolved"])
def test_a_whole_model_not_faster_beyond_noise_is_reverted(tmp_path, fake, e2e):
    """Slower, or an end-to-end interval straddling 1: the original is kept (the safe choice)."""
    fake({"repeat": 2.0, "branches": 1.5, "multiplier": 1.2, "pointwise_first": 1.1}, e2e=e2e)
    model = onnx.load(SAMPLES / "resnet_style.onnx")
    result = convert_model(model, _opts(tmp_path, rank=1))
    assert not any(layer.converted for layer in result.record.layers)
    assert result.record.latency.reverted is True
    assert result.model.graph == model.graph
    assert any("not faster beyond noise; kept the original" in w for w in result.record.warnings)
    assert any("kept the original" in (layer.reason or "") for layer in result.record.layers)


def test_unknown_input_shape_keeps_layer(tmp_path, fake):
    fake({"multiplier": 2.0})
    model = conv_model(cin=16, cout=16, size=12)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    result = convert_model(model, _opts(tmp_path, rank=1, layout="multiplier"))
    (layer,) = result.record.layers
    assert not layer.converted and "input shape unknown" in layer.reason


def test_cli_latency_aware(tmp_path, fake):
    fake({"repeat": 2.0, "branches": 1.5, "multiplier": 1.2, "pointwise_first": 1.1})
    out = tmp_path / "m.onnx"
    js = tmp_path / "r.json"
    runner = CliRunner()
    res = runner.invoke(app, ["convert", str(SAMPLES / "vgg_style.onnx"), "-o", str(out), "--rank", "2",
                              "--layout", "auto", "--latency-aware", "--threads", "2", "--opt-level", "extended",
                              "--cache-dir", str(tmp_path / "cache"), "--json", str(js)],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "measured per layer" in res.output and "end to end" in res.output
    data = json.loads(js.read_text())
    assert data["latency"]["threads"] == 2 and data["latency"]["opt_level"] == "extended"
    assert any(layer["layout"] == "repeat" for layer in data["layers"])
    assert (tmp_path / "cache" / "timings").is_dir()


def test_cli_bad_opt_level(tmp_path):
    res = CliRunner().invoke(app, ["convert", str(SAMPLES / "vgg_style.onnx"), "-o", str(tmp_path / "m.onnx"),
                                   "--latency-aware", "--opt-level", "turbo"])
    assert res.exit_code == 2, res.output
    assert "--opt-level" in res.output
    assert not (tmp_path / "m.onnx").exists()


def test_layer_that_cannot_be_timed_is_kept(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise ModelLoadError("model: onnxruntime cannot run it: NOT_IMPLEMENTED")

    monkeypatch.setattr(tuner_mod, "time_pair", broken)
    result = convert_model(conv_model(cin=16, cout=16, size=12), _opts(tmp_path, rank=1, layout="multiplier"))
    (layer,) = result.record.layers
    assert not layer.converted and "could not be timed" in layer.reason


def test_max_drift_times_layers_only_for_the_final_conversion(tmp_path, fake):
    timer = fake({"repeat": 2.0, "branches": 2.0, "multiplier": 2.0, "pointwise_first": 2.0})
    model = onnx.load(SAMPLES / "vgg_style.onnx")
    options = ConvertOptions(max_drift=10.0, search_ranks=(1,), min_in_channels=1,
                             latency_aware=LatencyOptions(cache_dir=str(tmp_path), use_cache=False))
    result = convert_model(model, options)
    converted = [layer for layer in result.record.layers if layer.converted]
    assert converted and all(layer.latency_decision for layer in converted)
    # one timing per candidate layout of each measured layer, not one per search trial
    measured = [layer for layer in result.record.layers if layer.latency_decision]
    assert len(timer.calls) <= 2 * len(measured)
    # whole-model runs: a few verifications (plus one per layer dropped by the end-to-end check),
    # not one trial per candidate - candidates are measured on suffixes of the graph
    from convtool.search.budget import MAX_VERIFICATIONS

    assert 1 <= result.record.search.evaluations <= MAX_VERIFICATIONS + len(measured) + 1


def test_int8_timing_quantizes_both_one_layer_models_and_keys_the_cache(tmp_path, monkeypatch):
    """--quantize int8: candidate layers are timed in the deployed precision."""
    from convtool.options import QuantizeOptions
    from convtool.runtime import quantize as q

    seen = []
    real = q.quantize_for_timing

    def spy(model, options=None, **kw):
        out = real(model, options, **kw)
        seen.append(sorted({n.op_type for n in out.graph.node}))
        return out

    monkeypatch.setattr(q, "quantize_for_timing", spy)
    lat = LatencyOptions(cache_dir=str(tmp_path), min_runs=3, max_runs=3, confirm_runs=3)
    tuner = tuner_mod.LayerTuner(lat, 17, quantize=QuantizeOptions())
    float_tuner = tuner_mod.LayerTuner(lat, 17)
    from convtool.convert import plan as plan_model
    from convtool.graph.single import conv_shape

    planned = plan_model(conv_model(cin=16, cout=16, size=12), ConvertOptions())
    site, d = planned.candidates()[0]
    shape = conv_shape(site.node, d, (1, 16, 12, 12))
    cand = tuner.measure(shape, d)
    assert len(seen) == 2 and all("QuantizeLinear" in ops for ops in seen)
    assert "INT8" in cand.verdict.reason
    assert tuner.key(shape, d.rank, d.layout) != float_tuner.key(shape, d.rank, d.layout)


@pytest.mark.parametrize("e2e", [3.0, 0.7], ids=["faster", "slower"])
def test_latency_aware_int8_is_checked_against_the_int8_original(tmp_path, fake, e2e):
    """--latency-aware --quantize int8: the quantized conversion is kept only when faster than the
    INT8-quantized original; otherwise that original (quantized, no layer converted) is written."""
    import numpy as np

    from convtool.options import CalibrationOptions, QuantizeOptions

    fake({"repeat": 2.0, "branches": 2.0, "multiplier": 2.0, "pointwise_first": 2.0}, e2e=e2e)
    model = onnx.load(SAMPLES / "digits_cnn.onnx")
    with np.load(SAMPLES / "digits_calib.npz") as f:
        calib = {"input": f["input"][:40]}
    options = ConvertOptions(rank=RankPolicy.fixed(2), layout="multiplier", quantize=QuantizeOptions(),
                             calibration=CalibrationOptions(factors="pointwise"),
                             latency_aware=LatencyOptions(cache_dir=str(tmp_path)))
    result = convert_model(model, options, calibration_data=calib)
    record = result.record
    assert record.quantization is not None and record.quantization.drift is not None
    assert any(n.op_type == "QuantizeLinear" for n in result.model.graph.node)
    assert record.latency.end_to_end is not None
    if e2e > 1:
        assert record.totals.converted > 0 and not record.latency.reverted
        assert any(".dw" in n.name for n in result.model.graph.node)
    else:
        assert record.totals.converted == 0 and record.latency.reverted
        assert not any(".dw" in n.name for n in result.model.graph.node)
        assert any("INT8-quantized original, not faster beyond noise" in w for w in record.warnings)
