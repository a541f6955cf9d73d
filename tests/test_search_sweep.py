"""convtool sweep: one search, one selection per budget, every point measured on evaluation data.

Every timing is injected: the one-layer pairs (``time_pair``), the end-to-end checks
(``confirm``) and the final interleaved loop (``time_rounds``).  Decisions are checked, never
a speed-up.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from builders import noisy, smooth_inputs, three_conv_model
from typer.testing import CliRunner

from convtool.analysis.drift import compare_outputs
from convtool.api import convert_model, sweep_file, sweep_model
from convtool.core.decide import verdict
from convtool.errors import OptionError
from convtool.options import CalibrationOptions, ConvertOptions, LatencyOptions, SweepOptions
from convtool.runtime import timing as timing_mod
from convtool.runtime.inputs import Dataset
from convtool.runtime.run import run_outputs
from convtool.runtime.timing import latency_stats
from convtool.search import latency as latency_mod
from convtool.search.sweep import pareto, quality_axis


class Fake:
    """Every layer form ``speedup`` x faster; the whole model per the queue; the i-th point timed
    against the original gets a median of ``1 / (1 + 0.25 i)`` ms (later budgets, faster)."""

    @classmethod
    def install(cls, monkeypatch) -> "Fake":
        """Every layer, end-to-end and pair timing of the sweep faked by a new instance."""
        f = cls()
        monkeypatch.setattr(latency_mod, "time_pair", f.time_pair)
        monkeypatch.setattr(latency_mod, "confirm", f.confirm)
        monkeypatch.setattr(timing_mod, "time_rounds", f.time_rounds)
        return f

    def __init__(self):
        self.speedup = 2.0
        self.e2e = 1.5
        self.pairs = 0
        self.loops: list[int] = []

    def time_pair(self, original, replacement, shape, session, **kw):
        self.pairs += 1
        return noisy(1.0, n=30), noisy(1.0 / self.speedup, n=30, seed=self.pairs)

    def confirm(self, original, converted, lat, input_shapes=None, progress=None):
        return verdict(noisy(2.0, n=40), noisy(2.0 / self.e2e, n=40, seed=3), margin=0.0, what="end to end")

    def time_rounds(self, makers, feeds, *, looks, per_round, warmup, stop=None, max_seconds=None, progress=None):
        sessions = [make() for make in makers]
        self.loops.append(len(sessions))
        runs = looks[0]
        # the original, then (one call per point, later budgets later) each point faster than the last
        medians = [1.0] + [1.0 / (1 + 0.25 * len(self.loops))] * (len(sessions) - 1)
        stats = [latency_stats(noisy(m, n=runs, spread=0.01, seed=i)) for i, m in enumerate(medians)]
        rounds = tuple(i // per_round for i in range(runs))
        return timing_mod.Rounds(stats, rounds, len(looks), "decided")


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    return Fake.install(monkeypatch)


def _options(tmp_path, **kw) -> ConvertOptions:
    return ConvertOptions(calibration=CalibrationOptions(), search_ranks=(1, 2),
                          timing=LatencyOptions(cache_dir=str(tmp_path / "cache")), **kw)


def _eval(n=12):
    return smooth_inputs(n=n, seed=7)


@pytest.mark.parametrize("objective", ["latency", "macs"])
def test_each_point_is_what_convert_chooses_and_is_measured_on_eval_data(tmp_path, fake, objective):
    model, calib, ev = three_conv_model(), smooth_inputs(n=16), _eval()
    options = _options(tmp_path, objective=objective)
    budgets = (0.0, 0.3, 10.0)
    result = sweep_model(model, options, SweepOptions(budgets=budgets, runs=5), calib, ev)
    record = result.record
    assert [p.budget for p in record.points] == list(budgets) and len(result.models) == 3
    reference = run_outputs(model, Dataset(ev))
    for point, m in zip(record.points, result.models):
        alone = convert_model(model, ConvertOptions(**{**options.__dict__, "max_drift": point.budget}),
                              calibration_data=calib)
        assert point.ranks == {n: r for n, r in alone.record.search.ranks.items() if r}
        assert point.search_drift == pytest.approx(alone.record.search.drift) and point.search_drift <= point.budget
        d = compare_outputs(reference, run_outputs(m, Dataset(ev)))
        assert point.drift == pytest.approx(d.drift) and point.rel_l2 == pytest.approx(d.rel_l2)
        assert point.accuracy is None and point.converted == len(point.ranks)
        onnx.checker.check_model(m, full_check=True)
    assert record.points[0].converted == 0 and record.points[0].speedup == 1.0  # the original itself
    assert record.points[-1].converted == 3
    assert record.evaluation == "<arrays>" and record.eval_samples == 12
    assert record.objective == objective and record.x_axis == "drift"
    # each distinct point against the original, as `convtool report` times a pair
    assert fake.loops == [2] * len({tuple(sorted(p.ranks.items())) for p in record.points if p.converted})


def test_sensitivities_are_measured_once_for_all_budgets(tmp_path, fake, monkeypatch):
    from convtool.search import budget as budget_mod

    calls = []
    original = budget_mod.BudgetSearch.analyse

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(budget_mod.BudgetSearch, "analyse", counting)
    result = sweep_model(three_conv_model(), _options(tmp_path), SweepOptions(budgets=(0.1, 0.3, 1.0, 10.0), runs=3),
                         smooth_inputs(n=16), _eval())
    assert calls == [1]
    n_candidates = len(result.record.sensitivity)
    assert result.record.evaluations <= n_candidates + 4 * 2 * 3  # sensitivities once + greedy per budget
    assert fake.pairs > 0


def test_labels_give_accuracy_and_the_x_axis(tmp_path, fake):
    from builders import make_model
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32), "w")
    fc = numpy_helper.from_array((rng.standard_normal((5, 16)) * 0.5).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 9, 9])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], initializer=[w, fc])
    model = make_model(graph)
    ev = _eval(20)
    ev["labels"] = run_outputs(model, Dataset({"x": ev["x"]}))["logits"].argmax(1)
    result = sweep_model(model, _options(tmp_path), SweepOptions(budgets=(0.5, 10.0), runs=3), smooth_inputs(n=16), ev)
    record = result.record
    assert record.x_axis == "accuracy" and record.original.accuracy == 1.0
    assert all(p.accuracy is not None and p.top1_agreement is not None for p in record.points)


def test_sweep_file_saves_models_and_the_record_names_them(tmp_path, fake):
    model_path = tmp_path / "m.onnx"
    onnx.save(three_conv_model(), model_path)
    np.savez(tmp_path / "calib.npz", **smooth_inputs(n=16))
    np.savez(tmp_path / "eval.npz", **_eval())
    options = _options(tmp_path)
    options = ConvertOptions(**{**options.__dict__, "calibration": CalibrationOptions(source=str(tmp_path / "calib.npz"))})
    out = tmp_path / "sweep"
    result = sweep_file(model_path, out, tmp_path / "eval.npz", options,
                        SweepOptions(budgets=(0.2, 10.0), runs=3, save_models=True))
    for p in result.record.points:
        assert p.model is not None and p.model.startswith(str(out)) and onnx.load(p.model).graph.node
    assert result.record.calibration.endswith("calib.npz") and result.record.evaluation.endswith("eval.npz")
    json.dumps(result.record.to_dict())


def test_sweep_needs_evaluation_data(tmp_path):
    with pytest.raises(OptionError, match="evaluation data"):
        sweep_model(three_conv_model(), _options(tmp_path), SweepOptions(budgets=(0.1,)), smooth_inputs(n=8), None)


def test_sweep_options_validate():
    with pytest.raises(OptionError, match="--budgets"):
        SweepOptions(budgets=())
    with pytest.raises(OptionError, match="--budgets must be >= 0"):
        SweepOptions(budgets=(0.1, -1.0))
    assert SweepOptions(budgets=(0.1, 0.01, 0.1)).sorted_budgets == (0.01, 0.1)


# --- the Pareto front (pure) ----------------------------------------------------------------------

def test_pareto_front_on_speed_and_quality():
    pts = [dict(speedup=1.2, accuracy=0.99), dict(speedup=1.5, accuracy=0.99), dict(speedup=1.4, accuracy=0.97),
           dict(speedup=2.0, accuracy=0.90), dict(speedup=None, accuracy=1.0)]
    assert pareto(pts, "accuracy") == [False, True, False, True, False]
    # drift: lower is better
    pts = [dict(speedup=1.1, drift=0.01), dict(speedup=1.3, drift=0.02), dict(speedup=1.2, drift=0.03)]
    assert pareto(pts, "drift") == [True, True, False]


def test_the_original_dominates_points_that_are_not_faster():
    original = dict(speedup=1.0, accuracy=1.0)
    pts = [dict(speedup=0.98, accuracy=0.99), dict(speedup=1.0, accuracy=1.0), dict(speedup=1.3, accuracy=0.99)]
    assert pareto(pts, "accuracy", original) == [False, True, True]  # a tie with the original is not dominated


def test_quality_axis():
    assert quality_axis(True, True) == "accuracy"
    assert quality_axis(False, True) == "top1_agreement"
    assert quality_axis(False, False) == "drift"


# --- the command line -------------------------------------------------------------------------------

def _files(tmp_path):
    model_path = tmp_path / "m.onnx"
    onnx.save(three_conv_model(), model_path)
    np.savez(tmp_path / "calib.npz", **smooth_inputs(n=16))
    np.savez(tmp_path / "eval.npz", **_eval())
    return model_path


def test_cli_sweep_writes_table_json_markdown_and_picture(tmp_path, fake):
    import xml.etree.ElementTree as ET

    from convtool.cli import app

    model_path = _files(tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["sweep", str(model_path), "--calibration", str(tmp_path / "calib.npz"),
                                   "--inputs", str(tmp_path / "eval.npz"), "--budgets", "0.2,10", "--out", str(out),
                                   "--search-ranks", "1,2", "--cache-dir", str(tmp_path / "cache"), "--runs", "3",
                                   "--threads", "2"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "convtool sweep m.onnx" in res.output and "speedup (95% CI)" in res.output
    data = json.loads((out / "sweep.json").read_text())
    assert [p["budget"] for p in data["points"]] == [0.2, 10.0]
    assert data["environment"]["threads"] == 2 and data["objective"] == "latency"
    assert {"drift", "top1_agreement", "mac_reduction", "speedup", "pareto", "ranks", "layouts"} <= set(data["points"][0])
    assert "```mermaid" in (out / "sweep.md").read_text()
    ET.fromstring((out / "sweep.svg").read_text())


def test_cli_sweep_save_models(tmp_path, fake):
    from convtool.cli import app

    model_path = _files(tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["sweep", str(model_path), "--calibration", str(tmp_path / "calib.npz"),
                                   "--inputs", str(tmp_path / "eval.npz"), "--budgets", "10", "--out", str(out),
                                   "--objective", "macs", "--save-models", "--no-cache", "--runs", "3"])
    assert res.exit_code == 0, res.output
    assert (out / "m.drift-10.onnx").is_file()
    assert json.loads((out / "sweep.json").read_text())["points"][0]["model"].endswith("m.drift-10.onnx")


@pytest.mark.parametrize("command", ["sweep", "convert", "report"])
def test_unavailable_provider_is_a_one_line_error(tmp_path, command):
    from convtool.cli import app

    model_path = _files(tmp_path)
    args = {"sweep": ["--calibration", str(tmp_path / "calib.npz"), "--inputs", str(tmp_path / "eval.npz"),
                      "--out", str(tmp_path / "out")],
            "convert": ["--max-drift", "0.1", "-o", str(tmp_path / "c.onnx")],
            "report": []}[command]
    res = CliRunner().invoke(app, [command, str(model_path), *args, "--provider", "NoSuchExecutionProvider"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: execution provider NoSuchExecutionProvider is not available")
    assert not (tmp_path / "c.onnx").exists()


def test_cli_convert_objective_is_recorded(tmp_path, fake):
    from convtool.cli import app

    model_path = _files(tmp_path)
    js = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["convert", str(model_path), "-o", str(tmp_path / "c.onnx"), "--max-drift", "10",
                                   "--calibration", str(tmp_path / "calib.npz"), "--objective", "params",
                                   "--search-ranks", "1", "--no-cache", "--json", str(js)])
    assert res.exit_code == 0, res.output
    search = json.loads(js.read_text())["calibration"]["search"]
    assert search["objective"] == "params" and search["end_to_end"]["speedup"] == pytest.approx(1.5, rel=0.05)
    bad = CliRunner().invoke(app, ["convert", str(model_path), "-o", str(tmp_path / "d.onnx"), "--objective", "macs"])
    assert bad.exit_code == 2 and "--objective has no effect without --max-drift" in bad.output
