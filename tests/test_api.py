"""api.py: orchestration - file handling, data prepared before any work, the warnings it adds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import conv_model, smooth_inputs, three_conv_model

from convtool import api
from convtool.errors import CalibrationDataError, OptionError
from convtool.options import CalibrationOptions, ConvertOptions, RankPolicy


def test_convert_file_writes_beside_the_input_by_default(tmp_path):
    src = tmp_path / "net.onnx"
    onnx.save(three_conv_model(), src)
    result = api.convert_file(src, options=ConvertOptions(rank=RankPolicy.fixed(1)))
    assert api.default_output(src) == tmp_path / "net.dws.onnx"
    assert result.record.output == str(tmp_path / "net.dws.onnx") and result.record.input == str(src)
    written = onnx.load(str(tmp_path / "net.dws.onnx"))
    assert written.SerializeToString() == result.model.SerializeToString()


def test_convert_file_dry_run_writes_nothing(tmp_path):
    src = tmp_path / "net.onnx"
    onnx.save(three_conv_model(), src)
    result = api.convert_file(src, dry_run=True)
    assert result.record.totals.converted == 3 and result.record.output is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_convert_file_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "net.onnx"
    onnx.save(three_conv_model(), src)
    before = src.read_bytes()
    with pytest.raises(OptionError, match="refusing to overwrite the input model"):
        api.convert_file(src, tmp_path / "." / "net.onnx")
    assert src.read_bytes() == before


def test_bad_calibration_data_fails_before_any_work(monkeypatch):
    import convtool.api as module

    monkeypatch.setattr(module, "convert", lambda *a, **k: pytest.fail("converted before checking the data"))
    with pytest.raises(CalibrationDataError, match="no array for model input 'x'"):
        api.convert_model(three_conv_model(), ConvertOptions(calibration=CalibrationOptions()),
                          calibration_data={"images": np.zeros((2, 8, 9, 9), np.float32)})


def test_symbolic_dims_are_filled_from_the_data():
    model = three_conv_model()
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "S"
    options, data = api.prepare_data(model, ConvertOptions(calibration=CalibrationOptions()), smooth_inputs(n=4))
    assert data.count == 4 and options.input_shape_map == {"x": (1, 8, 9, 9)}
    given = ConvertOptions(input_shapes=(("x", (2, 8, 9, 9)),))
    assert api.prepare_data(model, given, smooth_inputs(n=4))[0].input_shape_map == {"x": (2, 8, 9, 9)}
    assert api.prepare_data(model, ConvertOptions(), None) == (ConvertOptions(), None)


@pytest.mark.parametrize("options,data,warned", [
    (ConvertOptions(rank=RankPolicy.fixed(1)), None, True),
    (ConvertOptions(rank=RankPolicy.full()), None, False),  # exact: nothing to lose
    (ConvertOptions(rank=RankPolicy.fixed(1), calibration=CalibrationOptions()), "data", False),
])
def test_data_free_warning(options, data, warned):
    record = api.convert_model(three_conv_model(), options,
                               calibration_data=smooth_inputs() if data else None).record
    assert any(w == api.DATA_FREE_WARNING for w in record.warnings) == warned


def test_nothing_converted_is_said():
    record = api.convert_model(conv_model(cin=4), ConvertOptions()).record
    assert record.totals.converted == 0
    assert "no Conv qualified for conversion; the model is unchanged" in record.warnings


def test_progress_names_the_long_stages():
    stages = set()
    api.convert_model(three_conv_model(), ConvertOptions(rank=RankPolicy.fixed(1), calibration=CalibrationOptions()),
                      calibration_data=smooth_inputs(), progress=lambda stage, done, total: stages.add(stage))
    assert "refitting layers" in stages
