"""graph/io.py: loading with one-line errors, checking, atomic writes, external data in and out."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from builders import conv_model
from golden import compare
from onnx import helper

from convtool import api
from convtool.errors import ModelLoadError, OptionError
from convtool.graph import io
from convtool.options import ConvertOptions, RankPolicy


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def load_refused(path, message: str) -> None:
    with pytest.raises(ModelLoadError) as exc:
        io.load_model(path)
    assert message in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


# --- loading -------------------------------------------------------------------------------------

def test_load_round_trip(tmp_path):
    model = conv_model()
    onnx.save(model, tmp_path / "m.onnx")
    assert io.load_model(tmp_path / "m.onnx").SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory, not an ONNX file"),
    (lambda p: p.write_bytes(b""), "file is empty"),
    (lambda p: p.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xfe"), "not a readable ONNX model"),
    (lambda p: p.write_bytes(conv_model().SerializeToString()[:40]), "not a readable ONNX model"),
    (lambda p: p.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString()), "not an ONNX model (no graph found)"),
    (lambda p: p.write_bytes(helper.make_model(conv_model().graph, ir_version=0).SerializeToString()),
     "not an ONNX model (no IR version)"),
])
def test_bad_files_are_one_line_errors(tmp_path, make, message):
    path = tmp_path / "m.onnx"
    make(path)
    load_refused(path, message)


def _without_its_data(tmp_path):
    src = tmp_path / "ext.onnx"
    onnx.save_model(conv_model(cin=16, cout=16), str(src), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    return src


def test_missing_external_data_is_a_one_line_error(tmp_path):
    load_refused(_without_its_data(tmp_path), str(tmp_path / "ext.onnx") + ": ")


def test_missing_external_data_names_the_missing_file(tmp_path):
    load_refused(_without_its_data(tmp_path), "ext.onnx.data")


# --- checking ------------------------------------------------------------------------------------

def test_check_model_accepts_a_valid_graph_and_names_the_first_problem():
    io.check_model(conv_model(), "m.onnx")
    broken = conv_model()
    broken.graph.node[0].input[1] = "does_not_exist"
    with pytest.raises(ModelLoadError) as exc:
        io.check_model(broken, "the converted model")
    assert str(exc.value).startswith("the converted model is not a valid ONNX graph: ")
    assert "\n" not in str(exc.value)


def test_check_model_does_not_touch_the_model():
    model = conv_model(cin=64, cout=64)  # weights big enough to be replaced in the data-free copy
    before = model.SerializeToString()
    io.check_model(model)
    assert model.SerializeToString() == before


# --- writing -------------------------------------------------------------------------------------

def test_save_writes_atomically_and_leaves_nothing_behind(tmp_path):
    model = conv_model()
    target = io.save_model(model, tmp_path / "out.onnx")
    assert target == tmp_path / "out.onnx"
    assert onnx.load(str(target)).SerializeToString() == model.SerializeToString()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_failed_save_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", broken)
    with pytest.raises(OptionError, match=r"cannot write .*out.onnx: No space left on device"):
        io.save_model(conv_model(), target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_save_into_a_missing_folder_is_an_option_error(tmp_path):
    with pytest.raises(OptionError, match="output folder .* does not exist"):
        io.save_model(conv_model(), tmp_path / "nope" / "out.onnx")
    with pytest.raises(OptionError, match="output folder .* does not exist"):
        io.write_text_atomic("{}", tmp_path / "nope" / "r.json")


def test_write_text_atomic(tmp_path):
    path = io.write_text_atomic('{"a": 1}\n', tmp_path / "r.json")
    assert path.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    mode = path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # like any new file, not a private temporary file's 0600


def test_estimated_bytes_counts_the_weights_from_their_dims():
    model = conv_model(cin=8, cout=12)  # W: 12 x 8 x 3 x 3 float32, B: 12 float32
    assert io.estimated_bytes(model) == (12 * 8 * 9 + 12) * 4
    half = conv_model(cin=8, cout=12, dtype=np.float16)
    assert io.estimated_bytes(half) == (12 * 8 * 9 + 12) * 2


def test_external_data_chosen_by_size(tmp_path, monkeypatch):
    model = conv_model(cin=16, cout=16)
    io.save_model(model, tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 100)
    io.save_model(copy(model), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    assert compare(model, onnx.load(str(tmp_path / "big.onnx")))[0] == 0.0
    io.save_model(copy(model), tmp_path / "forced.onnx", external_data=False)
    assert not (tmp_path / "forced.onnx.data").exists()


def test_saving_with_external_data_leaves_the_callers_model_intact(tmp_path):
    model = conv_model(cin=16, cout=16)
    before = model.SerializeToString()
    io.save_model(model, tmp_path / "big.onnx", external_data=True)
    assert model.SerializeToString() == before


def test_external_data_input_and_output(tmp_path, monkeypatch):
    model = conv_model(cin=16, cout=16)
    src = tmp_path / "ext.onnx"
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(model)  # save_model rewrites the tensors it externalises
    onnx.save_model(on_disk, str(src), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    # pretend the converted model is too big for one protobuf
    monkeypatch.setattr(io, "EXTERNAL_DATA_THRESHOLD", 100)
    out = tmp_path / "out" / "conv.dws.onnx"
    out.parent.mkdir()
    result = api.convert_file(src, out, ConvertOptions(rank=RankPolicy.full(), min_in_channels=1))
    assert result.record.totals.converted == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["conv.dws.onnx", "conv.dws.onnx.data"]
    assert compare(model, onnx.load(str(out)))[0] < 1e-5
