"""Tables readable at 80 and 120 columns, one number vocabulary, and what the table says
(issue 8, items 5, 8, 12 and 14).

Each run pins the console width (``COLUMNS``) and writes the JSON record; every number of the
record must appear intact (never split across lines, never cut) in the output, formatted
by :mod:`convtool.render.fmt`, and no line may be wider than the console.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest
from clirun import invoke as cli_invoke
from builders import conv_model

from convtool.render import fmt

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"


def invoke(*args, width: int = 120):
    return cli_invoke(*args, width=width)


def token_in(token: str, text: str) -> bool:
    """``token`` appears whole: not glued to more digits or decimals on either side."""
    return re.search(rf"(?<![0-9.]){re.escape(token)}(?![0-9.])", text) is not None


def convert_tokens(record: dict) -> list[str]:
    """Every number the convert table shows for the record, as fmt writes it."""
    tokens = []
    for layer in record["layers"]:
        tokens += [str(layer["in_channels"]), str(layer["out_channels"]), fmt.count(layer["params_before"]),
                   fmt.count(layer["macs_before"])]
        if layer["status"] == "converted":
            tokens += [str(layer["rank"]), fmt.count(layer["params_after"]), fmt.count(layer["macs_after"]),
                       fmt.ratio(layer["macs_before"], layer["macs_after"]), fmt.num(layer["weight_error"])]
            if layer.get("output_error_after") is not None:
                tokens += [fmt.num(layer["output_error_before"]), fmt.num(layer["output_error_after"])]
    t = record["totals"]
    tokens += [fmt.count(t["params_before"]), fmt.count(t["params_after"]), fmt.count(t["macs_before"]),
               fmt.count(t["macs_after"])]
    return tokens


def check_table(res, width: int, tokens: list[str]) -> None:
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, "\n".join(too_wide)
    missing = [tok for tok in tokens if not token_in(tok, res.stdout)]
    assert not missing, f"{missing} not found whole in:\n{res.stdout}"


@pytest.fixture
def vgg(tmp_path) -> Path:
    target = tmp_path / "vgg.onnx"
    shutil.copy(SAMPLES / "vgg_style.onnx", target)
    return target


@pytest.fixture
def long_names(tmp_path) -> Path:
    """vgg_style with YOLO-style node names that differ only in the middle."""
    model = onnx.load(SAMPLES / "vgg_style.onnx")
    for i, node in enumerate(n for n in model.graph.node if n.op_type == "Conv"):
        node.name = f"/model.22/cv3.2/cv3.2.{i}/conv/Conv"
    path = tmp_path / "long.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("width", [80, 120])
def test_convert_table_keeps_every_number_whole(vgg, tmp_path, width):
    rec = tmp_path / "r.json"
    res = invoke("convert", vgg, "--json", rec, width=width)
    check_table(res, width, convert_tokens(json.loads(rec.read_text())))
    assert "(--min-in-channels)" in res.stdout  # words of the reasons are never cut either


@pytest.mark.parametrize("width", [80, 120])
def test_convert_table_with_calibration_keeps_every_number_whole(tmp_path, width):
    rec = tmp_path / "r.json"
    res = invoke("convert", SAMPLES / "digits_cnn.onnx", "-o", tmp_path / "d.onnx", "--calibration",
                 SAMPLES / "digits_calib.npz", "--calibration-samples", "64", "--json", rec, width=width)
    record = json.loads(rec.read_text())
    assert any(layer.get("output_error_after") is not None for layer in record["layers"])
    check_table(res, width, convert_tokens(record))


@pytest.mark.parametrize("width", [80, 120])
def test_long_layer_names_are_shortened_from_the_middle(long_names, tmp_path, width):
    rec = tmp_path / "r.json"
    res = invoke("convert", long_names, "--json", rec, width=width)
    record = json.loads(rec.read_text())
    check_table(res, width, convert_tokens(record))
    shown = [line.split()[0] for line in res.stdout.splitlines() if line.startswith(("model.22", "/model.22"))]
    assert len(shown) == len(record["layers"]) == len(set(shown)), res.stdout  # one per layer, all different
    for i, name in enumerate(shown):
        assert name.lstrip("/").startswith("model.22"), name  # the head kept...
        assert name.endswith(("/conv", "/Conv")), name  # ... and the tail
    if width == 120:
        assert all("cv3.2." in name for name in shown), shown  # room for the distinguishing segment


@pytest.mark.parametrize("width", [80, 120])
def test_report_tables_keep_every_number_whole(vgg, tmp_path, width):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    conv = invoke("convert", vgg, "-o", out, "-q")
    assert conv.exit_code == 0, conv.output
    res = invoke("report", vgg, out, "--runs", "3", "--warmup", "1", "--json", rep, width=width)
    record = json.loads(rep.read_text())
    a, b = record["models"]
    tokens = [fmt.count(a["params"]), fmt.count(b["params"]), fmt.count(a["macs"]), fmt.count(b["macs"]),
              fmt.count(a["flops"]), fmt.count(b["flops"]), fmt.ms(a["latency_ms"]["median"]),
              fmt.ms(b["latency_ms"]["median"]), fmt.times(record["comparison"]["speedup"]),
              fmt.num(record["comparison"]["drift"]["drift"]), fmt.num(record["comparison"]["drift"]["rel_l2"])]
    for layer in record["layers"]:
        tokens += [fmt.count(layer["params_before"]), fmt.count(layer["params"]), fmt.count(layer["macs_before"]),
                   fmt.count(layer["macs"])]
    check_table(res, width, tokens)


def test_convert_and_report_share_one_vocabulary(vgg, tmp_path):
    out, rec = tmp_path / "o.onnx", tmp_path / "c.json"
    conv = invoke("convert", vgg, "-o", out, "--json", rec)
    rep = invoke("report", vgg, out, "--no-latency")
    assert conv.exit_code == 0, conv.output
    assert rep.exit_code == 0, rep.output
    totals = json.loads(rec.read_text())["totals"]
    macs = fmt.counts(totals["macs_before"], totals["macs_after"])  # e.g. 611M→79.2M
    assert macs in conv.stdout
    assert fmt.count(totals["macs_before"]) in rep.stdout and fmt.count(totals["macs_after"]) in rep.stdout
    change = fmt.signed_pct(totals["macs_after"] / totals["macs_before"] - 1)
    assert change in conv.stdout and change in rep.stdout  # the same change, the same way
    for text in (conv.stdout, rep.stdout):
        assert "->" not in text.replace("-->", "")  # one arrow: →
        assert not re.search(r"\d(\.\d+)?K\b", text)  # one suffix for thousands: k
    # every abbreviation is explained
    assert "w.err:" in conv.stdout and "MACs x:" in conv.stdout and "+BN:" in conv.stdout
    assert ".dw + .pw:" in rep.stdout


def test_rank_cap_is_shown(tmp_path):
    path = tmp_path / "c.onnx"
    onnx.save(conv_model(2, cin=16, cout=16, size=12), path)
    res = invoke("convert", path, "--rank", "16", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "rank capped at 9 (kernel taps)" in res.stdout


def test_one_input_channel_says_nothing_to_separate(tmp_path):
    path = tmp_path / "c.onnx"
    onnx.save(conv_model(2, cin=1, cout=16, size=12), path)
    res = invoke("convert", path, "--min-in-channels", "1", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "skip: 1 input channel: nothing to separate" in res.stdout


def test_an_impossible_drift_budget_says_so(tmp_path):
    path = tmp_path / "c.onnx"
    onnx.save(conv_model(2, cin=16, cout=16, size=12), path)
    res = invoke("convert", path, "--max-drift", "0", "--search-ranks", "1", "--cache-dir", tmp_path / "cache",
                 "--dry-run")
    assert res.exit_code == 0, res.output
    assert "warning: no layer fits the drift budget 0" in res.stderr and "Try a larger --max-drift" in res.stderr
    assert "no Conv qualified" not in res.output
