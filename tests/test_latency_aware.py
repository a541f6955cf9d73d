"""--latency-aware: the decision rule, candidate choice, the timing cache and the pipeline.

Timings are injected; no test asserts that anything is faster.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import golden
from convtool.api import convert_model
from convtool.cli import app
from convtool.cli.params import parse_rank
from convtool.options import ConvertOptions, LatencyOptions, RankPolicy
from convtool.errors import OptionError
from convtool.search import latency as tuner_mod
from convtool.search.cache import TimingCache, timing_key
from convtool.core.decide import paired_interval, verdict
from convtool.search.latency import Candidate, choose
from builders import conv_model

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "sample_models"


def noisy(median: float, n: int = 40, spread: float = 0.05, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median * (1 + spread * rng.standard_normal(n)))


# --- the rule -----------------------------------------------------------------------------------

def test_clearly_faster_converts():
    v = verdict(noisy(2.0), noisy(1.0, seed=1), margin=0.05, what="at rank 1")
    assert v.convert
    assert v.speedup == pytest.approx(2.0, rel=0.1)
    assert v.ci_low > 1.0
    assert v.reason.startswith("replacement ") and "x faster at rank 1 (measured" in v.reason


def test_clearly_slower_keeps_with_reason():
    v = verdict(noisy(1.0), noisy(1.31, seed=1), margin=0.05, what="at rank 2")
    assert not v.convert
    assert v.ci_high < 1.0
    assert v.reason.startswith("replacement 1.3") and "slower at rank 2 (measured" in v.reason


def test_within_noise_keeps():
    a = noisy(1.0, spread=0.3)
    b = noisy(0.98, spread=0.3, seed=5)
    v = verdict(a, b, margin=0.05)
    assert not v.convert
    assert "noise" in v.reason


def test_below_margin_keeps_even_when_consistent():
    a = [1.03] * 30
    b = [1.0] * 30
    v = verdict(a, b, margin=0.05)
    assert v.ci_low > 1.0 and not v.convert
    assert verdict(a, b, margin=0.01).convert


def test_bimodal_original_does_not_fool_the_rule():
    # the original is fast half the time, slow the other half (a 2-thread bimodal session):
    # the replacement beats it only in the slow half -> not above noise
    a = [1.0, 3.0] * 20
    b = [1.5] * 40
    v = verdict(a, b, margin=0.05)
    assert not v.convert


def test_cached_source_is_said():
    v = verdict(noisy(2.0), noisy(1.0, seed=1), margin=0.05, source="cached")
    assert "(cached:" in v.reason


def test_paired_interval_orders_and_covers():
    low, high = paired_interval([2.0] * 10, [1.0] * 10)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    low, high = paired_interval(noisy(2.0, n=100), noisy(1.0, n=100, seed=3))
    assert low < 2.0 < high
    with pytest.raises(ValueError):
        paired_interval([1.0], [1.0, 2.0])


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


def test_latency_options_validate():
    with pytest.raises(OptionError):
        LatencyOptions(threads=0)
    with pytest.raises(OptionError):
        LatencyOptions(opt_level="fast")
    with pytest.raises(OptionError):
        LatencyOptions(margin=-0.1)


# --- the cache ----------------------------------------------------------------------------------

def _key(**over):
    base = dict(x_shape=[1, 64, 56, 56], dtype="float32", kernel=[3, 3], in_channels=64, out_channels=64, group=1,
                strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], auto_pad="NOTSET", bias=True, rank=2,
                layout="repeat", threads=2, opt_level="all", allow_spinning=False, onnxruntime="1.32.0",
                cpu="Some CPU")
    base.update(over)
    return timing_key(**base)


def test_cache_miss_then_hit(tmp_path):
    cache = TimingCache(tmp_path)
    key = _key()
    assert cache.get(key) is None and cache.misses == 1
    cache.put(key, [1.0, 2.0], [0.5, 0.6])
    hit = TimingCache(tmp_path).get(key)
    assert hit is not None and hit.original_ms == (1.0, 2.0) and hit.replacement_ms == (0.5, 0.6)
    stored = json.loads(cache.path(key).read_text())
    assert stored["key"] == key


@pytest.mark.parametrize("field,value", [
    ("x_shape", [1, 64, 28, 28]), ("rank", 1), ("layout", "multiplier"), ("threads", 1), ("opt_level", "basic"),
    ("onnxruntime", "1.18.0"), ("cpu", "Other CPU"), ("group", 2), ("strides", [2, 2]), ("dtype", "float16"),
    ("bias", False), ("allow_spinning", True),
])
def test_cache_key_separates_everything_that_matters(tmp_path, field, value):
    cache = TimingCache(tmp_path)
    cache.put(_key(), [1.0], [0.5])
    other = _key(**{field: value})
    assert other[field] != _key()[field]
    assert cache.path(other) != cache.path(_key())
    assert cache.get(other) is None


def test_cache_key_contents():
    key = _key()
    for field in ("x_shape", "kernel", "in_channels", "out_channels", "group", "strides", "pads", "dilations",
                  "auto_pad", "rank", "layout", "threads", "opt_level", "onnxruntime", "cpu", "dtype"):
        assert field in key
    json.dumps(key)  # plain JSON


def test_cache_disabled_and_corrupt(tmp_path):
    off = TimingCache(tmp_path, enabled=False)
    off.put(_key(), [1.0], [1.0])
    assert off.get(_key()) is None and not any(tmp_path.iterdir())
    cache = TimingCache(tmp_path)
    cache.put(_key(), [1.0], [1.0])
    cache.path(_key()).write_text("{not json")
    assert cache.get(_key()) is None


def test_unwritable_cache_is_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = TimingCache(blocker / "sub")
    cache.put(_key(), [1.0], [1.0])
    assert not cache.enabled


# --- the pipeline, with injected timings ---------------------------------------------------------

class FakeTimer:
    """Replaces tune.layer.time_pair: speedup per layout, and counts calls."""

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


def _opts(tmp_path, rank="2", layout="auto", **lat):
    return ConvertOptions(rank=parse_rank(rank, None), layout=layout, min_in_channels=1,
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
    golden.compare(model, result.model)  # valid and runs


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


def test_explicit_layout_is_the_only_candidate(tmp_path, fake):
    timer = fake({"repeat": 2.0, "branches": 3.0, "multiplier": 2.0, "pointwise_first": 2.0})
    result = convert_model(conv_model(cin=16, cout=16, size=12), _opts(tmp_path, layout="repeat"))
    assert timer.calls == ["repeat"]
    assert result.record.layers[0].layout == "repeat"


def test_slower_whole_model_is_reverted(tmp_path, fake):
    fake({"repeat": 2.0, "branches": 1.5, "multiplier": 1.2, "pointwise_first": 1.1}, e2e=0.7)
    model = onnx.load(SAMPLES / "resnet_style.onnx")
    result = convert_model(model, _opts(tmp_path, rank="1"))
    assert not any(layer.converted for layer in result.record.layers)
    assert result.record.latency.reverted is True
    assert result.model.graph == model.graph
    assert any("slower with the converted layers" in w for w in result.record.warnings)
    assert any("kept the original" in (layer.reason or "") for layer in result.record.layers)


def test_unknown_input_shape_keeps_layer(tmp_path, fake):
    fake({"multiplier": 2.0})
    model = conv_model(cin=16, cout=16, size=12)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    result = convert_model(model, _opts(tmp_path, rank="1", layout="multiplier"))
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
    from convtool.errors import ModelLoadError

    def broken(*a, **k):
        raise ModelLoadError("model: onnxruntime cannot run it: NOT_IMPLEMENTED")

    monkeypatch.setattr(tuner_mod, "time_pair", broken)
    result = convert_model(conv_model(cin=16, cout=16, size=12), _opts(tmp_path, rank="1", layout="multiplier"))
    (layer,) = result.record.layers
    assert not layer.converted and "could not be timed" in layer.reason


# --- the one-layer models that get timed --------------------------------------------------------

@pytest.mark.parametrize("layout", ("multiplier", "repeat", "branches", "pointwise_first"))
def test_timed_models_are_the_layer_and_its_replacement(layout):
    import onnx_graphsurgeon as gs

    from convtool.core.plan import plan_layer
    from convtool.graph.select import find_convs
    from convtool.graph.single import conv_shape, original_model, replacement_model
    from convtool.search.latency import tensor_shapes

    model = conv_model(cin=8, cout=6, group=2, stride=2, pads="SAME_UPPER", size=10, batch=1)
    opts = ConvertOptions(rank=parse_rank("full", None), layout=layout, min_in_channels=1)
    (site,) = find_convs(model, gs.import_onnx(model), opts.select_rules)
    decision = plan_layer(site.layer, opts.rank, opts.layout)
    x_shape = tensor_shapes(model, {})[site.node.inputs[0].name]
    assert x_shape == (1, 8, 10, 10)
    shape = conv_shape(site.node, decision, x_shape)
    orig = original_model(shape, decision.weight, decision.bias, 17)
    repl = replacement_model(shape, decision, 17)
    assert (golden.compare(model, orig)[0]) < 1e-6
    assert (golden.compare(orig, repl)[0]) < 1e-5
    assert shape.auto_pad == "SAME_UPPER" and shape.strides == (2, 2)


def test_latency_render_without_measurements():
    from convtool.render import latency as tune_render

    result = convert_model(conv_model(), ConvertOptions(min_in_channels=1))
    assert tune_render.latency_table(result.record) is None
    assert tune_render.latency_line(result.record) is None
    assert result.record.to_dict()["latency"] is None


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
    assert result.record.search.evaluations >= len(measured)
