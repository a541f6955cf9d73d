"""Every option either applies or is refused (issue 8, item 3), and option objects validate
themselves (item 13).

"Given" is where the value came from (the command line), not whether it differs from the
default: ``--metric rel_l2`` without ``--max-drift`` is refused although rel_l2 is the default.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from clirun import invoke
from test_report import converted_model, original_model

from convtool.errors import OptionError
from convtool.options import RankPolicy

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "sample_models" / "vgg_style.onnx"


@pytest.fixture
def model(tmp_path) -> Path:
    target = tmp_path / "m.onnx"
    shutil.copy(VGG, target)
    return target


@pytest.mark.parametrize("args,message", [
    (["--report-markdown", "r.md"], "--report-markdown has no effect without --report"),
    (["--report-json", "r.json"], "--report-json has no effect without --report"),
    (["--report-runs", "5"], "--report-runs has no effect without --report"),
    (["--metric", "top1"], "--metric has no effect without --max-drift"),
    (["--metric", "rel_l2"], "--metric has no effect without --max-drift"),  # the default, given
    (["--search-ranks", "1,2"], "--search-ranks has no effect without --max-drift"),
    (["--threads", "2"], "--threads has no effect without --latency-aware, --max-drift or --report"),
    (["--opt-level", "basic"], "--opt-level has no effect without"),
    (["--cache-dir", "c"], "--cache-dir has no effect without --latency-aware or --max-drift"),
    (["--no-cache"], "--no-cache has no effect without"),
    (["--latency-aware", "--no-cache", "--cache-dir", "c"], "--cache-dir has no effect with --no-cache"),
    (["--holdout", "0.3"], "--holdout has no effect without --calibration"),
    (["--calibration-samples", "10"], "--calibration-samples has no effect without --calibration"),
    (["--image-size", "8,8"], "--image-size has no effect without --calibration naming a folder of images"),
    (["--image-std", "0.5"], "--image-std has no effect without"),
    (["--channel-order", "BGR"], "--channel-order has no effect without"),
    (["--dry-run", "-o", "x.onnx"], "--output has no effect with --dry-run"),
    (["--dry-run", "--report"], "--report needs a written model; drop --dry-run"),
    (["--max-drift", "0.1", "--rank", "2"], "--max-drift chooses the ranks itself"),
    (["--max-drift", "0.1", "--energy", "0.9"], "--max-drift chooses the ranks itself"),
    (["--rank", "1", "--energy", "0.9"], "--rank and --energy are mutually exclusive"),
    # values are validated whatever else is given
    (["--opt-level", "foo"], "--opt-level must be one of"),
    (["--latency-aware", "--opt-level", "foo"], "--opt-level must be one of"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_convert_refuses_options_that_cannot_apply(model, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = invoke("convert", model, *args)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and message in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_image_options_need_an_image_folder_not_an_npz(model, tmp_path):
    npz = tmp_path / "cal.npz"
    np.savez(npz, input=np.zeros((2, 3, 64, 64), np.float32))
    res = invoke("convert", model, "--calibration", npz, "--image-mean", "0.5")
    assert res.exit_code == 2, res.output
    assert "--image-mean has no effect without --calibration naming a folder of images" in res.output


def test_image_options_apply_to_an_image_folder(model, tmp_path):
    """Not refused with a folder of images: the run gets as far as reading the images."""
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.png").write_bytes(b"not really a png")
    res = invoke("convert", model, "--calibration", images, "--image-size", "64,64", "--dry-run")
    assert res.exit_code == 2, res.output
    assert "has no effect" not in res.output and "not a readable image" in res.output, res.output


def test_options_that_apply_are_accepted(model, tmp_path):
    res = invoke("convert", model, "--dry-run", "--layout", "multiplier", "--min-in-channels", "8",
                 "--input-shape", "input=1,3,64,64", "--rank", "1", "-q")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args,message", [
    (["--no-latency", "--runs", "5"], "--runs has no effect without timing"),
    (["--no-latency", "--warmup", "2"], "--warmup has no effect without timing"),
    (["--seed", "3", "--inputs", "{d}"], "--seed has no effect with --inputs"),
])
def test_report_refuses_options_that_cannot_apply(tmp_path, args, message):
    a, b = original_model(tmp_path / "a.onnx"), converted_model(tmp_path / "b.onnx", rank=1)
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((2, 3, 8, 8), np.float32))
    res = invoke("report", a, b, *[x.format(d=data) for x in args])
    assert res.exit_code == 2, res.output
    assert message in res.output, res.output


def test_report_session_options_need_something_to_run(tmp_path):
    a = original_model(tmp_path / "a.onnx")
    res = invoke("report", a, "--no-latency", "--threads", "2")
    assert res.exit_code == 2, res.output
    assert "--threads has no effect without anything to run" in res.output
    res = invoke("report", a, "--no-latency", "--profile", "--threads", "2", "-q")
    assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- item 13


def test_rank_policy_validates_at_construction():
    with pytest.raises(OptionError, match=r"RankPolicy kind must be one of fixed, full, energy, got 2; "
                                          r"for rank 2 write RankPolicy\('fixed', 2\)"):
        RankPolicy(2)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="RankPolicy kind must be one of fixed, full, energy, got 'fixd'"):
        RankPolicy("fixd", 2)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="rank must be a positive integer, got 0"):
        RankPolicy("fixed", 0)
    with pytest.raises(OptionError, match=r"energy must be in \(0, 1\], got 1.5"):
        RankPolicy("energy", 1.5)
    assert RankPolicy("fixed", 2) == RankPolicy.fixed(2)
