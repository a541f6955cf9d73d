"""``convtool report`` end to end: JSON and Markdown shape, gates and exit codes, bad input.

The original/converted pairs are built here by hand (a Conv, and the same Conv written as a
depthwise ``<name>.dw`` + pointwise ``<name>.pw`` pair from a per-input-channel SVD), so these
tests do not depend on the converter. Every CLI run uses 3-5 timed runs; no test asserts a
speed-up.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from clirun import invoke
from onnx import TensorProto, helper, numpy_helper

from convtool.errors import OptionError
from convtool.render import fmt
from convtool.report import ReportOptions, build_report

CIN, COUT, K = 3, 4, 3


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((COUT, CIN, K, K)).astype(np.float32), rng.standard_normal(COUT).astype(np.float32)


def _save(nodes, inits, path: Path) -> Path:
    graph = helper.make_graph(
        nodes
        + [
            helper.make_node("GlobalAveragePool", ["C"], ["P"], name="gap"),
            helper.make_node("Flatten", ["P"], ["logits"], name="flatten"),
        ],
        "net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", CIN, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", COUT])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def original_model(path: Path) -> Path:
    w, b = _weights()
    node = helper.make_node("Conv", ["input", "W", "B"], ["C"], name="conv", pads=[1, 1, 1, 1])
    return _save([node], [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")], path)


def converted_model(path: Path, rank: int) -> Path:
    """The conv as depthwise (Cin*rank channels) + pointwise, from a rank-``rank`` SVD."""
    w, b = _weights()
    dw = np.zeros((CIN * rank, 1, K, K), np.float32)
    pw = np.zeros((COUT, CIN * rank, 1, 1), np.float32)
    for i in range(CIN):
        u, s, vt = np.linalg.svd(w[:, i].reshape(COUT, K * K).astype(np.float64), full_matrices=False)
        for r in range(rank):
            dw[i * rank + r, 0] = vt[r].reshape(K, K)
            pw[:, i * rank + r, 0, 0] = u[:, r] * s[r]
    nodes = [
        helper.make_node("Conv", ["input", "Wdw"], ["D"], name="conv.dw", pads=[1, 1, 1, 1], group=CIN),
        helper.make_node("Conv", ["D", "Wpw", "B"], ["C"], name="conv.pw"),
    ]
    inits = [numpy_helper.from_array(dw, "Wdw"), numpy_helper.from_array(pw, "Wpw"), numpy_helper.from_array(b, "B")]
    return _save(nodes, inits, path)


@pytest.fixture()
def pair(tmp_path) -> tuple[Path, Path, Path]:
    """(original, exact full-rank conversion, rank-1 conversion)."""
    return (
        original_model(tmp_path / "model.onnx"),
        converted_model(tmp_path / "model.full.onnx", rank=min(COUT, K * K)),
        converted_model(tmp_path / "model.r1.onnx", rank=1),
    )


def run(*args: str):
    return invoke("report", *args)


def _assert_exit(result, code: int) -> None:
    assert result.exit_code == code, result.output


# ----------------------------------------------------------------------------- JSON / Markdown


def test_single_model_static_json(pair, tmp_path):
    original, _, _ = pair
    out = tmp_path / "r.json"
    result = run(str(original), "--no-latency", "--json", str(out))
    _assert_exit(result, 0)
    assert "MACs" in result.output and "onnxruntime" in result.output
    record = json.loads(out.read_text())
    assert set(record) >= {"models", "comparison", "layers", "gates", "passed", "environment"}
    [m] = record["models"]
    macs = 8 * 8 * COUT * CIN * K * K  # symbolic batch -> 1; GAP/Flatten count 0
    assert m == {
        "path": str(original),
        "params": COUT * CIN * K * K + COUT,
        "macs": macs,
        "flops": 2 * macs,
        "macs_complete": True,
        "macs_shapes": "inferred",
        "latency_ms": None,
        "accuracy": None,
    }
    assert record["comparison"] is None and record["gates"] == [] and record["passed"] is True
    assert [layer["name"] for layer in record["layers"]] == ["conv", "gap", "flatten"]
    assert set(record["layers"][0]) >= {"name", "op_type", "params", "macs", "latency_ms"}
    assert set(record["environment"]) >= {"onnxruntime", "threads", "cpu"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pair_json_markdown_latency_and_aa(pair, tmp_path):
    original, _, rank1 = pair
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    result = run(
        str(original), str(rank1), "--runs", "3", "--warmup", "1", "--aa-check",
        "--json", str(js), "--markdown", str(md),
    )  # fmt: skip
    _assert_exit(result, 0)
    record = json.loads(js.read_text())
    a, b = record["models"]
    comp = record["comparison"]
    # --runs is the first look: a pair is timed on until the interval excludes 1, or 8 x 3 runs
    assert set(a["latency_ms"]) == {"median", "p10", "p90", "runs"} and 3 <= a["latency_ms"]["runs"] <= 24
    assert comp["runs"] == a["latency_ms"]["runs"] == b["latency_ms"]["runs"]
    assert comp["param_reduction"] == pytest.approx(1 - (b["params"]) / a["params"])
    assert b["params"] == CIN * K * K + COUT * CIN + COUT
    assert comp["mac_reduction"] == pytest.approx(1 - (CIN * 9 + COUT * CIN) / (COUT * CIN * 9))
    assert comp["ci_low"] <= comp["speedup"] <= comp["ci_high"]  # one statistic: the point is inside its interval
    assert comp["resolved"] == (comp["ci_low"] > 1 or comp["ci_high"] < 1)
    assert set(comp["drift"]) >= {"rel_l2", "cosine", "max_abs", "top1_agreement"}
    assert 0 < comp["drift"]["rel_l2"] < 1 and comp["drift"]["top1_agreement"] is not None
    assert record["aa_check"]["ratio"] > 0
    [layer] = record["layers"]
    assert layer["name"] == "conv" and layer["replaced_by"] == ["conv.dw", "conv.pw"]
    assert layer["params_before"] == a["params"] and layer["params"] == b["params"]
    assert layer["latency_ms"] is None and layer["slower"] is None  # no --profile
    text = md.read_text()
    assert text.startswith("## convtool report")
    assert "| metric | original | converted | change |" in text
    assert "| params |" in text and "### Converted layers (1)" in text and "| conv | .dw + .pw |" in text
    assert "speedup" in text and "onnxruntime" in text


def test_exact_pair_has_no_drift(pair, tmp_path):
    original, full, _ = pair
    report = build_report([original, full], ReportOptions(latency=False, max_drift=1e-5, min_top1_agreement=1.0))
    assert report.comparison is not None and report.comparison.drift is not None
    assert report.comparison.drift.rel_l2 < 1e-5
    assert report.comparison.drift.cosine == pytest.approx(1.0)
    assert report.passed and [g.name for g in report.gates] == ["max_drift", "min_top1_agreement"]


def test_profile_path_fills_layer_times(pair, tmp_path):
    original, _, rank1 = pair
    js = tmp_path / "r.json"
    result = run(str(original), str(rank1), "--runs", "3", "--warmup", "1", "--profile", "--json", str(js))
    _assert_exit(result, 0)
    record = json.loads(js.read_text())
    [layer] = record["layers"]
    assert layer["latency_ms"] > 0 and layer["latency_ms_before"] > 0
    assert isinstance(layer["slower"], bool)
    assert record["profile_opt_level"] == "extended"
    assert "time (ms)" in result.output and ".dw + .pw" in result.output


def test_single_model_profile_times_nodes(pair):
    original, _, _ = pair
    report = build_report([original], ReportOptions(runs=3, warmup=1, profile=True))
    times = {layer.name: layer.latency_ms for layer in report.layers}
    assert times["conv"] is not None and times["conv"] > 0


# ----------------------------------------------------------------------------- gates


def test_gates_pass_and_fail_with_exit_codes(pair, tmp_path):
    original, _, rank1 = pair
    js = tmp_path / "r.json"
    ok = run(str(original), str(rank1), "--no-latency", "--min-param-reduction", "0.5", "--min-mac-reduction", "0.5")
    _assert_exit(ok, 0)
    assert "PASS" in ok.output
    bad = run(
        str(original), str(rank1), "--no-latency", "--min-param-reduction", "0.9",
        "--max-drift", "1e-6", "--min-mac-reduction", "0.1", "--json", str(js),
    )  # fmt: skip
    _assert_exit(bad, 1)
    assert "gate failed: --min-param-reduction" in bad.output
    assert "gate failed: --max-drift" in bad.output
    assert "--min-mac-reduction" not in bad.output.split("gate failed")[-1]
    # issue 14 item 12: fractions as percentages, like the before/after table beside the gates
    assert re.search(r"gate failed: --min-param-reduction \d+\.\d% \(needs >= 90\.0%\)", bad.output), bad.output
    gate_rows = [line for line in bad.output.splitlines() if line.startswith("--min-")]
    assert gate_rows and all("0.900" not in line and "0.100" not in line for line in gate_rows), bad.output
    assert any(">= 10.0%" in line for line in gate_rows), bad.output
    record = json.loads(js.read_text())  # the record is written even when a gate fails
    assert record["passed"] is False
    gates = {g["name"]: g for g in record["gates"]}
    assert set(gates) == {"min_param_reduction", "max_drift", "min_mac_reduction"}
    assert gates["min_mac_reduction"]["passed"] is True and gates["max_drift"]["passed"] is False
    assert set(gates["max_drift"]) == {"name", "threshold", "value", "passed"}


def test_speedup_gate_is_evaluated_not_asserted(pair):
    original, _, rank1 = pair
    result = run(str(original), str(rank1), "--runs", "3", "--warmup", "1", "--min-speedup", "0.0001", "-q")
    _assert_exit(result, 0)
    assert result.stdout == ""  # --quiet: nothing on stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-latency", "--min-speedup", "1.2"], "--min-speedup needs latency"),
        (["--no-latency", "--max-accuracy-drop", "0.01"], "--max-accuracy-drop needs --inputs"),
        (["--no-latency", "--min-speedup", "0"], "--min-speedup must be > 0"),
        (["--no-latency", "--min-top1-agreement", "1.5"], "must be in [0, 1]"),
        (["--runs", "0"], "--runs must be >= 1"),
        (["--no-latency", "--aa-check"], "--aa-check is a latency control"),
        (["--opt-level", "max"], "--opt-level must be one of"),
        (["--no-latency", "--input-shape", "nope=1,2"], "unknown input 'nope'"),
        (["--no-latency", "--input-shape", "input=1,3,9,9"], "fixes dim 2 to 8"),
    ],
)
def test_bad_options_exit_2(pair, args, message):
    original, _, rank1 = pair
    result = run(str(original), str(rank1), *args)
    _assert_exit(result, 2)
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_gate_needs_two_models(pair):
    original, _, _ = pair
    result = run(str(original), "--no-latency", "--max-drift", "0.1")
    _assert_exit(result, 2)
    assert "compares two models" in result.output


def test_top1_gate_without_class_scores_is_an_error(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="c")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    result = run(str(path), str(path), "--no-latency", "--min-top1-agreement", "0.9")
    _assert_exit(result, 2)
    assert "no output looks like class scores" in result.output


# ----------------------------------------------------------------------------- inputs


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_labels_outside_the_classes_and_a_float64_cast_are_noted(pair, tmp_path):
    """Issue 14 item 11: labels no class can match gave "accuracy 0.0%" silently; float64 data
    was cast without a word while the README said wrong dtypes are an error."""
    original, full, _ = pair
    x = np.random.default_rng(1).standard_normal((10, CIN, 8, 8))  # float64
    data = _npz(tmp_path / "d.npz", input=x, labels=np.arange(10) + COUT)  # every id past the last class
    js = tmp_path / "r.json"
    result = run(str(original), str(full), "--inputs", str(data), "--no-latency", "--json", str(js))
    _assert_exit(result, 0)
    notes = json.loads(js.read_text())["notes"]
    assert any(f"10 of 10 labels are outside the model's {COUT} classes" in n for n in notes), notes
    assert any("array 'input' is float64, cast to the model's float32" in n for n in notes), notes
    assert "labels are outside" in " ".join(result.output.split())


def test_npz_inputs_with_labels_give_accuracy(pair, tmp_path):
    original, full, rank1 = pair
    x = np.random.default_rng(1).standard_normal((10, CIN, 8, 8)).astype(np.float64)  # cast to float32
    assert build_report([original], ReportOptions(latency=False)).models[0].accuracy is None
    import onnxruntime as ort

    logits = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.astype(np.float32)}
    )[0]
    labels = np.argmax(logits, axis=1)
    labels[:3] = (labels[:3] + 1) % COUT  # 7 of 10 right
    data = _npz(tmp_path / "d.npz", input=x, labels=labels)
    js = tmp_path / "r.json"
    result = run(str(original), str(full), "--inputs", str(data), "--no-latency", "--max-accuracy-drop", "0.01", "--json", str(js))
    _assert_exit(result, 0)
    record = json.loads(js.read_text())
    assert [m["accuracy"] for m in record["models"]] == [pytest.approx(0.7), pytest.approx(0.7)]
    assert record["gates"][0]["value"] == pytest.approx(0.0)
    assert "top-1 accuracy" in result.output
    assert str(data) in record["inputs"]
    report = build_report([rank1], ReportOptions(latency=False, inputs=str(data)))
    assert 0.0 <= report.models[0].accuracy <= 1.0


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"image": np.zeros((2, CIN, 8, 8), np.float32)}, "no array for model input 'input'"),
        ({"input": np.zeros((2, CIN, 8, 8), np.float32), "extra": np.zeros(2)}, "'extra' is not a model input"),
        ({"input": np.zeros((2, CIN, 9, 8), np.float32)}, "has 9 on axis 2, input 'input' needs 8"),
        ({"input": np.zeros((CIN, 8, 8), np.float32)}, "is 4-D"),
        ({"input": np.zeros((2, CIN, 8, 8), np.int64)}, "dtype int64"),
        ({"input": np.zeros((2, CIN, 8, 8), np.float32), "labels": np.zeros(3, np.int64)}, "different numbers of samples"),
        ({"input": np.zeros((2, CIN, 8, 8), np.float32), "labels": np.zeros(2, np.float32)}, "'labels' must be a 1-D integer"),
        ({"input": np.zeros((0, CIN, 8, 8), np.float32)}, "is empty"),
    ],
)
def test_bad_npz_exits_2(pair, tmp_path, arrays, message):
    original, _, _ = pair
    data = _npz(tmp_path / "d.npz", **arrays)
    result = run(str(original), "--no-latency", "--inputs", str(data))
    _assert_exit(result, 2)
    assert message in result.output and "Traceback" not in result.output


def test_unreadable_npz(pair, tmp_path):
    original, _, _ = pair
    junk = tmp_path / "d.npz"
    junk.write_bytes(b"not a zip")
    for path, message in ((junk, "not a readable .npz"), (tmp_path / "missing.npz", "no such file")):
        result = run(str(original), "--no-latency", "--inputs", str(path))
        _assert_exit(result, 2)
        assert message in result.output


# ----------------------------------------------------------------------------- bad model files


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "empty"), (b"\x08\x07garbage\xff\xfe" * 10, "ONNX")],
    ids=["missing", "empty", "garbage"],
)
def test_bad_model_files_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    result = run(str(path), "--no-latency")
    _assert_exit(result, 2)
    assert result.output.count("error:") == 1 and message in result.output
    assert "Traceback" not in result.output


def test_truncated_model_exits_2(pair, tmp_path):
    original, _, _ = pair
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(original.read_bytes()[: len(original.read_bytes()) // 2])
    result = run(str(original), str(cut), "--no-latency")
    _assert_exit(result, 2)
    assert "error:" in result.output


def test_missing_output_folder_fails_before_measuring(pair, tmp_path):
    original, _, _ = pair
    result = run(str(original), "--json", str(tmp_path / "nope" / "r.json"))
    _assert_exit(result, 2)
    assert "does not exist" in result.output


def test_symbolic_dims_need_input_shape(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="c")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    result = run(str(path), "--no-latency")
    _assert_exit(result, 2)
    assert "--input-shape x=DIMS" in result.output
    _assert_exit(run(str(path), "--no-latency", "--input-shape", "x=1,1,6,6"), 0)


def test_report_options_are_validated_in_the_library():
    with pytest.raises(OptionError, match="--warmup"):
        ReportOptions(warmup=-1)
    with pytest.raises(OptionError, match="fraction"):
        ReportOptions(min_mac_reduction=2.0)
    with pytest.raises(OptionError, match="one model or two"):
        build_report([])


# ----------------------------------------------------------------------------- verdict and drift wording (issue 8, item 7)


def test_verdict_line_on_real_samples(pair, tmp_path):
    original, _, rank1 = pair
    x = np.random.default_rng(3).standard_normal((12, CIN, 8, 8)).astype(np.float32)
    data = _npz(tmp_path / "eval.npz", input=x)
    js = tmp_path / "r.json"
    result = run(str(original), str(rank1), "--inputs", str(data), "--runs", "3", "--warmup", "1",
                 "--json", str(js))
    _assert_exit(result, 0)
    drift = json.loads(js.read_text())["comparison"]["drift"]
    verdict = " ".join(result.stdout.split("Before / after")[0].split())  # the line, however the console wraps it
    speed = r"(\d+\.\d\dx (faster|\(slower\)) \(95% CI [\d.]+x-[\d.]+x\)|speed not resolved at \d+ runs: [^,]+)"
    assert re.match(rf"^{speed}, MACs -\d+\.\d%, params -\d+\.\d%, ", verdict), verdict
    assert f"drift {fmt.num(drift['drift'])} on 12 samples of {data}" in verdict
    assert f"top-1 agreement {fmt.pct(drift['top1_agreement'])}" in verdict
    text = " ".join(result.stdout.split())
    assert f"drift: per-channel rel. L2 (--max-drift) {fmt.num(drift['drift'])}" in text
    assert f"rel. L2, whole tensor {fmt.num(drift['rel_l2'])}" in text
    assert "random" not in verdict and json.loads(js.read_text())["inputs_random"] is False


def test_random_inputs_are_named_and_top1_agreement_is_not_shown(pair, tmp_path):
    original, _, rank1 = pair
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    result = run(str(original), str(rank1), "--no-latency", "--input-shape", "input=1,3,8,8", "--json", str(js),
                 "--markdown", str(md))
    _assert_exit(result, 0)
    verdict = result.stdout.splitlines()[0]
    assert "seeded random inputs (says little about accuracy)" in verdict, verdict
    for text in (result.stdout, md.read_text()):
        assert "top-1 agreement" not in text.replace("top-1 agreement on random inputs says nothing", "")
        assert "drift was measured on seeded random inputs" in " ".join(text.split())
    record = json.loads(js.read_text())
    assert record["comparison"]["drift"]["top1_agreement"] is not None  # the record keeps it
    assert record["inputs_random"] is True


def test_markdown_opens_with_the_verdict(pair, tmp_path):
    original, _, rank1 = pair
    md = tmp_path / "r.md"
    _assert_exit(run(str(original), str(rank1), "--no-latency", "--min-mac-reduction", "0.1", "--markdown", str(md)), 0)
    lines = md.read_text().splitlines()
    bold = next(line for line in lines if line.startswith("**"))
    assert "MACs -" in bold and "gate passed" in bold
    assert "_before→after: original→converted; .dw + .pw:" in md.read_text()
