"""Models with external data: read them, and write big outputs the same way."""

from __future__ import annotations

import onnx

from convtool import api
from convtool.graph import io
from convtool.options import ConvertOptions, RankPolicy
from golden import compare
from test_convert_golden import conv_model


def test_external_data_input_and_output(tmp_path, monkeypatch):
    model = conv_model(2, cin=16, cout=16)
    src = tmp_path / "ext.onnx"
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(model)  # save_model rewrites the tensors it externalises
    onnx.save_model(on_disk, str(src), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    # pretend the converted model is too big for one protobuf
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 100)
    out = tmp_path / "out" / "conv.dws.onnx"
    out.parent.mkdir()
    result = api.convert_file(src, out, ConvertOptions(rank=RankPolicy("full", 0), min_in_channels=1))
    assert result.record.totals.converted == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["conv.dws.onnx", "conv.dws.onnx.data"]
    written = onnx.load(str(out))
    assert compare(model, written)[0] < 1e-5


def test_missing_external_data_is_a_clear_error(tmp_path):
    model = conv_model(2, cin=16, cout=16)
    src = tmp_path / "ext.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    try:
        io.load_model(src)
    except io.ModelLoadError as exc:
        assert "external data" in str(exc) or "not a readable ONNX model" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected ModelLoadError")
